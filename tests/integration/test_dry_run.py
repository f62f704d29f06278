"""dry_run: every batch written to output_dir exactly as it would be uploaded, no network at all."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.sandbox import Sandbox

from support.messages import API_KEY, COMPANY_SCHEMA, USER_SCHEMA, record, schema, state, user
from support.runner import RunTarget


def _closed_loopback_port() -> int:
    """A loopback port nothing listens on: any connection attempt to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _messages() -> list[dict[str, Any]]:
    """Companies, 250 users (one sent twice, one without an id) and an ignored stream."""
    return [
        schema("companies", COMPANY_SCHEMA, ["company_id"]),
        record("companies", {"company_id": "c-1", "name": "Acme", "employees": 250}),
        record("companies", {"company_id": "c-2", "name": "Globex Zürich", "employees": None}),
        schema("users", USER_SCHEMA, ["id"]),
        *[record("users", user(i)) for i in range(250)],
        record("users", user(249, plan="enterprise")),  # same batch as the first 249: merged
        record("users", user(1000, id=None)),  # no usable id: rejected
        schema("audit_log", {"id": {"type": "integer"}}, ["id"]),
        *[record("audit_log", {"id": i}) for i in range(3)],
        state({"bookmarks": {"users": "done"}}),
    ]


def _dry_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "dry_run": True,
        "output_dir": str(tmp_path / "batches"),
        # Nothing listens here: a dry run that tried to connect would fail.
        "api_url": f"http://127.0.0.1:{_closed_loopback_port()}",
        "batch_size_rows": 100,
        "object_mapping": {"audit_log": {"object": "ignore"}},
    }


def _expected_user(i: int, plan: str | None = None) -> dict[str, Any]:
    rec = user(i)
    return {
        "user_id": str(i),
        "company_id": rec["company_id"],
        "metadata": {"email": rec["email"], "name": rec["name"], "plan": plan or rec["plan"]},
    }


