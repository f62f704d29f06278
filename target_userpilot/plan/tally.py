"""A plan's counts: per stream, what a real run would do with each record. Pure, no I/O.

Each record was decided once (``records/decide.py``); the planner hands the outcome here, with
what the ledger answered where a run's lanes would have asked it (a row's confirmed hash, an
event's key, an earlier deletion). The counts are kept in the words of the run's summary
(:meth:`StreamPlan.summary`), so a plan can be checked against the run that follows it.

Sample ids go to the plan file only (owner-only): the summary on stderr counts, never names.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from target_userpilot.memory.mirror import VersionEnd
from target_userpilot.records.decide import Outcome, StreamRules
from target_userpilot.summary import count

#: How a row stands against what Userpilot will hold once every earlier row is applied.
NEW, CHANGED, UNCHANGED = "new", "changed", "unchanged"
#: The pending mark of a profile this input deletes: Userpilot will hold nothing for it.
DELETED = b""
#: The plan file's format; a change that breaks a reader raises it.
PLAN_FORMAT = 1
#: The run's summary counters a plan predicts, in the summary's own names.
SUMMARY_COUNTERS = (
    "received",
    "rows_sent",
    "merged",
    "unchanged",
    "rejected",
    "deleted",
    "deleted_before",
    "deleted_ignored",
    "superseded",
    "events_sent",
    "events_skipped",
)


class PlanCounter(Protocol):
    """What a sink hands each record's outcome to in a plan (``planner.Planner``)."""

    @property
    def stopped(self) -> bool:
        """True once the real run would have stopped: later records are not counted."""
        ...

    def skip(self) -> None:
        """A message past the point where the run would stop."""
        ...

    def count(
        self, stream: str, rules: StreamRules, outcome: Outcome, position: int, seq: int
    ) -> None:
        """Count what record ``position`` of ``stream`` became."""
        ...


def compare_row(before: bytes | None, digest: bytes) -> str:
    """``skip_unchanged``'s comparison: a row's hash against the one Userpilot will hold.

    ``before`` is the hash of the profile's row earlier in this input, else the ledger's
    confirmed one; None (or :data:`DELETED`) when Userpilot will hold nothing for it.
    """
    if before is None or before == DELETED:
        return NEW
    return UNCHANGED if before == digest else CHANGED


@dataclass(frozen=True)
class PlanStop:
    """Where a real run would stop, and why (then the plan counts nothing after it)."""

    #: ``guard`` (mirror deletes), ``invalid record`` (``on_invalid_record: fail``), or
    #: ``nothing loaded`` (every record refused: the run fails at the end).
    kind: str
    stream: str
    reason: str


@dataclass
class StreamPlan:
    """What a real run would do with one stream's records."""

    object: str
    skip_unchanged: bool = False
    sample_ids: int = 5
    received: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    #: Rows of a profile sent earlier in this input, in another batch (sent again).
    repeated: int = 0
    #: Records folded into a later row of the same profile in one batch (the summary's).
    merged: int = 0
    #: Deletion records (``_sdc_deleted_at`` with ``hard_delete``), and ids a finished
    #: full-table version lacks; of both, those Userpilot accepted deleting in an earlier run.
    marked: int = 0
    mirrored: int = 0
    already_deleted: int = 0
    #: Records the source deleted, left alone with ``hard_delete`` off.
    deleted_ignored: int = 0
    #: Deletions whose profile had rows in the open batch: those rows are not sent.
    superseded: int = 0
    events_new: int = 0
    events_sent_before: int = 0
    #: Events whose key came earlier in this input: sent once.
    events_repeated: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    versions: list[VersionEnd] = field(default_factory=list)
    samples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, what: str, sample: str | None = None) -> None:
        """One more of ``what`` (a counter of this class), and maybe its id as a sample."""
        setattr(self, what, getattr(self, what) + 1)
        if sample is not None:
            self.sample(what, sample)

    def sample(self, what: str, sample: str) -> None:
        """Keep ``sample`` among the first distinct ones of ``what``, up to ``sample_ids``."""
        kept = self.samples.get(what)
        if kept is None:
            if self.sample_ids <= 0:
                return
            kept = self.samples[what] = []
        if len(kept) < self.sample_ids and sample not in kept:
            kept.append(sample)

    def row(self, standing: str, row_id: str, *, repeated: bool) -> None:
        """A profile row, compared as ``skip_unchanged`` compares it (:func:`compare_row`)."""
        self.note(standing, row_id)
        if repeated:
            self.note("repeated", row_id)

    def reject(self, reason: str, sample: str) -> None:
        """A record the run would refuse, and why."""
        self.note("rejected", sample)
        self.reasons[reason] += 1

    @property
    def rows_sent(self) -> int:
        """Rows the run uploads: unchanged ones too unless ``skip_unchanged`` is on."""
        return self.new + self.changed + (0 if self.skip_unchanged else self.unchanged)

    @property
    def deleted(self) -> int:
        """Deletions the run asks Userpilot for."""
        return self.marked + self.mirrored - self.already_deleted

    def summary(self) -> dict[str, int]:
        """The counters of the run's summary this plan predicts (``summary.py``'s names)."""
        return {
            "received": self.received,
            "rows_sent": self.rows_sent,
            "merged": self.merged,
            "unchanged": self.unchanged if self.skip_unchanged else 0,
            "rejected": self.rejected,
            "deleted": self.deleted,
            "deleted_before": self.already_deleted,
            "deleted_ignored": self.deleted_ignored,
            "superseded": self.superseded,
            "events_sent": self.events_new,
            "events_skipped": self.events_sent_before + self.events_repeated,
        }

    def as_dict(self) -> dict[str, Any]:
        """The stream's part of the plan file."""
        return {
            "object": self.object,
            "received": self.received,
            "profiles": {
                "new": self.new,
                "changed": self.changed,
                "unchanged": self.unchanged,
                "repeated": self.repeated,
                "merged": self.merged,
                "to_send": self.rows_sent,
            },
            "deletions": {
                "marked": self.marked,
                "mirror": self.mirrored,
                "already_deleted": self.already_deleted,
                "to_delete": self.deleted,
                "ignored": self.deleted_ignored,
                "superseded": self.superseded,
            },
            "versions": [version_verdict(end) for end in self.versions],
            "events": {
                "new": self.events_new,
                "already_sent": self.events_sent_before,
                "repeated": self.events_repeated,
            },
            "rejected": {"count": self.rejected, "reasons": dict(self.reasons.most_common())},
            "samples": {what: list(ids) for what, ids in self.samples.items()},
            "summary": self.summary(),
        }


