"""Records → Userpilot payloads: pure functions, no Singer SDK, no I/O.

What a record becomes (a profile row, a deletion, an event, an Import API record, a rejection or
nothing) is decided here, once, from the stream's rules and the record alone, so it can be tested
with plain dicts.

- ``decide.py``: a stream's rules, chosen once, and the one decision of what each record becomes
- ``routing.py``: which stream feeds which object, by which id, and the ``object_mapping`` checks
- ``rows.py``: record → profile row: the identifier, and values flattened into metadata
- ``values.py``: one value → a metadata primitive, and the one compact JSON encoder
- ``object_keys.py``: the flattened keys under each object property, and what a null clears
- ``marks.py``: the Singer deletion mark: only a date-time in ``_sdc_deleted_at`` deletes
- ``events.py``: record → track event: its body, and the key it is sent once by
- ``imports.py``: event → Import API record, with the time it happened
- ``validation.py``: a stream's JSON schema compiled to fast checks (``validate_records``)
"""

from __future__ import annotations
