"""What a run remembers on top of the ledger, and what it does with it.

- ``unchanged.py``: ``skip_unchanged``: a row Userpilot already holds is not sent again
- ``history.py``: the sync history a run writes, and deletions remembered between runs
- ``mirror.py``: mirror deletes: what a finished full-table version lacks is deleted
- ``imported.py``: Import API files: recorded before upload, settled after, keys kept once
- ``runs.py``: each run's row: its start, how it ended, its counts, its orchestrator's run id
"""

from __future__ import annotations
