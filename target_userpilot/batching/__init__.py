"""Batching: rows spooled to disk as NDJSON files, and when each file goes up.

- ``batch.py``: one upload's worth of rows of one object: row and byte counts, in-batch merge
- ``buffer.py``: one open batch per object, and the rule for when a batch goes up
- ``halves.py``: HTTP 413: what was refused goes again in two halves (rows of a file, ids)
- ``pending.py``: users with an upsert not yet in a completed job (what their events wait for)
"""

from __future__ import annotations
