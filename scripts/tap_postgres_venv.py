"""Make sure `.venv/tap-postgres` holds the tap pinned in scripts/tap-postgres-requirements.txt.

    python scripts/tap_postgres_venv.py    # prints the path of the `tap-postgres` command

MeltanoLabs' tap-postgres is a published Singer tap that tests/e2e/test_postgres.py pipes into
the target, end to end. Like Meltano (scripts/meltano_venv.py, whose helper this uses) it lives
in a virtualenv of its own, reused while its pins are unchanged; `make test` (`make tap-postgres`)
and the test both call this, so either may be first.
"""

from __future__ import annotations

from pathlib import Path

import meltano_venv  # scripts/ is on sys.path: run as `python scripts/tap_postgres_venv.py`

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "scripts" / "tap-postgres-requirements.txt"
VENV = ROOT / ".venv" / "tap-postgres"


def ensure(venv: Path = VENV, requirements: Path = REQUIREMENTS) -> Path:
    """Build (or reuse) the virtualenv and return its ``tap-postgres`` executable."""
    return meltano_venv.ensure(venv, requirements, command="tap-postgres")


if __name__ == "__main__":
    print(ensure())
