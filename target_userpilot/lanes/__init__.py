"""Lanes: each kind of outbound work on threads of its own, driven by the run in one way.

Each is a :class:`~target_userpilot.lanes.base.Lane`, which owns its threads, failure capture,
stop and join. Every lane makes work durable and then releases that work's hold in
:mod:`target_userpilot.checkpoints`, which alone writes STATE. Retries are the retry policy's
(``target_userpilot/retry.py``); every wait is on the lane's clock (``target_userpilot/clock.py``),
the one its pace runs on, and a stop ends it, but for the polls of the job in flight, which a
stop lets go on (its STATE may still go out) and a second signal ends.

- ``base.py``: what every lane shares: threads, the failure that stopped it, the two-phase stop
- ``jobs.py``: the one bulk job at a time: upload, follow the job, make its batch durable
- ``deletions.py``: ``hard_delete``'s deletion requests, paced, halved on 413
- ``events.py``: one track request per event: after its users, paced, in order, once in effect
- ``progress.py``: what the events lane tells the operator: ETA and progress lines
- ``spool.py``: the events waiting (and set aside) on disk rather than in memory
- ``pace.py``: every lane's pace, each on its clock: job durations learned, one deletion every 2 s,
  events' rate
"""

from __future__ import annotations

from target_userpilot.lanes.base import Lane

__all__ = ["Lane"]
