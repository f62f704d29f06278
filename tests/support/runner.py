"""Running the real target on a list of Singer messages: in this process, or as a process.

Both runners take the same arguments and return the same :class:`TargetRun` (exit code, the
STATE lines of stdout, the log and summary line of stderr), so a test moves between them by
naming the other fixture (``run_target`` in process, ``run_target_process`` as a process).

In process, the run goes through the same command line (``TargetUserpilot.cli``, ``--config``
and any ``args``) with stdin, stdout and stderr pointed at files, in ``tmp_path`` as its working
folder, under the given environment: what a process would see. Whatever a run changes for the
whole process is put back afterwards (signal handlers, logging handlers and levels, warnings,
the excepthook, sys.stdin/stdout/stderr, the environment, the working folder), and a run that
leaves a thread behind fails the test: a subprocess would hide such a leak, since its daemon
threads die with it.

:class:`TargetProcess` runs it as a process whose input the test writes piece by piece.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from support.messages import encode_messages

#: How long the threads a run started get to end once it returned (they are joined by then).
THREADS_END_SECONDS = 10.0
#: Signals whose handlers a run installs (the SDK's, then the target's).
_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Numbers each in-process run's files, so runs of one test never share a file.
_RUNS = itertools.count(1)


@dataclass
class TargetRun:
    """What one run of the target left behind."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def states(self) -> list[Any]:
        """STATE values written to stdout, in order."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    @property
    def summary(self) -> dict[str, Any]:
        """The machine-readable end-of-run summary."""
        for line in self.stderr.splitlines():
            if line.startswith("TARGET_USERPILOT_SUMMARY "):
                summary: dict[str, Any] = json.loads(line.split(" ", 1)[1])
                return summary
        raise AssertionError("no summary line in stderr:\n" + self.stderr[-3000:])


#: The summary's counters per stream that two runs of the same input agree on.
SUMMARY_COUNTS = ("received", "rows_sent", "merged", "unchanged", "rejected", "jobs")


def summary_counts(run: TargetRun) -> dict[str, dict[str, Any]]:
    """The summary's counters per stream (times and rates left out: they differ per run)."""
    return {
        name: {key: tally[key] for key in SUMMARY_COUNTS}
        for name, tally in run.summary["streams"].items()
    }


class RunTarget(Protocol):
    """The ``run_target`` and ``run_target_process`` fixtures: one run on ``messages``."""

    def __call__(
        self,
        config: dict[str, Any],
        messages: Iterable[dict[str, Any] | str],
        *,
        tmp_path: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 120,
        args: list[str] | None = None,
    ) -> TargetRun: ...


