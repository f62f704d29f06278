"""Spooled batch files: limits, in-batch merge on seal, and splitting for HTTP 413."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.batching.batch import BatchFile, SealedBatch
from target_userpilot.batching.halves import first_half
from target_userpilot.records.rows import encode_row


def user_line(user_id: str, company_id: str | None = None, **metadata: object) -> bytes:
    row: dict[str, Any] = {"user_id": user_id}
    if company_id is not None:
        row["company_id"] = company_id
    row["metadata"] = metadata
    return encode_row(row)


def open_batch(
    tmp_path: Path,
    *,
    max_rows: int = 100,
    max_bytes: int = 1_000_000,
    hold: object = None,
    obj: str = "users",
) -> BatchFile:
    return BatchFile(
        obj, "people", max_rows=max_rows, max_bytes=max_bytes, spool_dir=str(tmp_path), hold=hold
    )


def file_lines(path: str) -> list[bytes]:
    with open(path, "rb") as handle:
        return handle.readlines()


def spooled(tmp_path: Path) -> list[str]:
    return sorted(os.listdir(tmp_path))


# Limits


def test_first_row_always_fits_even_past_the_byte_limit(tmp_path: Path) -> None:
    batch = open_batch(tmp_path, max_bytes=10)
    line = user_line("u1", name="a name much longer than ten bytes")

    assert batch.fits("u1", line)
    batch.add("u1", line)
    assert batch.bytes == len(line)
    assert not batch.fits("u2", user_line("u2"))


def test_row_limit_counts_distinct_ids(tmp_path: Path) -> None:
    batch = open_batch(tmp_path, max_rows=2)
    for user_id in ("u1", "u1", "u2", "u1", "u2"):
        line = user_line(user_id)
        assert batch.fits(user_id, line)
        batch.add(user_id, line)

    assert batch.rows == 2
    assert batch.records == 5
    assert batch.full
    assert not batch.fits("u3", user_line("u3"))
    assert batch.fits("u1", user_line("u1", plan="pro"))


def test_batch_is_not_full_below_the_row_limit(tmp_path: Path) -> None:
    batch = open_batch(tmp_path, max_rows=3)
    for user_id in ("u1", "u2", "u2", "u2"):
        batch.add(user_id, user_line(user_id))

    assert not batch.full
    assert batch.fits("u3", user_line("u3"))


def test_byte_limit_allows_exactly_the_limit_and_not_one_byte_more(tmp_path: Path) -> None:
    first = user_line("u1")
    second = user_line("u2")
    exact = open_batch(tmp_path, max_bytes=len(first) + len(second))
    short = open_batch(tmp_path, max_bytes=len(first) + len(second) - 1)
    exact.add("u1", first)
    short.add("u1", first)

    assert exact.fits("u2", second)
    assert not short.fits("u2", second)


def test_byte_limit_applies_to_repeated_ids_too(tmp_path: Path) -> None:
    first = user_line("u1", plan="free")
    again = user_line("u1", plan="pro")
    batch = open_batch(tmp_path, max_bytes=len(first) + len(again) - 1)
    batch.add("u1", first)

    assert not batch.fits("u1", again)


# Sealing


def test_seal_without_duplicates_keeps_every_line_in_order(tmp_path: Path) -> None:
    batch = open_batch(tmp_path, hold="h")
    lines = [user_line(f"u{i}", name=f"n{i}") for i in range(5)]
    for i, line in enumerate(lines):
        batch.add(f"u{i}", line)

    sealed = batch.seal()

    assert file_lines(sealed.path) == lines
    assert (sealed.object, sealed.stream) == ("users", "people")
    assert sealed.rows == 5
    assert sealed.merged == 0
    assert sealed.hold == "h"
    assert sealed.bytes == sum(len(line) for line in lines)
    assert sealed.bytes == os.path.getsize(sealed.path)


def test_seal_merges_rows_sharing_an_id_later_values_winning(tmp_path: Path) -> None:
    batch = open_batch(tmp_path)
    adds = [
        ("u1", user_line("u1", "c1", name="Ann", plan="free")),
        ("u2", user_line("u2", name="Bob")),
        ("u1", user_line("u1", plan="pro", seats=3)),
        ("u3", user_line("u3", name="Cy")),
        ("u1", user_line("u1", "c2", seats=None)),
        ("u2", user_line("u2", name="Bobby")),
    ]
    for row_id, line in adds:
        batch.add(row_id, line)

    sealed = batch.seal()
    rows = [json.loads(line) for line in file_lines(sealed.path)]

    by_id = {row["user_id"]: row for row in rows}
    assert sorted(row["user_id"] for row in rows) == ["u1", "u2", "u3"]
    assert by_id["u1"] == {
        "user_id": "u1",
        "company_id": "c2",
        "metadata": {"name": "Ann", "plan": "pro", "seats": None},
    }
    assert by_id["u2"] == {"user_id": "u2", "metadata": {"name": "Bobby"}}
    assert by_id["u3"] == {"user_id": "u3", "metadata": {"name": "Cy"}}
    assert sealed.rows == 3
    assert sealed.merged == 3


def test_merge_keeps_earlier_company_when_later_rows_have_none(tmp_path: Path) -> None:
    batch = open_batch(tmp_path)
    batch.add("u1", user_line("u1", "c1", a=1))
    batch.add("u1", user_line("u1", b=2))

    sealed = batch.seal()

    assert [json.loads(line) for line in file_lines(sealed.path)] == [
        {"user_id": "u1", "company_id": "c1", "metadata": {"a": 1, "b": 2}}
    ]


def test_merged_company_batch_has_one_line_per_company_id(tmp_path: Path) -> None:
    batch = open_batch(tmp_path, obj="companies")
    for company_id, name in (("c1", "A"), ("c2", "B"), ("c1", "A2")):
        batch.add(company_id, encode_row({"company_id": company_id, "metadata": {"name": name}}))

    sealed = batch.seal()
    rows = [json.loads(line) for line in file_lines(sealed.path)]

    assert sorted(rows, key=lambda row: row["company_id"]) == [
        {"company_id": "c1", "metadata": {"name": "A2"}},
        {"company_id": "c2", "metadata": {"name": "B"}},
    ]
    assert sealed.merged == 1


def test_sealed_bytes_equal_file_size_after_merge(tmp_path: Path) -> None:
    batch = open_batch(tmp_path)
    for i in range(20):
        user_id = f"u{i % 4}"
        batch.add(user_id, user_line(user_id, step=i, note="é" * i))

    sealed = batch.seal()

    assert sealed.bytes == os.path.getsize(sealed.path)
    assert sealed.bytes < batch.bytes
    assert len(file_lines(sealed.path)) == sealed.rows == 4


def test_sealed_file_is_compact_utf8_ndjson(tmp_path: Path) -> None:
    batch = open_batch(tmp_path)
    batch.add("u1", user_line("u1", city="Zürich"))
    batch.add("u1", user_line("u1", name="Zoë"))

    sealed = batch.seal()

    with open(sealed.path, "rb") as handle:
        content = handle.read()
    assert content == '{"user_id":"u1","metadata":{"city":"Zürich","name":"Zoë"}}\n'.encode()


def test_batch_files_are_spooled_in_spool_dir(tmp_path: Path) -> None:
    batch = open_batch(tmp_path)
    batch.add("u1", user_line("u1"))
    batch.add("u1", user_line("u1"))

    sealed = batch.seal()

    assert os.path.dirname(sealed.path) == str(tmp_path)
    assert spooled(tmp_path) == [os.path.basename(sealed.path)]


# Splitting and discarding


def sealed_batch(
    tmp_path: Path, count: int, *, hold: object = "h"
) -> tuple[SealedBatch, list[bytes]]:
    batch = open_batch(tmp_path, hold=hold)
    lines = [user_line(f"u{i}", n=i) for i in range(count)]
    for i, line in enumerate(lines):
        batch.add(f"u{i}", line)
    return batch.seal(), lines


@pytest.mark.parametrize("count", [2, 3, 7, 10])
def test_split_gives_two_halves_preserving_all_lines_in_order(tmp_path: Path, count: int) -> None:
    sealed, lines = sealed_batch(tmp_path, count)

    first, second = sealed.split(str(tmp_path))

    first_lines = file_lines(first.path)
    second_lines = file_lines(second.path)
    assert first_lines + second_lines == lines
    assert len(first_lines) == count // 2
    assert len(second_lines) == count - count // 2
    assert (first.rows, second.rows) == (len(first_lines), len(second_lines))
    assert first.bytes == os.path.getsize(first.path)
    assert second.bytes == os.path.getsize(second.path)
    assert (first.object, first.stream) == (second.object, second.stream) == ("users", "people")


def test_only_the_second_half_keeps_the_hold(tmp_path: Path) -> None:
    sealed, _ = sealed_batch(tmp_path, 4, hold=17)

    first, second = sealed.split(str(tmp_path))

    assert first.hold is None
    assert second.hold == 17


def test_split_removes_the_original_file(tmp_path: Path) -> None:
    sealed, _ = sealed_batch(tmp_path, 4)

    first, second = sealed.split(str(tmp_path))

    assert not os.path.exists(sealed.path)
    assert spooled(tmp_path) == sorted(
        [os.path.basename(first.path), os.path.basename(second.path)]
    )


def test_split_halves_can_be_split_again(tmp_path: Path) -> None:
    sealed, lines = sealed_batch(tmp_path, 5, hold="h")

    first, second = sealed.split(str(tmp_path))
    third, fourth = second.split(str(tmp_path))

    assert file_lines(first.path) + file_lines(third.path) + file_lines(fourth.path) == lines
    assert (third.hold, fourth.hold) == (None, "h")
    assert len(spooled(tmp_path)) == 3


def test_sealed_discard_removes_the_file_and_tolerates_repeats(tmp_path: Path) -> None:
    sealed, _ = sealed_batch(tmp_path, 2)

    sealed.discard()
    sealed.discard()

    assert not os.path.exists(sealed.path)
    assert spooled(tmp_path) == []


def test_open_batch_discard_removes_the_file(tmp_path: Path) -> None:
    batch = open_batch(tmp_path)
    batch.add("u1", user_line("u1"))
    assert len(spooled(tmp_path)) == 1

    batch.discard()

    assert spooled(tmp_path) == []


# One answer to HTTP 413 for every lane (batching/halves.py)


@pytest.mark.parametrize(("count", "first"), [(2, 1), (3, 1), (7, 3), (1000, 500)])
def test_what_was_refused_goes_again_in_two_halves(count: int, first: int) -> None:
    assert first_half(count) == first


@pytest.mark.parametrize("count", [1, 0])
def test_a_single_item_refused_cannot_be_halved(count: int) -> None:
    assert first_half(count) is None


def test_a_batch_of_one_row_is_not_split(tmp_path: Path) -> None:
    sealed, _ = sealed_batch(tmp_path, 1)

    with pytest.raises(ValueError, match="one row"):
        sealed.split(str(tmp_path))
