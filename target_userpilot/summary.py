"""The end-of-run account: what came in, what went to Userpilot, what was saved or refused.

Written on stderr at the end of every run, successful or not. With plain logs: a small table for
the person reading the log, and one ``TARGET_USERPILOT_SUMMARY {...}`` JSON line for schedulers,
which can grep for the prefix and parse the rest. With the SDK's JSON logs (``logs.py``): one
record whose message is the summary in prose (:meth:`RunSummary.message`) and whose
``target_userpilot_summary`` field holds the same JSON, with no table and no prefixed line.

Time per stream runs from its SCHEMA message to the completion of its last job, so a stream's
effective rows per minute says how fast its profiles really reached Userpilot, waiting for other
streams' jobs included. The total uses the whole run's wall-clock time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The counters of a stream, in table order, with their table headings.
COUNTERS = (
    ("received", "received"),
    ("rows_sent", "rows sent"),
    ("merged", "merged"),
    ("unchanged", "unchanged"),
    ("rejected", "rejected"),
    ("jobs", "jobs"),
)
#: Counters of deleted source records, in the JSON line always, in the table once a run has
#: any (see ``_deletion_cells``).
DELETION_COUNTERS = ("deleted", "deleted_before", "deleted_ignored", "superseded")
#: Counters of events, in the JSON line always, in the table when a run has an events stream.
EVENT_COUNTERS = (
    ("events_sent", "events sent"),
    ("events_skipped", "already sent"),
    ("events_unconfirmed", "unconfirmed"),
)

#: What counts as loaded: something sent, found unchanged, deleted, or events sent or known.
LOADED_COUNTERS = (
    "rows_sent",
    "unchanged",
    "deleted",
    "deleted_before",
    "events_sent",
    "events_skipped",
)


def nothing_loaded(total: Mapping[str, Any]) -> bool:
    """Every record that should have become a Userpilot row was refused: a run that ends so
    is not a success (``Run.finish``), and a plan says the run would fail."""
    return bool(total["rejected"]) and not any(total[name] for name in LOADED_COUNTERS)


@dataclass
class StreamTally:
    """Counters for one stream.

    ``received`` counts records read, ``rows_sent`` rows in completed jobs, ``merged`` records
    folded into another row of the same batch, ``unchanged`` rows ``skip_unchanged`` left out,
    ``rejected`` records that could not become a valid row. ``jobs`` and ``job_seconds``
    count the jobs that carried the stream's rows: a job shared by two streams counts in
    both, and once in the run's total (``RunSummary.jobs``). Records marked deleted in the
    source (``_sdc_deleted_at``): ``deleted`` those whose deletion Userpilot accepted,
    ``deleted_before`` ids whose deletion Userpilot accepted in an earlier run (not requested
    again), ``deleted_ignored`` those left alone because ``hard_delete`` is off; ``superseded`` rows
    of an open batch that a later deletion of the same profile left out. Events:
    ``events_sent`` those Userpilot accepted, ``events_skipped`` those not sent because the
    ledger says Userpilot accepted them before (or this run already sent one with their key),
    ``events_unconfirmed`` those sent without a clear answer (a timeout or a 5xx after sending,
    or in an import file whose job Userpilot shows nowhere), not sent again since a second copy
    could count twice; an event Userpilot refused counts as ``rejected``.
    """

    object: str = "users"
    received: int = 0
    rows_sent: int = 0
    merged: int = 0
    unchanged: int = 0
    rejected: int = 0
    jobs: int = 0
    deleted: int = 0
    deleted_before: int = 0
    deleted_ignored: int = 0
    superseded: int = 0
    events_sent: int = 0
    events_skipped: int = 0
    events_unconfirmed: int = 0
    job_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def seconds(self) -> float:
        """From the stream's start to its last completed job (0 before any job ended)."""
        return 0.0 if self.finished is None else max(0.0, self.finished - self.started)


