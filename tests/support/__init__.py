"""What the tests share, beside the fixtures of ``conftest.py``.

- ``messages.py``: Singer messages (schemas, records, STATE, users, deletions, events)
- ``events.py``: events for the track API and the Import API: configs, records, what landed
- ``runner.py``: the real target on a list of messages, in this process or as a process
- ``waiting.py``: polling a condition instead of sleeping
- ``simulated.py``: a run and a sandbox on one simulated clock, for timing in simulated seconds
- ``http_doubles.py``: loopback servers that answer from a script, TLS in front, a proxy
- ``ledger.py``: the ledger read as ``userpilot-ledger`` reads it: its runs, the command
- ``pg.py``: a throwaway PostgreSQL 15 cluster, and when its tests skip
- ``meltano.py``: the real Meltano CLI: its environment, its commands, a copy of the project
- ``readme.py``: the README's sections and ``stream_maps`` recipes
- ``secrets.py``: proof that a secret never appears in an output
- ``unchanged.py``: ``skip_unchanged``'s scenario shared by both ledgers
"""
