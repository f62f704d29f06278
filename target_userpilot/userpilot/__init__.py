"""Userpilot's HTTP API, as the target speaks it: no Singer inside.

- ``client.py``: the endpoints: uploads, job status and lists, deletions, events, imports
- ``transport.py``: HTTP to one host: sessions, auth, proxies and CAs, answers sorted into errors
- ``hosts.py``: where the API key may go, and which keys can be sent at all
- ``dryrun.py``: the dry run's stand-in for the client: request bodies to files, no network
"""

from __future__ import annotations
