"""Records → Userpilot payloads: pure functions, no Singer SDK, no I/O.

What a record becomes (a profile row, a deletion, an event, an Import API record) is decided
here, from the stream's route and the record alone, so it can be tested with plain dicts.

- ``rows.py``: routing (which stream feeds which object, by which id) and record → row
- ``values.py``: one value → a metadata primitive, and the one compact JSON encoder
- ``object_keys.py``: the flattened keys under each object property, and what a null clears
- ``marks.py``: the Singer deletion mark: only a date-time in ``_sdc_deleted_at`` deletes
- ``imports.py``: event → Import API record, with the time it happened
- ``validation.py``: a stream's JSON schema compiled to fast checks (``validate_records``)
"""

from __future__ import annotations
