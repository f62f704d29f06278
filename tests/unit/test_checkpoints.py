"""Held-back STATE: a STATE goes out only once every record before it is durable.

The checkpoints alone, STATE written to a list; in a real run: ``tests/integration/`` and
``tests/e2e/test_checkpoints_process.py`` (stdout closed by its reader).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from target_userpilot.checkpoints import Checkpoints, Hold


def make_checkpoints() -> tuple[Checkpoints, list[dict[str, Any]]]:
    written: list[dict[str, Any]] = []
    return Checkpoints(written.append), written


def receive(checkpoints: Checkpoints, count: int) -> list[int]:
    """Number ``count`` records as the reading thread would."""
    return [checkpoints.record() for _ in range(count)]


def test_records_are_numbered_in_arrival_order() -> None:
    checkpoints, _ = make_checkpoints()

    assert receive(checkpoints, 3) == [0, 1, 2]
    assert checkpoints.next_seq == 3


def test_state_with_no_records_before_it_goes_out_at_once() -> None:
    checkpoints, written = make_checkpoints()

    checkpoints.add_state({"bookmark": 0})

    assert written == [{"bookmark": 0}]
    assert checkpoints.pending == 0
    assert checkpoints.written == 1


def test_state_after_unheld_records_goes_out_at_once() -> None:
    checkpoints, written = make_checkpoints()
    receive(checkpoints, 3)

    checkpoints.add_state({"bookmark": 3})

    assert written == [{"bookmark": 3}]


def test_state_waits_while_a_hold_covers_a_record_before_it() -> None:
    checkpoints, written = make_checkpoints()
    first = receive(checkpoints, 2)[0]
    token = checkpoints.hold(first)

    checkpoints.add_state({"bookmark": 2})

    assert written == []
    assert checkpoints.pending == 1

    checkpoints.release(token)

    assert written == [{"bookmark": 2}]
    assert checkpoints.pending == 0


def test_hold_on_the_last_record_before_a_state_blocks_it() -> None:
    checkpoints, written = make_checkpoints()
    seqs = receive(checkpoints, 3)
    checkpoints.hold(seqs[-1])

    checkpoints.add_state({"bookmark": 3})

    assert written == []


def test_hold_on_records_after_a_state_does_not_block_it() -> None:
    checkpoints, written = make_checkpoints()
    first_batch = checkpoints.hold(receive(checkpoints, 2)[0])
    checkpoints.add_state({"bookmark": 2})
    second_batch = checkpoints.hold(receive(checkpoints, 2)[0])
    checkpoints.add_state({"bookmark": 4})

    checkpoints.release(first_batch)

    assert written == [{"bookmark": 2}]
    assert checkpoints.pending == 1

    checkpoints.release(second_batch)

    assert written == [{"bookmark": 2}, {"bookmark": 4}]


def test_hold_opened_at_the_next_record_does_not_block_an_earlier_state() -> None:
    checkpoints, written = make_checkpoints()
    token = checkpoints.hold(receive(checkpoints, 1)[0])
    checkpoints.add_state({"bookmark": 1})
    checkpoints.hold(checkpoints.next_seq)

    checkpoints.release(token)

    assert written == [{"bookmark": 1}]


def test_only_the_newest_releasable_state_is_written() -> None:
    checkpoints, written = make_checkpoints()
    token = checkpoints.hold(receive(checkpoints, 1)[0])
    for n in (1, 2, 3):
        receive(checkpoints, 1)
        checkpoints.add_state({"bookmark": n})
    assert written == []
    assert checkpoints.pending == 3

    checkpoints.release(token)

    assert written == [{"bookmark": 3}]
    assert checkpoints.written == 1
    assert checkpoints.pending == 0


def test_newest_releasable_state_stops_before_one_still_held() -> None:
    checkpoints, written = make_checkpoints()
    early = checkpoints.hold(receive(checkpoints, 1)[0])
    checkpoints.add_state({"bookmark": "a"})
    checkpoints.add_state({"bookmark": "b"})
    checkpoints.hold(receive(checkpoints, 1)[0])
    checkpoints.add_state({"bookmark": "c"})

    checkpoints.release(early)

    assert written == [{"bookmark": "b"}]
    assert checkpoints.pending == 1


def test_holds_released_out_of_order() -> None:
    checkpoints, written = make_checkpoints()
    tokens = []
    for n in (1, 2, 3):
        tokens.append(checkpoints.hold(receive(checkpoints, 1)[0]))
        checkpoints.add_state({"bookmark": n})

    checkpoints.release(tokens[2])
    assert written == []

    checkpoints.release(tokens[1])
    assert written == []

    checkpoints.release(tokens[0])
    assert written == [{"bookmark": 3}]


def test_releasing_a_middle_hold_writes_nothing_while_an_earlier_one_remains() -> None:
    checkpoints, written = make_checkpoints()
    first = checkpoints.hold(receive(checkpoints, 1)[0])
    checkpoints.add_state({"bookmark": 1})
    second = checkpoints.hold(receive(checkpoints, 1)[0])
    checkpoints.add_state({"bookmark": 2})

    checkpoints.release(second)
    assert written == []

    checkpoints.release(first)
    assert written == [{"bookmark": 2}]


def test_two_holds_on_the_same_record_both_must_be_released() -> None:
    checkpoints, written = make_checkpoints()
    first = receive(checkpoints, 1)[0]
    users = checkpoints.hold(first)
    companies = checkpoints.hold(first)
    checkpoints.add_state({"bookmark": 1})

    checkpoints.release(users)
    assert written == []

    checkpoints.release(companies)
    assert written == [{"bookmark": 1}]


def test_release_none_is_a_no_op() -> None:
    checkpoints, written = make_checkpoints()
    checkpoints.hold(receive(checkpoints, 1)[0])
    checkpoints.add_state({"bookmark": 1})

    checkpoints.release(None)

    assert written == []
    assert checkpoints.pending == 1


def test_releasing_a_token_twice_writes_nothing_more() -> None:
    checkpoints, written = make_checkpoints()
    token = checkpoints.hold(receive(checkpoints, 1)[0])
    checkpoints.add_state({"bookmark": 1})
    checkpoints.release(token)

    checkpoints.release(token)

    assert written == [{"bookmark": 1}]
    assert checkpoints.written == 1


def test_holds_released_from_another_thread_release_state() -> None:
    checkpoints, written = make_checkpoints()
    tokens: list[Hold] = []
    for n in range(1, 201):
        tokens.append(checkpoints.hold(receive(checkpoints, 1)[0]))
        checkpoints.add_state({"bookmark": n})
    assert written == []

    def release(part: list[Hold]) -> None:
        for token in part:
            checkpoints.release(token)

    workers = [
        threading.Thread(target=release, args=(part,))
        for part in (tokens[0::4], tokens[1::4], tokens[2::4], tokens[3::4])
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)

    assert not any(worker.is_alive() for worker in workers)
    assert written[-1] == {"bookmark": 200}
    bookmarks = [state["bookmark"] for state in written]
    assert bookmarks == sorted(set(bookmarks))
    assert checkpoints.pending == 0


def test_reading_thread_and_release_thread_interleave_safely() -> None:
    checkpoints, written = make_checkpoints()
    released = threading.Event()
    tokens: list[Hold] = []
    ready = threading.Semaphore(0)

    def release_all() -> None:
        for _ in range(100):
            ready.acquire()
            checkpoints.release(tokens.pop(0))
        released.set()

    worker = threading.Thread(target=release_all)
    worker.start()
    for n in range(1, 101):
        tokens.append(checkpoints.hold(receive(checkpoints, 1)[0]))
        checkpoints.add_state({"bookmark": n})
        ready.release()
    worker.join(timeout=30)

    assert released.is_set()
    assert written
    assert written[-1] == {"bookmark": 100}
    bookmarks = [state["bookmark"] for state in written]
    assert bookmarks == sorted(set(bookmarks))
    assert checkpoints.pending == 0


# STATE messages as the target writes them (issue 9 items 13 and 16)


def test_what_must_be_recorded_before_a_state_is_recorded_before_it_goes_out() -> None:
    checkpoints, written = make_checkpoints()
    bounds: list[int] = []

    def record_first(upto: int) -> None:
        assert written == []  # called before the STATE is written
        bounds.append(upto)

    checkpoints.before_write = record_first
    receive(checkpoints, 2)
    hold = checkpoints.hold(1)
    checkpoints.add_state({"n": 1})
    receive(checkpoints, 1)
    checkpoints.add_state({"n": 2})
    assert bounds == []

    checkpoints.release(hold)

    assert written == [{"n": 2}]
    assert bounds == [3]  # the newest STATE going out covers the records numbered below 3


def test_a_state_whose_records_could_not_be_recorded_is_not_written() -> None:
    checkpoints, written = make_checkpoints()

    def ledger_lost(upto: int) -> None:
        raise RuntimeError("the ledger is gone")

    checkpoints.before_write = ledger_lost
    receive(checkpoints, 1)
    with pytest.raises(RuntimeError):
        checkpoints.add_state({"n": 1})
    assert written == []

    checkpoints.before_write = None
    checkpoints.add_state({"n": 2})

    assert written == [{"n": 2}]
    assert checkpoints.pending == 0
