"""The unit layer stays pure: a unit test that reaches for the network or a process fails."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from conftest import NotUnit


def test_a_unit_test_is_marked_unit(request):
    assert request.node.get_closest_marker("unit") is not None
    assert request.node.get_closest_marker("integration") is None


def test_a_unit_test_that_connects_a_socket_fails():
    with pytest.raises(NotUnit, match="belongs in tests/integration"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)


def test_a_unit_test_that_starts_a_process_fails():
    with pytest.raises(NotUnit, match="belongs in tests/e2e"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)
