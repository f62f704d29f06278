"""The ledger read as ``userpilot-ledger`` reads it: its runs, and the command as a process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from target_userpilot.ledger.factory import open_ledger
from target_userpilot.ledger.store import RunEntry


def ledger_runs(state_db: str) -> list[RunEntry]:
    """The ledger's runs, newest first, read as userpilot-ledger reads them."""
    ledger = open_ledger(state_db, read_only=True)
    try:
        return ledger.runs(None, None, 50)
    finally:
        ledger.close()


def ledger_cli(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``userpilot-ledger argv`` run as a process of this interpreter, whatever its exit code."""
    return subprocess.run(
        [sys.executable, "-m", "target_userpilot.ledger.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )
