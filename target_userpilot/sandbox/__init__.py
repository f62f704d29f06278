"""A Userpilot-compatible API emulator on loopback, for tests, demos and offline trials.

`Sandbox` serves the bulk endpoints, job status, the deletion, track and import endpoints and the
admin endpoints under `/_sandbox/`; `Faults` lists the failures it can inject. The console script
`userpilot-sandbox` runs it.

- ``server.py``: the ``Sandbox`` facade (start, stop, what tests read and set) and its
  ``/_sandbox/`` endpoints over HTTP (no auth, no faults)
- ``api.py``: the ``/v1`` API of one emulated account: routing, faults, the key, endpoints
- ``jobs.py``: the bulk and import job lifecycle, one job at a time, advanced by the clock
- ``payloads.py``: request bodies as Userpilot reads them (JSON, multipart NDJSON files)
- ``store.py``: what the account holds: profiles, scheduled deletions, events
- ``limits.py``: Userpilot's rate limits as the sandbox enforces them
- ``faults.py``: the failures it can inject, and the seeded dice that decide each request's fate
- ``stats.py``: what it counts, so tests and benchmarks can judge a client
- ``httpd.py``: HTTP(S) serving on loopback
- ``wire.py``: what passes between the HTTP layer and the API: a request, a reply
- ``clock.py``: the sandbox's clock
- ``__main__.py``: ``userpilot-sandbox``: the emulator from a shell
"""

from __future__ import annotations

from target_userpilot.sandbox.server import Faults, Sandbox

__all__ = ["Faults", "Sandbox"]
