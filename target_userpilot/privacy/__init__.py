"""Personal data and secrets: where they may go, and where they never do.

- ``files.py``: files of personal data (rejects, dry-run output): owner-only, in 0700 folders
- ``redact.py``: a URL's password and secret query values out of every message
"""

from __future__ import annotations
