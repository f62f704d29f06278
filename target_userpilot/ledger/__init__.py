"""The ledger's storage (``state_db``): one interface, a SQLite file or PostgreSQL behind it.

``factory.py`` picks a backend; each backend imports only the interface (``store.py``) and the
schema. Every SQL statement of the package lives here: the shared ones in ``store.py``, the
tables in ``schema.py``, and in each backend only what is its own (opening, locking, upgrading).

- ``store.py``: the interface (:class:`Ledger`): all a run may ask of ``state_db``, its SQL once
- ``schema.py``: the versioned schema: every table, as migrations applied on open
- ``sqlite.py``: the ledger in a SQLite file (the default)
- ``postgres.py``: the ledger in PostgreSQL through SQLAlchemy and psycopg
- ``factory.py``: ``open_ledger``: the backend a ``state_db`` names, read-write or read-only
- ``scope.py``: the account an entry belongs to: API host and a one-way fingerprint of the key
- ``cli.py``: ``userpilot-ledger``: the ledger read without writing SQL
"""

from __future__ import annotations