@dataclass
class RunSummary:
    """Counters per stream, changed by the reading thread and by every lane's threads.

    Every counter changes under the summary's one lock (:meth:`add`, :meth:`batch_done`,
    :meth:`deletions_done`), except ``received``, which only the reading thread changes (once
    per record, where a lock would cost the most) and everyone else only reads.
    """

    started: float = field(default_factory=time.monotonic)
    streams: dict[str, StreamTally] = field(default_factory=dict)
    dry_run: bool = False
    ended: float | None = None
    #: Userpilot's processing rate observed in this run's jobs (rows a minute), if any completed.
    userpilot_rate: float | None = None
    #: Userpilot's fixed time per job (seconds) learned from this run's jobs, if any completed.
    userpilot_job_seconds: float | None = None
    #: Jobs of the whole run and their time, each job once whatever streams shared it.
    jobs: int = 0
    #: Of ``jobs``, those of Import API files (``events_api: import``): events, not rows.
    event_jobs: int = 0
    job_seconds: float = 0.0
    #: What a stop left unsent (:meth:`left_unsent`): rows per object, deletions, events.
    unsent: dict[str, int] = field(default_factory=dict)
    #: Jobs of ours a stop left to Userpilot before their end was seen.
    jobs_left: list[str] = field(default_factory=list)
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

    def add(self, name: str, counter: str, n: int = 1, *, finished: bool = False) -> None:
        """Add ``n`` to ``counter`` of stream ``name`` (any thread); ``finished``: work of the
        stream just became durable, which moves the end of its time."""
        with self._lock:
            tally = self.streams.setdefault(name, StreamTally())
            setattr(tally, counter, getattr(tally, counter) + n)
            if finished:
                tally.finished = time.monotonic()

    def batch_done(self, batch: Any, seconds: float) -> None:
        """A batch's job completed (or the batch turned out empty): count it per stream.

        A batch holds rows of every stream that feeds its object; each stream counts its own rows
        and merged records, and the job once; the run counts the job once too.
        """
        rows = batch.rows_by_stream() if batch.rows else {}
        # An Import API file (events_api: import): its rows are events, its repeats skipped.
        events = batch.object == "events"
        with self._lock:
            if any(rows.values()):
                self.jobs += 1
                self.event_jobs += events
                self.job_seconds += seconds
            for name in set(rows) | set(batch.merged_by_stream):
                tally = self.streams.setdefault(name, StreamTally())
                if events:
                    tally.events_skipped += batch.merged_by_stream.get(name, 0)
                else:
                    tally.merged += batch.merged_by_stream.get(name, 0)
                if rows.get(name) and events:
                    tally.events_sent += rows[name]
                elif rows.get(name):
                    tally.rows_sent += rows[name]
                if rows.get(name):
                    tally.jobs += 1
                    tally.job_seconds += seconds
                    tally.finished = time.monotonic()

    def deletions_done(self, records_by_stream: dict[str, int]) -> None:
        """Userpilot accepted a deletion request: count its records per stream."""
        with self._lock:
            for name, count in records_by_stream.items():
                tally = self.streams.setdefault(name, StreamTally())
                tally.deleted += count
                tally.finished = time.monotonic()

    def deletions_remembered(self, ids_by_stream: dict[str, int]) -> None:
        """Ids whose deletion Userpilot accepted in an earlier run: not requested again."""
        with self._lock:
            for name, count in ids_by_stream.items():
                tally = self.streams.setdefault(name, StreamTally())
                tally.deleted_before += count

    def left_unsent(
        self,
        *,
        rows: dict[str, int],
        deletions: int,
        events: int,
        jobs_left: list[str],
    ) -> None:
        """The run stopped: what it never sent (rows per object, ids to delete, events), and
        the jobs of ours it stopped following. The rerun from the last STATE sends them."""
        with self._lock:
            unsent = {"users": 0, "companies": 0, "events": 0, "deletions": deletions}
            for object, count in rows.items():
                unsent[object] = unsent.get(object, 0) + count  # import files: events
            unsent["events"] += events
            self.unsent = unsent
            self.jobs_left = list(jobs_left)

    def as_dict(self, *, final: bool = True) -> dict[str, Any]:
        """Machine-readable form: per stream and in total.

        Per stream and in ``total``: the counters, ``seconds`` (see the module docstring),
        ``job_seconds`` (upload to completion, summed over jobs) and ``rows_per_minute``
        (rows sent per minute of ``seconds``). The total's ``jobs`` and ``job_seconds`` count
        each job once, so they can be less than the sum of the streams'. The first call fixes
        the run's end.
        """
        with self._lock:
            if self.ended is None and final:
                # The account is taken once: the table and the JSON line show the same times.
                self.ended = time.monotonic()
            elapsed = (self.ended or time.monotonic()) - self.started
            streams = {name: _stream_dict(tally) for name, tally in sorted(self.streams.items())}
        keys = [key for key, _ in COUNTERS + EVENT_COUNTERS] + list(DELETION_COUNTERS)
        total: dict[str, Any] = {key: sum(s[key] for s in streams.values()) for key in keys}
        # Streams sharing a batch each count its job: the sum would count it twice.
        total["jobs"] = self.jobs
        total["job_seconds"] = round(self.job_seconds, 3)
        total["seconds"] = round(elapsed, 3)
        total["rows_per_minute"] = _rate(total["rows_sent"], elapsed)
        with self._lock:
            unsent: dict[str, Any] = {"users": 0, "companies": 0, "events": 0, "deletions": 0}
            unsent.update(self.unsent)
            unsent["jobs_left_to_userpilot"] = list(self.jobs_left)
        return {
            "dry_run": self.dry_run,
            "seconds": round(elapsed, 3),
            "streams": streams,
            "total": total,
            "unsent": unsent,
            "userpilot_rows_per_minute": (
                None if self.userpilot_rate is None else round(self.userpilot_rate, 1)
            ),
            "userpilot_seconds_per_job": (
                None if self.userpilot_job_seconds is None else round(self.userpilot_job_seconds, 2)
            ),
        }

    def table(self, data: dict[str, Any] | None = None) -> str:
        """A small fixed-width table for people reading stderr, then :meth:`sentences`.

        ``data`` is :meth:`as_dict`'s, when the caller took it already.
        """
        data = data or self.as_dict()
        head = ["stream", "object"] + [title for _, title in COUNTERS] + ["time", "rows/min"]
        if self.dry_run:
            head[3] = "would send"
        # Deletion columns only in runs that met deleted records: most runs have none.
        extra = _deletion_columns(data["total"])
        at = 2 + len(COUNTERS) - 1  # before "jobs"
        head[at:at] = extra
        # Event columns, after "jobs", only in runs with an events stream.
        events = [
            (key, title)
            for key, title in EVENT_COUNTERS
            if any(s["object"] == "events" for s in data["streams"].values())
        ]
        after = 2 + len(COUNTERS) + len(extra)
        head[after:after] = [title for _, title in events]
        lines = [head]
        for name, s in [*data["streams"].items(), ("TOTAL", data["total"])]:
            line = _cells(name, s["object"] if name != "TOTAL" else "", s)
            line[at:at] = _deletion_cells(s, extra)
            line[after:after] = [str(s[key]) for key, _ in events]
            lines.append(line)
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        out = [
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
            for line in lines
        ]
        return "\n".join(out + self.sentences(data))

    def sentences(self, data: dict[str, Any] | None = None) -> list[str]:
        """What the run sent, refused and left, in sentences that name only what happened."""
        data = data or self.as_dict()
        total = data["total"]
        out = []
        # Import API files (events_api: import) are jobs too, but of events, not rows.
        row_jobs = total["jobs"] - self.event_jobs
        events = total["events_sent"] or total["events_skipped"]
        rows = total["rows_sent"] or row_jobs or not events
        if self.dry_run:
            if rows:
                out.append(
                    f"Dry run: nothing was sent to Userpilot. {count(total['rows_sent'], 'row')} "
                    f"would have been sent in {count(row_jobs, 'upload')}, written as files to "
                    "output_dir."
                )
            else:
                out.append("Dry run: nothing was sent to Userpilot.")
        else:
            took = duration(total["seconds"], tenths=True)
            if rows:
                out.append(
                    f"Sent {count(total['rows_sent'], 'row')} to Userpilot in "
                    f"{count(row_jobs, 'job')}, in {took}."
                )
            if events:
                jobs = f" in {count(self.event_jobs, 'import job')}" if self.event_jobs else ""
                skipped = (
                    f"; {total['events_skipped']} skipped as already sent"
                    if total["events_skipped"]
                    else ""
                )
                out.append(
                    f"Sent {count(total['events_sent'], 'event')} to Userpilot{jobs}{skipped}"
                    f"{'' if rows else f', in {took}'}."
                )
            unconfirmed = total["events_unconfirmed"]
            if unconfirmed:
                one = unconfirmed == 1
                out.append(
                    f"{count(unconfirmed, 'event')} got no clear answer from Userpilot (a "
                    "timeout or a server error after sending, or an import job it shows "
                    f"nowhere) and {'was' if one else 'were'} not sent again, since a second "
                    f"copy could count twice: {'it' if one else 'each'} is in Userpilot once or "
                    f"not at all, and a rerun does not send {'it' if one else 'them'}."
                )
            if total["deleted"]:
                out.append(
                    f"Userpilot accepted the deletion of {count(total['deleted'], 'profile')}"
                    " (erased at its next daily deletion run, 02:00 UTC)."
                )
            if data["userpilot_rows_per_minute"] is not None:
                out.append(
                    "Userpilot processed about "
                    f"{data['userpilot_rows_per_minute']:,.0f} rows a minute in this run's jobs, "
                    f"plus about {data['userpilot_seconds_per_job']:.1f} s per job."
                )
        if self.dry_run and total["events_sent"]:
            written = (
                f"as Import API files to output_dir (events-import-<n>.ndjson) in "
                f"{count(self.event_jobs, 'upload')}"
                if self.event_jobs
                else "as request bodies to output_dir (events-<n>.ndjson)"
            )
            out.append(
                f"Dry run: {count(total['events_sent'], 'event')} would have been sent, written "
                f"{written}."
            )
        if self.dry_run and total["deleted"]:
            out.append(
                f"Dry run: {count(total['deleted'], 'deletion')} would have been requested, "
                "written as files to output_dir."
            )
        left = _unsent_sentence(data["unsent"])
        if left:
            out.append(left)
        if total["deleted_ignored"]:
            out.append(
                f"{count(total['deleted_ignored'], 'record')} marked deleted in the source "
                "(_sdc_deleted_at) left alone: neither upserted nor deleted, as hard_delete is "
                "off."
            )
        return out

    def message(self, data: dict[str, Any] | None = None) -> str:
        """The summary in one line of prose, for the JSON record whose fields hold the numbers:
        each stream's counts that are not zero, then :meth:`sentences`."""
        data = data or self.as_dict()
        streams = [
            f"Stream '{name}' ({s['object']}): {_stream_counts(s, dry_run=self.dry_run)}."
            for name, s in data["streams"].items()
        ]
        return " ".join(["Summary:", *streams, *self.sentences(data)])

    def json_line(self, data: dict[str, Any] | None = None) -> str:
        """One line of JSON for schedulers, prefixed so it is easy to grep from stderr."""
        return "TARGET_USERPILOT_SUMMARY " + json.dumps(data or self.as_dict(), sort_keys=True)