def run_process(
    config: dict[str, Any],
    messages: Iterable[dict[str, Any] | str],
    *,
    tmp_path: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    args: list[str] | None = None,
) -> TargetRun:
    """Run the real target (``python -m target_userpilot``) as a process on ``messages``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    config_path = tmp_path / f"config-{os.getpid()}-{id(config)}.json"
    config_path.write_text(json.dumps(config))
    proc = subprocess.run(
        [sys.executable, "-m", "target_userpilot", "--config", str(config_path), *(args or [])],
        input=encode_messages(messages),
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=tmp_path,
        check=False,
    )
    return TargetRun(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def start_target(
    config: dict[str, Any], messages: list[dict[str, Any]], tmp_path: Path, name: str
) -> subprocess.Popen[bytes]:
    """The real target in the background, its input written at once (``name`` tells its
    files from other runs'); ``finish`` waits for it."""
    config_path = tmp_path / f"config-{name}.json"
    config_path.write_text(json.dumps(config))
    input_path = tmp_path / f"input-{name}.jsonl"
    input_path.write_bytes(encode_messages(messages))
    with input_path.open("rb") as stdin:
        return subprocess.Popen(
            [sys.executable, "-m", "target_userpilot", "--config", str(config_path)],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
        )


def finish(proc: subprocess.Popen[bytes]) -> TargetRun:
    """What a run ``start_target`` began left behind, once it ended."""
    stdout, stderr = proc.communicate(timeout=120)
    return TargetRun(proc.returncode, stdout.decode(), stderr.decode())


def run_in_process(
    config: dict[str, Any],
    messages: Iterable[dict[str, Any] | str],
    *,
    tmp_path: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    args: list[str] | None = None,
) -> TargetRun:
    """Run the real target in this process on ``messages``, as ``run_process`` would.

    ``timeout`` is accepted for the same signature; a run that hangs is ended by pytest-timeout.
    """
    del timeout
    number = next(_RUNS)
    folder = tmp_path / f"in-process-{number}"
    folder.mkdir(parents=True)
    config_path = folder / "config.json"
    config_path.write_text(json.dumps(config))
    (folder / "stdin").write_bytes(encode_messages(messages))
    # The SDK's reader took sys.stdin when it was imported, so the input goes in as the file
    # that --input names: the same reader and feed thread as for stdin.
    argv = ["--config", str(config_path), "--input", str(folder / "stdin"), *(args or [])]
    with (
        (folder / "stdin").open(encoding="utf-8") as stdin,
        (folder / "stdout").open("w", encoding="utf-8") as stdout,
        (folder / "stderr").open("w", encoding="utf-8") as stderr,
        _process_state_restored(),
        _no_thread_left_behind(),
    ):
        os.environ.update(env or {})
        os.chdir(tmp_path)
        sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
        code = _invoke(argv)
        stdout.flush()
        stderr.flush()
    return TargetRun(
        code,
        (folder / "stdout").read_text(encoding="utf-8"),
        (folder / "stderr").read_text(encoding="utf-8"),
    )


def _invoke(argv: list[str]) -> int:
    """The command line's exit code, as the interpreter would end the process with it."""
    # Imported here: collecting a test module must not import the target's whole package.
    from target_userpilot.target import TargetUserpilot

    try:
        # Read the command only now: reading it sets up the SDK's log handler on sys.stderr.
        TargetUserpilot.cli.main(args=argv, prog_name="target-userpilot", standalone_mode=True)
    except SystemExit as exit_:
        return _exit_status(exit_.code)
    except Exception:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        sys.excepthook(*sys.exc_info())
        return 1
    return 0


def _exit_status(code: object) -> int:
    """``sys.exit``'s argument as the process's status: None is 0, text is printed and 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


@contextlib.contextmanager
def _process_state_restored() -> Iterator[None]:
    """Put back, on the way out, everything a run changes for the whole process."""
    handlers = {signum: signal.getsignal(signum) for signum in _HANDLED_SIGNALS}
    streams = (sys.stdin, sys.stdout, sys.stderr)
    excepthook = sys.excepthook
    environ = dict(os.environ)
    cwd = os.getcwd()
    loggers = _logging_state()
    # Whether logging.captureWarnings is on: logging's own private flag, not in its stubs.
    captured = logging._warnings_showwarning is not None  # type: ignore[attr-defined]  # noqa: SLF001
    try:
        with warnings.catch_warnings():
            yield
    finally:
        sys.stdin, sys.stdout, sys.stderr = streams
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        sys.excepthook = excepthook
        os.environ.clear()
        os.environ.update(environ)
        os.chdir(cwd)
        logging.captureWarnings(captured)
        _restore_logging(loggers)


def _logging_state() -> dict[str, tuple[Any, ...]]:
    """Every logger's level, handlers, propagation and on/off state, the root's included."""
    manager = logging.Logger.manager
    state = {}
    for name, logger in [("", logging.getLogger()), *manager.loggerDict.items()]:
        if isinstance(logger, logging.Logger):
            state[name] = (logger.level, list(logger.handlers), logger.propagate, logger.disabled)
    return state


def _restore_logging(before: dict[str, tuple[Any, ...]]) -> None:
    """Loggers as they were; the handlers a run added are closed, loggers it made are reset."""
    for name, logger in [("", logging.getLogger()), *logging.Logger.manager.loggerDict.items()]:
        if not isinstance(logger, logging.Logger):
            continue
        level, handlers, propagate, disabled = before.get(name, (logging.NOTSET, [], True, False))
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
        logger.disabled = disabled


@contextlib.contextmanager
def _no_thread_left_behind() -> Iterator[None]:
    """Fail when a thread the run started is still alive once it returned."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREADS_END_SECONDS
    while left := [t for t in threading.enumerate() if t not in before and _the_runs(t)]:
        gc.collect()  # a connection nothing refers to any more closes, and its server thread ends
        if time.monotonic() > deadline:
            frames = sys._current_frames()  # noqa: SLF001 - where each thread waits
            where = "\n".join(
                f"{t.name}:\n" + "".join(traceback.format_stack(frames[t.ident]))
                for t in left
                if t.ident in frames
            )
            pytest.fail(f"the run left {len(left)} thread(s) behind:\n{where}")
        time.sleep(0.01)


def _the_runs(thread: threading.Thread) -> bool:
    """Whether a live thread is the run's: not one a test's server (the sandbox) started to
    answer a connection, which ends when the server's keep-alive wait for it does."""
    return thread.is_alive() and not thread.name.endswith("(process_request_thread)")


class TargetProcess:
    """The real target as a subprocess whose input the test writes, STATE lines read as they come.

    ``messages`` given: a thread feeds them all and closes stdin (a tap writing as fast as the
    target reads). Otherwise the test writes with ``send`` and ends the input with ``close``.
    """

    def __init__(
        self,
        config: dict[str, Any],
        tmp_path: Path,
        *,
        messages: Iterable[dict[str, Any] | str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        config_path = tmp_path / "process-config.json"
        config_path.write_text(json.dumps(config))
        self.stderr_path = tmp_path / "stderr.log"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "target_userpilot", "--config", str(config_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, **(env or {})},
            cwd=tmp_path,
        )
        #: STATE values written so far, and when each was read (monotonic seconds).
        self.states: list[Any] = []
        self.state_times: list[float] = []
        self._lines: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        if messages is not None:
            data = encode_messages(messages)
            threading.Thread(target=self._feed, args=(data,), daemon=True).start()

    def _feed(self, data: bytes) -> None:
        try:
            self.send_bytes(data)
            assert self.proc.stdin is not None  # started with stdin=PIPE
            self.proc.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass  # stopped before it read everything: that may be the point

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            value = json.loads(line)
            self.state_times.append(time.monotonic())
            self.states.append(value)
            self._lines.put(value)
        self._lines.put(_END)

    def send(self, messages: Iterable[dict[str, Any] | str]) -> None:
        """Write messages to the target's stdin now."""
        self.send_bytes(encode_messages(messages))

    def send_bytes(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def next_state(self, timeout: float = 20) -> Any:
        """The next STATE value, or None at the end of output; fail at the deadline."""
        try:
            value = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no STATE line within {timeout} s")
        return None if value is _END else value

    def drain(self, timeout: float = 30) -> int:
        """Read the remaining STATE lines and wait for the exit code."""
        while self.next_state(timeout) is not None:
            pass
        code = self.proc.wait(timeout=timeout)
        self._stderr.close()
        return code

    def close(self, timeout: float = 60) -> int:
        """End the input and wait for the exit code."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.drain(timeout)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def kill(self) -> None:
        """Stop it at once (SIGKILL) if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._stderr.close()


_END = object()
