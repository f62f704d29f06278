"""``skip_unchanged``'s scenario shared by both ledgers: later rows win over rows in flight."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from target_userpilot.ledger.factory import open_ledger
from target_userpilot.ledger.scope import account_scope
from target_userpilot.sandbox import Sandbox

from support.messages import API_KEY, USER_SCHEMA, record, schema, state, user
from support.runner import RunTarget


def plans(ids: range, first: str, then: str | None, group: int) -> list[dict[str, Any]]:
    """Users of ``ids`` set to ``first`` and then to ``then``, ``group`` ids at a time."""
    messages = [schema("users", USER_SCHEMA, ["id"])]
    for start in range(ids.start, ids.stop, group):
        block = range(start, min(start + group, ids.stop))
        messages.extend(record("users", user(i, plan=first)) for i in block)
        if then is not None:
            messages.extend(record("users", user(i, plan=then)) for i in block)
    messages.append(state({"done": True}))
    return messages


def ledger_hashes(state_db: str, scope: str, ids: range) -> dict[str, bytes]:
    """What the ledger says about users ``ids`` of ``scope``."""
    ledger = open_ledger(state_db)
    try:
        return ledger.row_hashes(scope, "users", [str(i) for i in ids])
    finally:
        ledger.close()


def check_later_rows_win_over_rows_in_flight(
    run_target: RunTarget,
    sandbox: Sandbox,
    config: dict[str, Any],
    tmp_path: Path,
    batch_size: int,
    state_db: str,
) -> None:
    """The issue's scenario: free confirmed, then pro and free again in consecutive batches.

    One id per batch at size 1 (u1 pro, then u1 free in the next batch), else blocks of 50 ids.
    The sandbox completes jobs at once and the target is told so: the next batch is still
    filtered before the previous job's completion is noticed, as with Userpilot's slow jobs.
    """
    ids = range(30 if batch_size == 1 else 200)
    scope = account_scope(sandbox.url, API_KEY)
    group = min(batch_size, 50)
    config.update(
        skip_unchanged=True, state_db=state_db, batch_size_rows=batch_size, rows_per_minute=1e9
    )
    first = run_target(config, plans(ids, "free", None, group), tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    confirmed_free = ledger_hashes(state_db, scope, ids)
    assert len(confirmed_free) == len(ids)

    run = run_target(config, plans(ids, "pro", "free", group), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-2000:]
    profiles = sandbox.profiles("users")
    assert {profiles[str(i)]["metadata"]["plan"] for i in ids} == {"free"}
    assert ledger_hashes(state_db, scope, ids) == confirmed_free
    total = run.summary["total"]
    if batch_size >= 2 * len(ids):
        # Both rows of an id share one batch: merged into `free`, which Userpilot holds.
        assert total["rows_sent"] == 0 and total["unchanged"] == len(ids)
    else:
        assert total["rows_sent"] == 2 * len(ids) and total["unchanged"] == 0

    # A second run: the ledger is right, so free is unchanged and pro is a change.
    again = run_target(config, plans(ids, "free", None, group), tmp_path=tmp_path)
    assert again.returncode == 0 and again.summary["total"]["rows_sent"] == 0
    to_pro = run_target(config, plans(ids, "pro", None, group), tmp_path=tmp_path)
    assert to_pro.returncode == 0 and to_pro.summary["total"]["rows_sent"] == len(ids)
    profiles = sandbox.profiles("users")
    assert {profiles[str(i)]["metadata"]["plan"] for i in ids} == {"pro"}