def _stream_dict(tally: StreamTally) -> dict[str, Any]:
    seconds = tally.seconds()
    counts: dict[str, Any] = {"object": tally.object}
    counts.update({key: getattr(tally, key) for key, _ in COUNTERS})
    counts.update({key: getattr(tally, key) for key, _ in EVENT_COUNTERS})
    counts.update({key: getattr(tally, key) for key in DELETION_COUNTERS})
    counts["job_seconds"] = round(tally.job_seconds, 3)
    counts["seconds"] = round(seconds, 3)
    counts["rows_per_minute"] = _rate(tally.rows_sent, seconds)
    return counts


#: How each counter reads in the summary's one-line form (:meth:`RunSummary.message`): singular
#: and plural, in table order.
_PROSE = (
    ("received", "received", "received"),
    ("rows_sent", "row sent", "rows sent"),
    ("merged", "merged", "merged"),
    ("unchanged", "unchanged", "unchanged"),
    ("rejected", "rejected", "rejected"),
    ("deleted", "deleted", "deleted"),
    ("deleted_before", "deleted in an earlier run", "deleted in an earlier run"),
    ("deleted_ignored", "marked deleted, left alone", "marked deleted, left alone"),
    ("superseded", "superseded", "superseded"),
    ("jobs", "job", "jobs"),
    ("events_sent", "event sent", "events sent"),
    ("events_skipped", "already sent", "already sent"),
    ("events_unconfirmed", "unconfirmed", "unconfirmed"),
)


