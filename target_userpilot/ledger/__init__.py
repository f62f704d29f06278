"""The ledger's storage (``state_db``): a SQLite file or PostgreSQL, behind one interface.

- ``base.py``: the interface (:class:`Ledger`), ``open_ledger`` and the account scope
- ``schema.py``: the versioned schema: every table, as migrations applied on open
- ``sqlite.py``: the ledger in a SQLite file (the default)
- ``postgres.py``: the ledger in PostgreSQL through SQLAlchemy and psycopg
- ``tables.py``: the SQL of mirror-delete versions and object keys
- ``history.py``: the SQL of the sync history (jobs, entries per profile, deletions)
- ``imports.py``: the SQL of Import API files, from before their upload until settled
- ``cli.py``: ``userpilot-ledger``: the ledger read without writing SQL
"""

from __future__ import annotations
