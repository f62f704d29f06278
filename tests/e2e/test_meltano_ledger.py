"""The ledger under Meltano: ``meltano invoke target-userpilot:ledger`` with the real Meltano CLI.

One project for the module: a copy of this one (test_meltano.py's helpers), the loader installed
once, the API key in the project's ``.env`` and the sandbox's address in the environment. The
README's "The ledger under Meltano" steps run in it as written there (``meltano config set``
puts ``skip_unchanged`` and ``state_db`` in meltano.yml, then ``meltano run``); each test then
invokes the ledger command as a Meltano user would, never typing a path or a ``--config``.
The unit tests at the end check the same rules without Meltano, in milliseconds.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from target_userpilot.ledger import cli
from target_userpilot.ledger.factory import DEFAULT_PATH, open_ledger
from target_userpilot.ledger.schema import DRY_RUN_SCOPE
from target_userpilot.ledger.scope import account_scope
from target_userpilot.ledger.store import SentJob
from target_userpilot.sandbox import Sandbox

from support.meltano import copy_project, meltano_env, run_meltano

REPO = Path(__file__).resolve().parents[2]

#: Where the README's steps put the ledger (``meltano config set ... state_db``).
LEDGER = Path("ledgers") / "userpilot.db"


@dataclass(frozen=True)
class ReadmeExample:
    """The README's "The ledger under Meltano" example: its commands and what they print."""

    steps: list[str]
    end_line: str
    jobs_command: str
    #: How the run ended, then (after a blank line) its jobs.
    run_output: list[str]
    jobs_output: list[str]
    history_command: str
    history_output: list[str]
    #: The refusal shown for a ledger read from a subfolder of /srv/project.
    refusal: str

    @property
    def run_id(self) -> str:
        """The run id the README's example shows."""
        found = re.search(r"--run (\w+)", self.end_line)
        assert found, self.end_line
        return found[1]