def _stream_counts(s: dict[str, Any], *, dry_run: bool) -> str:
    """``5 received, 5 rows sent, 1 job``: a stream's counters that are not zero."""
    parts = []
    for key, one, many in _PROSE:
        if s[key] or key == "received":
            if dry_run and key == "rows_sent":
                parts.append(count(s[key], "row would be sent", "rows would be sent"))
            elif dry_run and key == "jobs":
                parts.append(count(s[key], "upload"))
            else:
                parts.append(count(s[key], one, many))
    return ", ".join(parts)


def _rate(rows: int, seconds: float) -> float:
    """Rows per minute over ``seconds``; 0 when nothing was sent or no time passed."""
    return round(rows / seconds * 60, 1) if rows and seconds > 0 else 0.0


def _deletion_columns(total: dict[str, Any]) -> list[str]:
    """The deletion columns this run's table needs: none unless it met deleted records."""
    columns = []
    if total["deleted"] or total["deleted_ignored"] or total["deleted_before"]:
        columns.append("deleted")
    if total["superseded"]:
        columns.append("superseded")
    return columns


def _deletion_cells(s: dict[str, Any], columns: list[str]) -> list[str]:
    """``deleted`` reads ``3`` when requested, ``3 ignored`` when hard_delete left them alone."""
    cells = []
    if "deleted" in columns:
        others = s["deleted_ignored"] or s["deleted_before"]
        parts = [str(s["deleted"])] if s["deleted"] or not others else []
        if s["deleted_before"]:
            parts.append(f"{s['deleted_before']} earlier")
        if s["deleted_ignored"]:
            parts.append(f"{s['deleted_ignored']} ignored")
        cells.append(" + ".join(parts))
    if "superseded" in columns:
        cells.append(str(s["superseded"]))
    return cells


