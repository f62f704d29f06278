"""Opening a SQLite ledger while another run opens it: the switch to WAL is waited out."""

from __future__ import annotations

import sqlite3

import pytest

from target_userpilot.ledger import sqlite as ledger_sqlite


class _Switching:
    """A connection whose switch to WAL meets another's ``locked`` times, then succeeds."""

    def __init__(self, locked: int, error: str = "database is locked") -> None:
        self.locked = locked
        self.error = error
        self.tries = 0

    def execute(self, statement: str) -> None:
        assert statement == "PRAGMA journal_mode=WAL"
        self.tries += 1
        if self.tries <= self.locked:
            raise sqlite3.OperationalError(self.error)


def test_a_switch_to_wal_another_run_makes_at_once_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ledger_sqlite, "WAL_RETRY_SECONDS", 0.0)
    db = _Switching(locked=3)

    ledger_sqlite.use_wal(db)  # type: ignore[arg-type]  # a stand-in for the connection

    assert db.tries == 4


def test_any_other_error_of_the_switch_goes_on_at_once() -> None:
    db = _Switching(locked=1, error="disk I/O error")

    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        ledger_sqlite.use_wal(db)  # type: ignore[arg-type]  # a stand-in for the connection
    assert db.tries == 1


def test_a_lock_past_the_busy_time_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_sqlite, "BUSY_SECONDS", 0.0)
    db = _Switching(locked=10)

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        ledger_sqlite.use_wal(db)  # type: ignore[arg-type]  # a stand-in for the connection
    assert db.tries == 1
