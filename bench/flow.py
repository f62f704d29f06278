"""Does progress follow the data? Input fed to the target as a tap would, and when STATE comes out.

The quiet-stream and slow-tap cases of `make bench` (issue 10) write the target's stdin piece by
piece from this process, note when each piece went in and when each STATE came out, and read the
sandbox's job timings afterwards. Every STATE the bench sends carries a sequence number (``seq``),
so a STATE the target writes says which input STATE it is, and so which records it covers.

A "chunk" is what the bench writes in one go: some records and, usually, the STATE after them. Its
arrival is the moment the write returned, that is when the target's pipe took its last line.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import generate  # bench/ is on sys.path: run as `python bench/run.py`

#: The API key every sandbox of the bench expects.
API_KEY = "bench-key"
#: Companies sent before the users in both fed cases: the small stream a tap often sends first.
COMPANIES = 10
#: Seconds the exit of a fed run may take after its input ended, before the bench gives up.
EXIT_TIMEOUT = 300.0


@dataclass(frozen=True)
class Chunk:
    """Messages written in one go: ``records`` RECORD messages, then STATE ``seq`` (if any)."""

    data: bytes
    records: int
    seq: int | None


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _state(seq: int, position: int) -> bytes:
    value = {"seq": seq, "bookmarks": {generate.STREAM: {"position": position}}}
    return _line({"type": "STATE", "value": value})


def opening_chunk() -> Chunk:
    """Both SCHEMA messages, the companies and the STATE after them (``seq`` 0)."""
    company = {
        "type": "SCHEMA",
        "stream": generate.COMPANY_STREAM,
        "schema": generate.COMPANY_SCHEMA,
        "key_properties": ["company_id"],
    }
    users = {
        "type": "SCHEMA",
        "stream": generate.STREAM,
        "schema": generate.SCHEMA,
        "key_properties": ["user_id"],
    }
    lines = [_line(company)]
    for i in range(1, COMPANIES + 1):
        record = generate.company_record(i)
        lines.append(_line({"type": "RECORD", "stream": generate.COMPANY_STREAM, "record": record}))
    lines += [_state(0, 0), _line(users)]
    return Chunk(b"".join(lines), COMPANIES, 0)


def user_chunks(users: int, per_chunk: int) -> Iterator[Chunk]:
    """``users`` distinct users in chunks of ``per_chunk``, each chunk ending with its STATE."""
    for seq, start in enumerate(range(1, users + 1, per_chunk), start=1):
        ids = range(start, min(start + per_chunk, users + 1))
        lines = [
            _line({"type": "RECORD", "stream": generate.STREAM, "record": generate.user_record(i)})
            for i in ids
        ]
        lines.append(_state(seq, ids[-1]))
        yield Chunk(b"".join(lines), len(ids), seq)


class FedTarget:
    """The target as a subprocess whose stdin the bench writes; notes every STATE it writes."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        # Closed by finish() or kill(): it outlives this method, so no `with` block.
        self._stderr = tempfile.TemporaryFile(dir=cwd)  # noqa: SIM115
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, cwd=cwd
        )
        #: (arrival, chunk) for every chunk written.
        self.sent: list[tuple[float, Chunk]] = []
        #: (moment, seq) for every STATE the target wrote.
        self.states: list[tuple[float, int]] = []
        self.closed: float | None = None
        self.exited: float | None = None
        self._reader = threading.Thread(target=self._read, name="bench-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            moment = time.monotonic()
            message = json.loads(line)
            value = message.get("value", message) if message.get("type") == "STATE" else message
            self.states.append((moment, int(value["seq"])))

    def send(self, chunk: Chunk) -> None:
        """Write ``chunk``; returns when the pipe took it (it blocks while the target is busy)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(chunk.data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.proc.wait(timeout=EXIT_TIMEOUT)
            raise RuntimeError(f"the target stopped reading:\n{self.stderr_tail()}") from None
        self.sent.append((time.monotonic(), chunk))

    def finish(self) -> str:
        """End the input, wait for the exit, and return the target's stderr."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.closed = time.monotonic()
        code = self.proc.wait(timeout=EXIT_TIMEOUT)
        self.exited = time.monotonic()
        self._reader.join(timeout=10)
        if code != 0:
            raise RuntimeError(f"the target exited with {code}:\n{self.stderr_tail()}")
        self._stderr.seek(0)
        stderr = self._stderr.read().decode(errors="replace")
        self._stderr.close()
        return stderr

    def stderr_tail(self, lines: int = 15) -> str:
        """The last lines the target wrote to stderr."""
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """Kill the target if it still runs (a bench error), and close its stderr file."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._stderr.close()

    # Figures

    def first_state(self) -> float | None:
        """Seconds from the start of the process to its first STATE."""
        return self.states[0][0] - self.started if self.states else None

    def state_lags(self) -> list[float]:
        """For every STATE sent: seconds from its arrival to the first STATE written covering it.

        The records of a chunk arrive together with its STATE, so this is also how long each
        record waited for a STATE that covers it.
        """
        lags = []
        for arrival, chunk in self.sent:
            if chunk.seq is None:
                continue
            out = next((moment for moment, seq in self.states if seq >= chunk.seq), None)
            if out is None:
                raise RuntimeError(f"no STATE came out for input STATE {chunk.seq}")
            lags.append(out - arrival)
        return lags


def lag_figures(lags: list[float]) -> dict[str, float]:
    """Max and median STATE lag, in seconds."""
    return {"max": round(max(lags), 2), "median": round(statistics.median(lags), 2)}


def idle_while_waiting(
    sent: list[tuple[float, Chunk]], jobs: list[dict[str, Any]], origin: float
) -> dict[str, float | list[float]]:
    """How long the sandbox ran no job of ours while rows sent to the target waited for one.

    Rows wait from their arrival until the sandbox accepts the upload holding them; ``jobs`` are
    the sandbox's job timings, in seconds since ``origin`` (its start, on this process's
    monotonic clock). Sampled every 2 ms from the first arrival to the last job's end.
    ``longest_idle_seconds`` is the longest such stretch: the flush rule keeps it at about
    ``batch_wait_seconds``; ``idle_stretches`` lists every stretch of 50 ms or more.
    """
    arrivals = sorted((moment, chunk.records) for moment, chunk in sent if chunk.records)
    timeline = sorted(
        (origin + job["accepted_at"], origin + job["completed_at"], job["rows"]) for job in jobs
    )
    if not arrivals or not timeline:
        return {
            "idle_seconds": 0.0,
            "waiting_seconds": 0.0,
            "idle_share": 0.0,
            "longest_idle_seconds": 0.0,
            "idle_stretches": [],
        }
    step = 0.002
    now, end = arrivals[0][0], max(done for _, done, _ in timeline)
    written = accepted = 0
    next_arrival = next_job = 0
    busy_until = float("-inf")
    idle = waiting = stretch = longest = 0.0
    stretches: list[float] = []
    while now < end:
        while next_arrival < len(arrivals) and arrivals[next_arrival][0] <= now:
            written += arrivals[next_arrival][1]
            next_arrival += 1
        while next_job < len(timeline) and timeline[next_job][0] <= now:
            accepted += timeline[next_job][2]
            busy_until = max(busy_until, timeline[next_job][1])
            next_job += 1
        if written > accepted:
            waiting += step
        if written > accepted and now >= busy_until:
            idle += step
            stretch += step
            longest = max(longest, stretch)
        elif stretch:
            stretches.append(stretch)
            stretch = 0.0
        now += step
    if stretch:
        stretches.append(stretch)
    return {
        "idle_seconds": round(idle, 2),
        "waiting_seconds": round(waiting, 2),
        "idle_share": round(idle / waiting, 4) if waiting else 0.0,
        "longest_idle_seconds": round(longest, 2),
        "idle_stretches": [round(s, 2) for s in stretches if s >= 0.05],
    }


def rows_per_job(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """Job count and rows per job (companies' job included), in upload order."""
    rows = [job["rows"] for job in jobs]
    return {
        "jobs": len(rows),
        "rows": rows,
        "median_rows": statistics.median(rows) if rows else 0,
    }