def _unsent_sentence(unsent: dict[str, Any]) -> str:
    """What a stop left unsent, in one sentence; empty when it left nothing."""
    parts = [
        count(unsent[object], f"{object} row")
        for object in ("users", "companies")
        if unsent.get(object)
    ]
    if unsent.get("events"):
        parts.append(count(unsent["events"], "event"))
    if unsent.get("deletions"):
        parts.append(count(unsent["deletions"], "deletion"))
    jobs = unsent.get("jobs_left_to_userpilot") or []
    if jobs:
        parts.append(
            f"{count(len(jobs), 'job')} of ours left to Userpilot before the run saw it end "
            f"({', '.join(jobs)}; no STATE went out for its rows)"
        )
    if not parts:
        return ""
    return (
        f"Left unsent when the run stopped: {'; '.join(parts)}. Rerun from the last STATE to "
        "send the rest."
    )


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 id``, ``2 ids``, ``0 ids``: a number and its noun, agreeing (``plural`` when the noun
    takes no plain ``s``: ``count(n, "entry", "entries")``)."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def duration(seconds: float, *, tenths: bool = False) -> str:
    """A duration for people: ``42 s`` (``41.7 s`` with tenths), ``5 min 03 s``, ``2 h 10 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s" if tenths else f"{round(seconds)} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _cells(name: str, object: str, s: dict[str, Any]) -> list[str]:
    return [
        name,
        object,
        *(str(s[key]) for key, _ in COUNTERS),
        duration(s["seconds"], tenths=True),
        f"{s['rows_per_minute']:.0f}",
    ]
