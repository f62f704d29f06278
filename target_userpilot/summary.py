"""The end-of-run account: what came in, what went to Userpilot, what was saved or refused."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StreamTally:
    """Counters for one stream."""

    object: str = "users"
    received: int = 0
    rows_sent: int = 0
    merged: int = 0
    unchanged: int = 0
    rejected: int = 0
    jobs: int = 0
    job_seconds: float = 0.0


@dataclass
class RunSummary:
    """Counters per stream, updated by the sinks and by the job lane's watcher thread."""

    started: float = field(default_factory=time.monotonic)
    streams: dict[str, StreamTally] = field(default_factory=dict)
    dry_run: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def stream(self, name: str, object: str | None = None) -> StreamTally:
        """The tally of ``name``, created on first use."""
        tally = self.streams.get(name)
        if tally is None:
            with self._lock:
                tally = self.streams.setdefault(name, StreamTally())
        if object is not None:
            tally.object = object
        return tally

    def job_done(self, stream: str, rows: int, merged: int, seconds: float) -> None:
        """A job of ``stream`` completed with ``rows`` rows."""
        with self._lock:
            tally = self.streams.setdefault(stream, StreamTally())
            tally.rows_sent += rows
            tally.merged += merged
            tally.jobs += 1
            tally.job_seconds += seconds

    def as_dict(self) -> dict[str, Any]:
        """Machine-readable form: per stream and in total."""
        elapsed = time.monotonic() - self.started
        streams = {name: _with_rate(asdict(t), elapsed) for name, t in sorted(self.streams.items())}
        total: dict[str, Any] = {
            key: sum(s[key] for s in streams.values())
            for key in ("received", "rows_sent", "merged", "unchanged", "rejected", "jobs")
        }
        total["job_seconds"] = round(sum(s["job_seconds"] for s in streams.values()), 3)
        return {
            "dry_run": self.dry_run,
            "seconds": round(elapsed, 3),
            "streams": streams,
            "total": _with_rate(total, elapsed),
        }

    def table(self) -> str:
        """A small fixed-width table for people reading stderr."""
        data = self.as_dict()
        sent = "would send" if self.dry_run else "rows sent"
        head = (
            "stream",
            "object",
            "received",
            sent,
            "merged",
            "unchanged",
            "rejected",
            "jobs",
            "rows/min",
        )
        lines = [head]
        for name, s in data["streams"].items():
            lines.append(_cells(name, s["object"], s))
        lines.append(_cells("TOTAL", "", data["total"]))
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
        out = [
            "  ".join(
                str(c).ljust(w) if i < 2 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            )
            for line in lines
        ]
        return "\n".join(out) + f"\nfinished in {data['seconds']:.1f} s"

    def json_line(self) -> str:
        """One line of JSON for schedulers, prefixed so it is easy to grep from stderr."""
        return "TARGET_USERPILOT_SUMMARY " + json.dumps(self.as_dict(), sort_keys=True)


def _with_rate(counts: dict[str, Any], elapsed: float) -> dict[str, Any]:
    counts = dict(counts)
    counts["job_seconds"] = round(counts.get("job_seconds", 0.0), 3)
    counts["rows_per_minute"] = round(counts["rows_sent"] / elapsed * 60, 1) if elapsed else 0.0
    return counts


def _cells(name: str, object: str, s: dict[str, Any]) -> tuple[Any, ...]:
    return (
        name,
        object,
        s["received"],
        s["rows_sent"],
        s["merged"],
        s["unchanged"],
        s["rejected"],
        s["jobs"],
        f"{s['rows_per_minute']:.0f}",
    )
