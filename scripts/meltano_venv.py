"""Make sure `.venv/meltano` holds the Meltano pinned in scripts/meltano-requirements.txt.

    python scripts/meltano_venv.py    # prints the path of the `meltano` command

Meltano lives in a virtualenv of its own, apart from the project's `.venv`, because its many
dependencies must not decide the target's. The virtualenv is reused while the pins are unchanged
(a copy of the requirements file inside it says what was installed), so only the first
`make test` on a machine pays for the download; `make test` and tests/e2e/test_meltano.py both call
this, so either may be first.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "scripts" / "meltano-requirements.txt"
VENV = ROOT / ".venv" / "meltano"


def _pins(requirements: str) -> list[str]:
    """The requirement lines themselves: a comment edited does not make a reinstall."""
    lines = (line.split("#", 1)[0].strip() for line in requirements.splitlines())
    return [line for line in lines if line]


def ensure(venv: Path = VENV, requirements: Path = REQUIREMENTS, command: str = "meltano") -> Path:
    """Build (or reuse) the virtualenv and return its ``command`` executable.

    scripts/tap_postgres_venv.py uses the same for a published tap.
    """
    stamp = venv / "installed-requirements.txt"
    executable = venv / "bin" / command
    wanted = requirements.read_text(encoding="utf-8")
    if (
        executable.exists()
        and stamp.exists()
        and _pins(stamp.read_text(encoding="utf-8")) == _pins(wanted)
    ):
        return executable
    started = time.monotonic()
    print(f"Installing {command} into {venv} ...", file=sys.stderr, flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]
    subprocess.run([*pip, "-r", str(requirements)], check=True)
    stamp.write_text(wanted, encoding="utf-8")  # last: an interrupted install is redone
    print(f"Installed in {time.monotonic() - started:.0f} s.", file=sys.stderr)
    return executable


if __name__ == "__main__":
    print(ensure())
