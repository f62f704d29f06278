"""Lanes: each kind of outbound work with its own pace, driven by the run in one way.

The job lane (``jobs.py``) runs Userpilot's one bulk job at a time; the deletion lane
(``deletions.py``) sends ``hard_delete``'s deletion requests; the events lane (``events.py``)
sends events. Each is a :class:`~target_userpilot.lanes.base.Lane`, which owns their threads,
failure capture, stop and join; every pace is in ``pace.py``. Every lane makes work durable and
then releases that work's hold in :mod:`target_userpilot.checkpoints`, which alone writes STATE.
Transport retries stay in the client.
"""

from __future__ import annotations

from target_userpilot.lanes.base import Lane

__all__ = ["Lane"]
