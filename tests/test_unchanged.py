"""skip_unchanged: rows Userpilot already confirmed are not sent again."""

from __future__ import annotations

from conftest import USER_SCHEMA, record, run_target, schema, state, user


def _users(n: int, changed: set[int] = frozenset()) -> list[dict]:
    messages = [schema("users", USER_SCHEMA, ["id"])]
    for i in range(n):
        messages.append(record("users", user(i, plan="changed" if i in changed else "pro")))
    messages.append(state({"done": n}))
    return messages


def test_identical_rerun_sends_nothing(sandbox, config, tmp_path):
    config.update(skip_unchanged=True, state_db=str(tmp_path / "state.db"))
    first = run_target(config, _users(4000), tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    uploads = sandbox.stats()["rows_received"]
    assert uploads == 4000

    second = run_target(config, _users(4000), tmp_path=tmp_path)

    assert second.returncode == 0, second.stderr[-2000:]
    assert sandbox.stats()["rows_received"] == uploads
    assert second.summary["total"]["unchanged"] == 4000
    assert second.summary["total"]["rows_sent"] == 0
    assert second.states == [{"done": 4000}]


def test_only_changed_profiles_are_sent(sandbox, config, tmp_path):
    config.update(skip_unchanged=True, state_db=str(tmp_path / "state.db"))
    assert run_target(config, _users(4000), tmp_path=tmp_path).returncode == 0
    before = sandbox.stats()["rows_received"]
    changed = set(range(0, 4000, 40))

    run = run_target(config, _users(4000, changed), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-2000:]
    assert sandbox.stats()["rows_received"] - before == len(changed) == 100
    assert run.summary["total"]["rows_sent"] == 100
    profiles = sandbox.profiles("users")
    assert all(profiles[str(i)]["metadata"]["plan"] == "changed" for i in changed)


def test_rows_of_a_failed_job_are_not_remembered(sandbox, config, tmp_path):
    config.update(skip_unchanged=True, state_db=str(tmp_path / "state.db"))
    sandbox.set_faults(fail_jobs=1)
    assert run_target(config, _users(300), tmp_path=tmp_path).returncode == 4
    sandbox.set_faults()

    run = run_target(config, _users(300), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-2000:]
    assert run.summary["total"]["rows_sent"] == 300
    assert len(sandbox.profiles("users")) == 300


def test_without_the_setting_everything_is_sent_again(sandbox, config, tmp_path):
    assert run_target(config, _users(200), tmp_path=tmp_path).returncode == 0
    assert run_target(config, _users(200), tmp_path=tmp_path).returncode == 0
    assert sandbox.stats()["rows_received"] == 400


def test_damaged_state_db_is_a_clear_configuration_error(sandbox, config, tmp_path):
    damaged = tmp_path / "state.db"
    damaged.write_bytes(b"this is not a database" * 100)
    config.update(skip_unchanged=True, state_db=str(damaged))

    run = run_target(config, _users(10), tmp_path=tmp_path)

    assert run.returncode == 2
    assert "state_db" in run.stderr and "delete it" in run.stderr
    assert sandbox.stats()["requests"] == 0