def version_verdict(end: VersionEnd) -> dict[str, Any]:
    """A finished version in the plan file: its counts and the guard's verdict."""
    if not end.missing:
        verdict = "nothing to delete"
    elif end.stops:
        verdict = "would stop the run"
    else:
        verdict = "would delete"
    return {
        "version": end.version,
        "known": end.known,
        "lacks": end.missing,
        "held_elsewhere": end.held,
        "percent": round(100 * end.missing / end.known, 1) if end.known else 0.0,
        "allowed": end.allowed,
        "verdict": verdict,
    }


@dataclass
class PlanTally:
    """The whole plan: every stream's counts, where the run would stop, what the plan read."""

    sample_ids: int = 5
    skip_unchanged: bool = False
    #: The ledger read (its description, never a password), or None: none yet.
    ledger: str | None = None
    streams: dict[str, StreamPlan] = field(default_factory=dict)
    stop: PlanStop | None = None
    #: Messages after the point where the run would stop: read, not counted.
    after_stop: int = 0
    #: STATE messages read: a plan writes none.
    states: int = 0

    def stream(self, name: str, object: str) -> StreamPlan:
        """The plan of stream ``name``, made on first use."""
        plan = self.streams.get(name)
        if plan is None:
            plan = self.streams[name] = StreamPlan(
                object, skip_unchanged=self.skip_unchanged, sample_ids=self.sample_ids
            )
        return plan

    def total(self) -> dict[str, int]:
        """The run summary's counters over every stream."""
        total = dict.fromkeys(SUMMARY_COUNTERS, 0)
        for plan in self.streams.values():
            for name, value in plan.summary().items():
                total[name] += value
        return total

    def as_dict(self) -> dict[str, Any]:
        """The plan file's content."""
        stop = self.stop
        return {
            "plan_format": PLAN_FORMAT,
            "ledger": self.ledger,
            "skip_unchanged": self.skip_unchanged,
            "outcome": {
                "completes": stop is None,
                "stops": None
                if stop is None
                else {"kind": stop.kind, "stream": stop.stream, "reason": stop.reason},
                "messages_after_stop": self.after_stop,
            },
            "state_messages": self.states,
            "streams": {name: plan.as_dict() for name, plan in sorted(self.streams.items())},
            "total": self.total(),
        }

    def lines(self) -> list[str]:
        """The plan's summary for stderr: counts per stream, the guard, how the run would end."""
        lines = ["Plan: what a real run would do with this input (nothing was sent or written)."]
        if self.ledger is None:
            lines.append(
                "  No ledger yet (a first run): every profile and event counts as new, and no "
                "deletion as already done."
            )
        for name, plan in sorted(self.streams.items()):
            lines.extend(_stream_lines(name, plan))
        if self.stop is not None:
            lines.append(f"  The run would stop: {self.stop.reason}")
            if self.after_stop:
                lines.append(
                    f"  {count(self.after_stop, 'message')} after that point were read but not "
                    "counted: the run would not reach them."
                )
        else:
            lines.append("  The run would complete.")
        return lines


def _stream_lines(name: str, plan: StreamPlan) -> list[str]:
    """One line per stream, and one per finished full-table version."""
    parts: list[str] = []
    if plan.new or plan.changed or plan.unchanged:
        unchanged = f"{plan.unchanged:,} unchanged"
        if plan.unchanged and not plan.skip_unchanged:
            unchanged += " (sent all the same: skip_unchanged is off)"
        parts.append(f"{plan.new:,} new, {plan.changed:,} changed, {unchanged}")
    if plan.marked or plan.mirrored:
        what = f"{plan.deleted:,} to delete"
        if plan.already_deleted:
            what += f" ({plan.already_deleted:,} deleted in an earlier run, not asked again)"
        parts.append(what)
    if plan.deleted_ignored:
        parts.append(
            f"{plan.deleted_ignored:,} deleted in the source, left alone (hard_delete off)"
        )
    if plan.events_new or plan.events_sent_before or plan.events_repeated:
        parts.append(
            f"{count(plan.events_new, 'event')} to send, "
            f"{plan.events_sent_before + plan.events_repeated:,} already sent"
        )
    if plan.rejected:
        reasons = "; ".join(f"{n:,}: {reason}" for reason, n in plan.reasons.most_common(3))
        parts.append(f"{plan.rejected:,} rejected ({reasons})")
    head = f"  {name} ({plan.object}): {count(plan.received, 'record')}"
    lines = [head + (": " + "; ".join(parts) if parts else "") + "."]
    for end in plan.versions:
        verdict = version_verdict(end)
        lines.append(
            f"    full-table version {end.version} lacks {end.missing:,} of its {end.known:,} "
            f"{end.object} ({verdict['percent']} %, the guard allows {end.allowed:,}): "
            f"{verdict['verdict']}."
        )
    return lines
