"""What the target tells people: numbers and nouns that agree, and sentences that say what was sent.

One helper, ``summary.count``, writes "1 id" and "2 ids" wherever a log line counts something.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from target_userpilot.summary import RunSummary, count


@pytest.mark.parametrize(
    ("n", "noun", "plural", "written"),
    [
        (0, "id", None, "0 ids"),
        (1, "id", None, "1 id"),
        (2, "id", None, "2 ids"),
        (1, "users row", None, "1 users row"),
        (3, "event request body", "event request bodies", "3 event request bodies"),
    ],
)
def test_a_count_agrees_with_its_number(
    n: int, noun: str, plural: str | None, written: str
) -> None:
    assert count(n, noun, plural) == written


@dataclass
class _Batch:
    """What ``RunSummary.batch_done`` reads of a batch whose job completed."""

    object: str
    rows_per_stream: dict[str, int]
    merged_by_stream: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(self.rows_per_stream.values())

    def rows_by_stream(self) -> dict[str, int]:
        return dict(self.rows_per_stream)


def _summary(*batches: _Batch, dry_run: bool = False) -> RunSummary:
    summary = RunSummary(dry_run=dry_run)
    for batch in batches:
        for name in batch.rows_per_stream:
            summary.stream(name, batch.object)
        summary.batch_done(batch, 1.0)
    return summary


def test_an_events_import_says_it_sent_events_not_zero_rows() -> None:
    summary = _summary(_Batch("events", {"events": 5}, {"events": 2}))

    sentences = summary.sentences()

    assert sentences[0].startswith(
        "Sent 5 events to Userpilot in 1 import job; 2 skipped as already sent, in "
    )
    assert not any("rows" in sentence for sentence in sentences)


def test_rows_and_imported_events_each_count_their_own_jobs() -> None:
    summary = _summary(_Batch("users", {"users": 3}), _Batch("events", {"events": 1}))

    sentences = summary.sentences()

    assert sentences[0].startswith("Sent 3 rows to Userpilot in 1 job, in ")
    assert sentences[1] == "Sent 1 event to Userpilot in 1 import job."


def test_a_dry_run_import_names_its_files_and_not_empty_row_uploads() -> None:
    summary = _summary(_Batch("events", {"events": 2}), dry_run=True)

    assert summary.sentences() == [
        "Dry run: nothing was sent to Userpilot.",
        "Dry run: 2 events would have been sent, written as Import API files to output_dir "
        "(events-import-<n>.ndjson) in 1 upload.",
    ]


def test_a_dry_runs_summary_record_says_would_and_uploads() -> None:
    summary = _summary(_Batch("users", {"users": 2}), dry_run=True)

    assert summary.message().startswith(
        "Summary: Stream 'users' (users): 0 received, 2 rows would be sent, 1 upload. Dry run: "
        "nothing was sent to Userpilot. 2 rows would have been sent in 1 upload"
    )


def test_a_run_with_nothing_to_send_still_says_so() -> None:
    summary = RunSummary()
    summary.stream("users", "users")

    assert summary.sentences()[0].startswith("Sent 0 rows to Userpilot in 0 jobs, in ")


def test_one_unconfirmed_event_reads_in_the_singular() -> None:
    summary = _summary(_Batch("users", {"users": 1}))
    summary.add("users", "events_unconfirmed")

    [unconfirmed] = [s for s in summary.sentences() if "no clear answer" in s]

    assert unconfirmed.startswith("1 event got no clear answer")
    assert "and was not sent again" in unconfirmed
    assert "it is in Userpilot once or not at all, and a rerun does not send it." in unconfirmed
