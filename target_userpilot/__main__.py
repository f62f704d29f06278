"""``python -m target_userpilot``: the same as the ``target-userpilot`` command."""

from __future__ import annotations

from target_userpilot.target import TargetUserpilot

TargetUserpilot.cli()
