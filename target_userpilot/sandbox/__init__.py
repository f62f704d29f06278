"""A Userpilot-compatible API emulator on loopback, for tests, demos and offline trials.

`Sandbox` serves the bulk endpoints, job status, the deletion and track endpoints and the admin
endpoints under `/_sandbox/`; `Faults` lists the failures it can inject. The console script
`userpilot-sandbox` runs it. `server.py` says which module holds what.
"""

from __future__ import annotations

from target_userpilot.sandbox.server import Faults, Sandbox

__all__ = ["Faults", "Sandbox"]
