"""The unit layer stays pure: a unit test that reaches for the network or a process fails.
And the layers' test files can be collected together."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import NotUnit


def test_a_unit_test_is_marked_unit(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("unit") is not None
    assert request.node.get_closest_marker("integration") is None


def test_a_unit_test_that_connects_a_socket_fails() -> None:
    with pytest.raises(NotUnit, match="belongs in tests/integration"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)


def test_a_unit_test_that_starts_a_process_fails() -> None:
    with pytest.raises(NotUnit, match="belongs in tests/e2e"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)


def test_no_two_test_files_share_a_name_across_the_layers() -> None:
    """The folders are not packages: pytest imports each test file by its base name, and a
    second file of the same name fails the whole collection (``import file mismatch``)."""
    tests = Path(__file__).resolve().parents[1]
    names = Counter(path.name for path in tests.rglob("test_*.py"))
    assert [name for name, n in names.items() if n > 1] == []