def _ndjson(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_dry_run_writes_every_batch_without_a_key_or_any_network(
    tmp_path: Path, run_target: RunTarget
) -> None:
    config = _dry_config(tmp_path)
    assert "api_key" not in config

    run = run_target(config, _messages(), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "batches"
    assert sorted(p.name for p in out.iterdir()) == [
        "companies-1.ndjson",
        "users-1.ndjson",
        "users-2.ndjson",
        "users-3.ndjson",
    ]
    assert _ndjson(out / "companies-1.ndjson") == [
        {"company_id": "c-1", "metadata": {"name": "Acme", "employees": 250}},
        {"company_id": "c-2", "metadata": {"name": "Globex Zürich", "employees": None}},
    ]
    assert _ndjson(out / "users-1.ndjson") == [_expected_user(i) for i in range(100)]
    assert _ndjson(out / "users-2.ndjson") == [_expected_user(i) for i in range(100, 200)]
    assert _ndjson(out / "users-3.ndjson") == [
        *[_expected_user(i) for i in range(200, 249)],
        _expected_user(249, plan="enterprise"),
    ]
    # Nothing is durable in Userpilot: no STATE, so no bookmark moves.
    assert run.stdout == ""
    assert "Dry run: the input's STATE message was held back, not written to stdout" in run.stderr
    assert "connection" not in run.stderr.lower()


def test_dry_run_summary_says_what_would_have_been_sent(
    tmp_path: Path, run_target: RunTarget
) -> None:
    run = run_target(_dry_config(tmp_path), _messages(), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    summary = run.summary
    assert summary["dry_run"] is True
    counts = ("received", "rows_sent", "merged", "unchanged", "rejected", "jobs")
    got = {name: {k: s[k] for k in ("object", *counts)} for name, s in summary["streams"].items()}
    assert got == {
        "audit_log": dict.fromkeys(counts, 0) | {"object": "ignore", "received": 3},
        "companies": dict.fromkeys(counts, 0)
        | {"object": "companies", "received": 2, "rows_sent": 2, "jobs": 1},
        "users": dict.fromkeys(counts, 0)
        | {"object": "users", "received": 252, "rows_sent": 250, "merged": 1, "rejected": 1}
        | {"jobs": 3},
    }
    assert {k: summary["total"][k] for k in counts} == {
        "received": 257,
        "rows_sent": 252,
        "merged": 1,
        "unchanged": 0,
        "rejected": 1,
        "jobs": 4,
    }
    assert "would send" in run.stderr
    assert (
        "Dry run: nothing was sent to Userpilot. 252 rows would have been sent in 4 uploads"
        in run.stderr
    )


def test_dry_run_files_are_byte_for_byte_what_a_real_run_uploads(
    keeping_sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    dry_dir, real_dir = tmp_path / "dry", tmp_path / "real"
    dry_dir.mkdir()
    real_dir.mkdir()
    dry = run_target(_dry_config(dry_dir), _messages(), tmp_path=dry_dir)
    real_config = {
        "api_url": keeping_sandbox.url,
        "api_key": API_KEY,
        "batch_size_rows": 100,
        "object_mapping": {"audit_log": {"object": "ignore"}},
    }
    real = run_target(real_config, _messages(), tmp_path=real_dir)

    assert dry.returncode == 0, dry.stderr[-3000:]
    assert real.returncode == 0, real.stderr[-3000:]
    # Uploads in order, oldest first; jobs() lists newest first.
    objects = [job["type"].split("_", 1)[0] for job in reversed(keeping_sandbox.jobs())]
    uploaded: dict[str, list[bytes]] = {"users": [], "companies": []}
    for obj, body in zip(objects, keeping_sandbox.uploads(), strict=True):
        uploaded[obj].append(body)
    written = {
        obj: [
            (dry_dir / "batches" / f"{obj}-{n}.ndjson").read_bytes()
            for n in range(1, len(uploaded[obj]) + 1)
        ]
        for obj in uploaded
    }
    assert [len(uploaded["companies"]), len(uploaded["users"])] == [1, 3]
    assert written == uploaded
    assert len(list((dry_dir / "batches").iterdir())) == 4
    assert real.states == [{"bookmarks": {"users": "done"}}]
    assert dry.stdout == ""


def _incremental_tap(bookmark: dict[str, Any] | None, ids: range) -> list[dict[str, Any]]:
    """What an incremental tap sends from its state: the records after its bookmark, a STATE
    after every five of them and one at the end."""
    after = (bookmark or {}).get("bookmarks", {}).get("users", -1)
    messages = [schema("users", USER_SCHEMA, ["id"])]
    for i in ids:
        if i > after:
            messages.append(record("users", user(i)))
            if i % 5 == 4:
                messages.append(state({"bookmarks": {"users": i}}))
    messages.append(state({"bookmarks": {"users": max(after, *ids)}}))
    return messages


def _last_state(run_stdout: str, before: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a pipeline keeps for the tap's next run: the last STATE line, else what it had."""
    lines = [json.loads(line) for line in run_stdout.splitlines() if line.strip()]
    return lines[-1] if lines else before


def test_a_dry_run_moves_no_bookmark_so_the_next_real_run_loads_every_previewed_record(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    saved: dict[str, Any] | None = None  # a first sync: the tap has no state

    dry = run_target(_dry_config(tmp_path), _incremental_tap(saved, range(12)), tmp_path=tmp_path)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert dry.stdout == ""
    saved = _last_state(dry.stdout, saved)
    real = run_target(config, _incremental_tap(saved, range(12)), tmp_path=tmp_path)

    assert real.returncode == 0, real.stderr[-3000:]
    assert sorted(sandbox.profiles("users"), key=int) == [str(i) for i in range(12)]
    assert real.states[-1] == {"bookmarks": {"users": 11}}


def test_a_dry_run_says_once_how_many_states_it_held_back_and_why(
    tmp_path: Path, run_target: RunTarget
) -> None:
    run = run_target(_dry_config(tmp_path), _incremental_tap(None, range(12)), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    said = [line for line in run.stderr.splitlines() if "STATE" in line]
    assert len(said) == 1, said
    assert "INFO" in said[0]
    assert "the 3 STATE messages of the input were held back, none written to stdout" in said[0]
    assert "nothing reached Userpilot, so the bookmark stays where it was" in said[0]


def test_sandbox_keeps_no_uploads_unless_asked(sandbox: Sandbox) -> None:
    with pytest.raises(RuntimeError, match="keep_uploads"):
        sandbox.uploads()


def test_dry_run_files_and_the_folder_it_creates_are_owner_only(
    tmp_path: Path, run_target: RunTarget
) -> None:
    run = run_target(_dry_config(tmp_path), _messages(), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "batches"
    assert out.stat().st_mode & 0o777 == 0o700
    files = list(out.iterdir())
    assert len(files) == 4
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o600, path.name


def test_a_nested_output_dir_is_owner_only_with_every_folder_the_run_creates(
    tmp_path: Path, run_target: RunTarget
) -> None:
    config = _dry_config(tmp_path) | {"output_dir": str(tmp_path / "runs" / "today" / "batches")}
    (tmp_path / "runs").mkdir(mode=0o755)  # the user's own folder: left as it is
    (tmp_path / "runs").chmod(0o755)

    run = run_target(config, _messages(), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "runs").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "runs" / "today").stat().st_mode & 0o777 == 0o700
    out = tmp_path / "runs" / "today" / "batches"
    assert out.stat().st_mode & 0o777 == 0o700
    assert len(list(out.iterdir())) == 4


def test_a_second_dry_run_replaces_the_first_runs_files_and_leaves_others_alone(
    tmp_path: Path, run_target: RunTarget
) -> None:
    config = _dry_config(tmp_path)
    first = run_target(config, _messages(), tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    out = tmp_path / "batches"
    assert len(list(out.iterdir())) == 4
    (out / "notes.txt").write_text("the operator's own file")
    (out / "users-old.ndjson").write_text("not named like a batch")

    second = run_target(
        config,
        [
            schema("users", USER_SCHEMA, ["id"]),
            record("users", user(7, plan="team")),
            record("users", user(8)),
            state({"second": True}),
        ],
        tmp_path=tmp_path,
    )

    assert second.returncode == 0, second.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "notes.txt",
        "users-1.ndjson",
        "users-old.ndjson",
    ]
    assert _ndjson(out / "users-1.ndjson") == [_expected_user(7, plan="team"), _expected_user(8)]
    assert "removed 4 batch files of an earlier dry run" in second.stderr
    assert "Dry run: nothing was sent to Userpilot. 2 rows would have been sent in 1 upload" in (
        second.stderr
    )


@pytest.mark.parametrize(
    ("where", "said"),
    [("a-file", "is a file, not a folder"), ("a-file/batches", "a-file is a file, not a folder")],
)
def test_an_output_dir_that_cannot_be_a_folder_stops_with_exit_2(
    where: str, said: str, tmp_path: Path, run_target: RunTarget
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    config = {**_dry_config(tmp_path), "output_dir": str(tmp_path / where)}

    run = run_target(config, _messages(), tmp_path=tmp_path)

    assert run.returncode == 2, run.stderr[-3000:]
    stopped = [line for line in run.stderr.splitlines() if "target-userpilot stopped:" in line]
    assert len(stopped) == 1, run.stderr[-3000:]
    assert f"output_dir '{tmp_path / where}'" in stopped[0]
    assert said in stopped[0]
    assert run.states == []
    assert "Traceback" not in run.stderr
