"""A plan (``plan_path``): what a real run would do with this input, counted, nothing sent.

- ``tally.py``: the plan's counts per stream, from each record's one decision and the ledger's
  answers; its sample ids, the JSON file's shape and the summary's lines (pure, no I/O)
- ``versions.py``: full-table versions as the plan sees them: the ledger's, read-only, with this
  input's rows on top, so mirror deletes and their guard judge as in a real run
- ``planner.py``: the plan's run: the ledger opened read-only, the lookups a run's lanes would
  make, the plan file and its summary on stderr
"""

from __future__ import annotations