def readme_example() -> ReadmeExample:
    """The example, read from README.md: one block of steps, then each command and its output."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n### The ledger under Meltano\n")
    section = readme[start : readme.index("\n## ", start)]
    blocks = re.findall(r"^```(sh|text)\n(.*?)^```", section, re.S | re.M)
    assert [kind for kind, _ in blocks[:6]] == ["sh", "text"] * 3, blocks
    (_, steps), (_, end), (_, jobs), (_, jobs_out), (_, history), (_, history_out) = blocks[:6]
    refusal = re.search(r"^ +```text\n +(userpilot-ledger: .*?)\n +```", section, re.S | re.M)
    assert refusal, "the README's refusal example is missing"
    run_out, _, jobs_table = jobs_out.strip().partition("\n\n")
    return ReadmeExample(
        steps=steps.strip().splitlines(),
        end_line=end.strip(),
        jobs_command=jobs.strip(),
        run_output=run_out.splitlines(),
        jobs_output=jobs_table.splitlines(),
        history_command=history.strip(),
        history_output=history_out.strip().splitlines(),
        refusal=refusal[1],
    )


@dataclass
class Project:
    """The shared Meltano project, after the README's steps ran once in it."""

    path: Path
    meltano: Path
    sandbox: Sandbox
    key: str
    env: dict[str, str]
    example: ReadmeExample
    run_output: str
    run_id: str

    def invoke(
        self, command: str, *, cwd: Path | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """A README-style ``meltano ...`` line, run as typed (the example's run id: this run's)."""
        words = shlex.split(command.replace(self.example.run_id, self.run_id), comments=True)
        assert words[0] == "meltano", command
        return subprocess.run(
            [str(self.meltano), *words[1:]],
            cwd=cwd or self.path,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


@pytest.fixture(scope="module")
def project(meltano: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """The README's steps run once: a run that keeps a ledger at meltano.yml's state_db."""
    path = copy_project(tmp_path_factory.mktemp("meltano-ledger") / "project")
    key = f"ledger-key-{uuid.uuid4().hex[:8]}"
    # As `meltano config set target-userpilot api_key ...` keeps a sensitive setting.
    (path / ".env").write_text(f"TARGET_USERPILOT_API_KEY={key}\n", encoding="utf-8")
    example = readme_example()
    with Sandbox(port=0, api_key=key, rows_per_minute=0) as sandbox:
        env = meltano_env(TARGET_USERPILOT_API_URL=sandbox.url)
        run_meltano(meltano, "install", "loader", "target-userpilot", cwd=path, env=env)
        project = Project(path, meltano, sandbox, key, env, example, "", "")
        outputs = []
        for step in example.steps:
            done = project.invoke(step)
            outputs.append(done.stdout + done.stderr)
            assert done.returncode == 0, f"{step} failed:\n{outputs[-1][-4000:]}"
        project.run_output = outputs[-1]
        found = re.search(r"ledger jobs --run (\w+)", project.run_output)
        assert found, project.run_output[-4000:]
        project.run_id = found[1]
        yield project


def _cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_a_meltano_runs_last_line_names_the_ledger_command(project: Project) -> None:
    expected = project.example.end_line.replace(project.example.run_id, project.run_id)

    assert expected in project.run_output
    # state_db was set in meltano.yml alone, relative to the folder Meltano was started in.
    assert "state_db: ledgers/userpilot.db" in (project.path / "meltano.yml").read_text()
    assert "STATE_DB" not in (project.path / ".env").read_text() + str(project.env)
    assert (project.path / LEDGER).is_file()
    assert not (project.path / ".target-userpilot").exists()
    assert project.key not in project.run_output


def test_the_readme_ledger_commands_print_what_the_run_did(project: Project) -> None:
    example = project.example
    job_ids = [job["job_id"] for job in project.sandbox.jobs()]

    jobs = project.invoke(example.jobs_command)
    history = project.invoke(example.history_command)

    assert jobs.returncode == 0, jobs.stderr[-4000:]
    how_it_ended, _, table = jobs.stdout.partition("\n\n")
    ended = how_it_ended.splitlines()
    # The outcome, the counts and what Meltano passed as documented; the times are this run's.
    assert ended[0] == example.run_output[0].replace(example.run_id, project.run_id)
    assert ended[1].startswith("  started ") and ", ended " in ended[1]
    assert ended[2:] == example.run_output[2:]
    lines = table.splitlines()
    assert _cells(lines[0]) == _cells(example.jobs_output[0])
    # Run, kind, object, streams, rows and outcome as documented; times and job ids are this
    # run's own, and the job ids are the sandbox's.
    assert [[*_cells(line)[1:3], *_cells(line)[4:8]] for line in lines[1:]] == [
        [project.run_id, *_cells(line)[2:3], *_cells(line)[4:8]] for line in example.jobs_output[1:]
    ]
    assert sorted(_cells(line)[3] for line in lines[1:]) == sorted(job_ids)
    assert history.returncode == 0, history.stderr[-4000:]
    lines = history.stdout.splitlines()
    assert _cells(lines[0]) == _cells(example.history_output[0])
    assert [[*_cells(line)[1:3], _cells(line)[4]] for line in lines[1:]] == [
        [*_cells(line)[1:3], _cells(line)[4]] for line in example.history_output[1:]
    ]
    users_jobs = [_cells(line)[3] for line in table.splitlines()[1:] if "users" in line]
    assert [_cells(line)[3] for line in lines[1:]] == users_jobs
    for shown in (jobs, history):
        assert project.key not in shown.stdout + shown.stderr


def test_a_meltano_run_given_a_run_id_in_its_environment_is_recorded_with_it(
    project: Project,
) -> None:
    """Meltano passes its own environment on: MELTANO_RUN_ID is its run id and the target's."""
    meltano_run_id = str(uuid.uuid4())

    done = project.invoke("meltano run tap-example target-userpilot", MELTANO_RUN_ID=meltano_run_id)
    listed = project.invoke("meltano invoke target-userpilot:ledger runs --limit 1")

    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert f"run ID '{meltano_run_id}'" in done.stderr  # Meltano's own log line
    assert listed.returncode == 0, listed.stderr[-4000:]
    heading, row = (_cells(line) for line in listed.stdout.splitlines())
    run = dict(zip(heading, row, strict=True))
    assert run["run"] in done.stdout + done.stderr  # the run's last line names it
    assert (run["outcome"], run["exit"]) == ("completed", "0")
    assert run["orchestrator"] == f"meltano {meltano_run_id}"


def test_the_ledger_command_reads_the_account_from_the_environment(project: Project) -> None:
    other = f"other-key-{uuid.uuid4().hex[:8]}"
    own = project.invoke("meltano invoke target-userpilot:ledger accounts")
    # A variable of the shell wins over the project's .env, as for a run.
    elsewhere = project.invoke(
        f"meltano invoke target-userpilot:ledger jobs --run {project.run_id}",
        TARGET_USERPILOT_API_KEY=other,
    )

    profiles = len(project.sandbox.profiles("users")) + len(project.sandbox.profiles("companies"))
    assert own.returncode == 0, own.stderr[-4000:]
    assert own.stdout.splitlines()[1:] == [
        f"{account_scope(project.sandbox.url, project.key)}  {profiles}"
    ]
    assert elsewhere.returncode == 0, elsewhere.stderr[-4000:]
    assert elsewhere.stdout == (
        f"No jobs of run {project.run_id} for account "
        f"{account_scope(project.sandbox.url, other)}.\n"
    )
    for shown in (own, elsewhere):
        assert project.key not in shown.stdout + shown.stderr
        assert other not in shown.stdout + shown.stderr


def test_a_missing_ledger_is_refused_and_nothing_is_created(project: Project) -> None:
    subfolder = project.path / "orchestrate"  # the README's example folder
    subfolder.mkdir()

    mistyped = project.invoke(
        "meltano invoke target-userpilot:ledger jobs", TARGET_USERPILOT_STATE_DB="missing/ledger.db"
    )
    # meltano.yml's relative state_db, read from a subfolder: not where the run made it.
    elsewhere = project.invoke("meltano invoke target-userpilot:ledger jobs", cwd=subfolder)

    assert mistyped.returncode == 2
    assert mistyped.stdout == ""
    assert "state_db 'missing/ledger.db' holds no ledger: there is no such file" in mistyped.stderr
    assert "It came from target-userpilot's state_db in Meltano" in mistyped.stderr
    assert not (project.path / "missing").exists()
    assert elsewhere.returncode == 2
    assert elsewhere.stdout == ""
    assert project.example.refusal.replace("/srv/project", str(project.path)) in elsewhere.stderr
    assert list(subfolder.iterdir()) == []
    for shown in (mistyped, elsewhere):
        assert "Traceback" not in shown.stderr
        assert project.key not in shown.stdout + shown.stderr


# The same rules without Meltano


MELTANO = {
    "MELTANO_PROJECT_ROOT": "/srv/project",
    "MELTANO_LOADER_NAME": "target-userpilot",
    "MELTANO_ENVIRONMENT": "dev",
    "MELTANO_DEFAULT_ENVIRONMENT": "dev",
}


@pytest.mark.parametrize(
    ("environ", "cwd", "state_db", "expected"),
    [
        ({}, "/srv/project", DEFAULT_PATH, "userpilot-ledger jobs --run r1"),
        (
            {"MELTANO_PROJECT_ROOT": "/srv/project"},  # a shell's, pointing meltano at a project
            "/srv/project",
            DEFAULT_PATH,
            "userpilot-ledger jobs --run r1",
        ),
        (
            MELTANO,
            "/srv/project",
            DEFAULT_PATH,
            "meltano invoke target-userpilot:ledger jobs --run r1",
        ),
        (
            MELTANO,
            "/srv/project/orchestrate",
            "",
            "meltano --cwd /srv/project/orchestrate invoke target-userpilot:ledger jobs --run r1",
        ),
        (
            MELTANO,
            "/srv/project/orchestrate",
            "postgresql://ledger:pw@db/ledger",
            "meltano invoke target-userpilot:ledger jobs --run r1",
        ),
        (
            {**MELTANO, "MELTANO_ENVIRONMENT": "prod", "MELTANO_LOADER_NAME": "userpilot-eu"},
            "/home/me/my project",
            "/var/lib/ledger.db",
            "meltano --environment=prod invoke userpilot-eu:ledger jobs --run r1",
        ),
        (
            {**MELTANO, "MELTANO_ENVIRONMENT": ""},
            "/srv/project/x y",
            "state.db",
            "meltano --cwd '/srv/project/x y' --no-environment invoke target-userpilot:ledger "
            "jobs --run r1",
        ),
    ],
)
def test_the_last_line_names_the_command_to_type_where_the_run_was_started(
    environ: dict[str, str], cwd: str, state_db: str, expected: str
) -> None:
    assert cli.jobs_command("r1", state_db, environ, cwd) == expected


@pytest.fixture
def under_meltano(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """This process as Meltano starts a command: its variables, in the project's root."""
    for name in ("STATE_DB", "API_KEY", "API_URL", "DRY_RUN"):
        monkeypatch.delenv(f"TARGET_USERPILOT_{name}", raising=False)
    for name, value in {**MELTANO, "MELTANO_PROJECT_ROOT": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    # Meltano sets every setting with a value, the definition's defaults too.
    monkeypatch.setenv("TARGET_USERPILOT_STATE_DB", DEFAULT_PATH)
    monkeypatch.setenv("TARGET_USERPILOT_DRY_RUN", "false")
    monkeypatch.chdir(tmp_path)
    yield monkeypatch


def test_under_meltano_a_missing_default_ledger_is_a_sentence_and_nothing_is_made(
    under_meltano: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["accounts"])

    said = capsys.readouterr()
    assert code == 2
    assert said.out == ""
    assert "state_db '.target-userpilot/state.db' holds no ledger" in said.err
    assert "No other state_db is set for target-userpilot in Meltano" in said.err
    assert "check it for a typo" not in said.err  # Meltano's default is no typo
    assert list(tmp_path.iterdir()) == []


def test_dry_run_from_the_environment_reads_the_dry_runs_entries(
    under_meltano: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = open_ledger(str(tmp_path / DEFAULT_PATH))
    real = account_scope("https://analytex.userpilot.io", "meltano-key")
    try:
        for scope, user in ((real, "u1"), (DRY_RUN_SCOPE, "u2")):
            job = SentJob(f"job-{user}", "run-1", "job", "users", "users", 1, time.time())
            ledger.record_sent(scope, job, [(user, bytes(16))], keep=3)
    finally:
        ledger.close()
    under_meltano.setenv("TARGET_USERPILOT_API_KEY", "meltano-key")

    real_accounts = cli.main(["accounts"])
    real_out = capsys.readouterr().out
    under_meltano.setenv("TARGET_USERPILOT_DRY_RUN", "true")
    dry_accounts = cli.main(["accounts"])
    dry_out = capsys.readouterr().out

    assert (real_accounts, dry_accounts) == (0, 0)
    assert real_out.splitlines()[1].split() == [*real.split(), "1"]
    assert dry_out.splitlines()[1:] == [f"{DRY_RUN_SCOPE}  1"]


def test_under_meltano_a_ledger_url_that_cannot_be_reached_keeps_its_password(
    under_meltano: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    password = f"pw-{uuid.uuid4().hex[:8]}"
    under_meltano.setenv(
        "TARGET_USERPILOT_STATE_DB", f"postgresql://ledger:{password}@127.0.0.1:1/l"
    )
    under_meltano.setenv("TARGET_USERPILOT_API_KEY", "meltano-key")

    code = cli.main(["jobs"])

    said = capsys.readouterr()
    assert code == 2
    assert "userpilot-ledger: " in said.err
    assert password not in said.out + said.err
    assert "meltano-key" not in said.out + said.err
