"""HTTP 413, for every lane: what Userpilot refused as too large goes again in two halves.

Userpilot documents no size limit for deletion requests or Import API files, and a batch within
``batch_size_rows`` and ``max_file_bytes`` may still be refused: a 413 is the only word on it.
So whatever it refused goes again as two halves, one after the other, each of which may be
halved again. The job lane halves a refused batch file (``SealedBatch.split``); the deletion
lane halves a refused request's ids and keeps that size for the rest of the run. What a single
item refused alone becomes is each lane's to say: a rejected row, or a deletion that cannot be
asked for.
"""

from __future__ import annotations


def first_half(count: int) -> int | None:
    """How many of ``count`` items refused together go in the first half (the rest follow);
    None when a single item was refused: it cannot be split."""
    if count <= 1:
        return None
    return count // 2
