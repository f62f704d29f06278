"""An earlier commit's target, installed once, for `make bench` to measure side by side.

``ensure(rev)`` exports commit ``rev`` of this repository (``git archive``, no worktree to clean
up) into ``.bench/<rev>/src`` and installs it into its own virtualenv ``.bench/<rev>/venv``, then
returns that virtualenv's python: ``bench/run.py --baseline REV`` runs ``-m target_userpilot``
with it, beside this checkout's target and the do-nothing SDK target. The folder is reused on
later runs; ``make clean`` removes it.

Run alone, it prints the python's path: ``python bench/baseline.py f404c1e``.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The commit issue 24 measures against: the throughput of the week before it.
DEFAULT = "f404c1e"


class BaselineUnavailable(RuntimeError):
    """The commit is not in this clone (a shallow clone), or its install failed."""


def ensure(rev: str = DEFAULT) -> Path:
    """The python of ``rev``'s own virtualenv, installing it on first use."""
    home = REPO / ".bench" / rev
    python = home / "venv" / "bin" / "python"
    done = home / "installed"
    if done.exists() and python.exists():
        return python
    commit = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if commit is None:
        raise BaselineUnavailable(
            f"commit {rev} is not in this clone (a shallow clone?): fetch it, or run "
            "`make bench BASELINE=` to measure without it"
        )
    source = home / "src"
    source.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    print(f"installing {rev} into {home / 'venv'} (once)...", file=sys.stderr, flush=True)
    venv.create(home / "venv", with_pip=True)
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    if installed.returncode != 0:
        raise BaselineUnavailable(f"installing {rev} failed:\n{installed.stderr[-2000:]}")
    done.write_text(commit + "\n")
    return python


def _git(*args: str) -> str | None:
    result = subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else None


if __name__ == "__main__":
    print(ensure(sys.argv[1] if len(sys.argv) > 1 else DEFAULT))
