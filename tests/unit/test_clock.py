"""The clocks every wait goes through (clock.py): the real one, and the simulated one tests use.

The simulated clock's promise: time stands still while a thread that takes part works, jumps to
the earliest deadline once all of them wait, and a wait ends early when its event is set or its
condition notified, exactly as a real wait would. No test here asserts a wall-clock duration.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from target_userpilot.clock import REAL_CLOCK, SimulatedClock, wait_until

T = TypeVar("T")


def _in_thread(work: Callable[[], T]) -> tuple[threading.Thread, list[T]]:
    """Run ``work`` on a thread of its own; its result lands in the list."""
    out: list[T] = []
    thread = threading.Thread(target=lambda: out.append(work()), daemon=True)
    thread.start()
    return thread, out


def test_the_real_clock_waits_as_the_event_does() -> None:
    event = threading.Event()

    assert REAL_CLOCK.wait(event, 0.01) is False
    assert REAL_CLOCK.wait(event, -1.0) is False  # a negative time waits not at all
    event.set()
    assert REAL_CLOCK.wait(event, 60) is True
    assert REAL_CLOCK.now() <= time.monotonic()


def test_a_simulated_wait_returns_after_its_time_in_simulated_seconds() -> None:
    clock = SimulatedClock(100.0)

    assert clock.wait(threading.Event(), 30.0) is False
    assert clock.now() == pytest.approx(130.0)
    assert clock.stalls == 0


def test_simulated_time_stands_still_while_a_thread_that_takes_part_works() -> None:
    clock = SimulatedClock()  # this thread takes part: it made the clock
    waiter, woke_at = _in_thread(lambda: (clock.wait(threading.Event(), 10.0), clock.now()))

    time.sleep(0.1)  # what is tested: no simulated time passes while this thread works
    assert clock.now() == 0.0
    assert waiter.is_alive()

    clock.sleep(20.0)  # now every thread that takes part waits: the earliest deadline first
    waiter.join(5)
    assert woke_at == [(False, 10.0)]
    assert clock.now() == pytest.approx(20.0)


def test_the_earliest_deadline_comes_first() -> None:
    clock = SimulatedClock()
    order: list[tuple[str, float]] = []
    lock = threading.Lock()

    def sleeper(name: str, seconds: float) -> None:
        clock.sleep(seconds)
        with lock:
            order.append((name, clock.now()))

    threads = [
        threading.Thread(target=sleeper, args=("late", 5.0), daemon=True),
        threading.Thread(target=sleeper, args=("early", 3.0), daemon=True),
    ]
    for thread in threads:
        thread.start()
    clock.sleep(6.0)
    for thread in threads:
        thread.join(5)

    assert order == [("early", 3.0), ("late", 5.0)]


def test_a_set_event_ends_a_simulated_wait_early() -> None:
    clock = SimulatedClock()
    stop = threading.Event()
    waiter, result = _in_thread(lambda: (clock.wait(stop, 3600.0), clock.now()))

    clock.sleep(1.0)
    stop.set()
    waiter.join(5)

    assert result == [(True, 1.0)]


def test_a_notified_condition_ends_a_simulated_wait_early_and_time_waits_for_it() -> None:
    """A thread notified by another must run before time jumps, as it would in real time."""
    clock = SimulatedClock()
    cond = threading.Condition()
    ready: list[int] = []
    seen: list[tuple[list[int], float]] = []

    def consumer() -> None:
        with cond:
            while not ready:
                clock.wait(cond, 60.0)
            seen.append((list(ready), clock.now()))

    thread = threading.Thread(target=consumer, daemon=True)
    thread.start()
    clock.sleep(2.0)
    with cond:
        ready.append(1)
        cond.notify_all()
    clock.sleep(100.0)  # the consumer must have run at 2.0, not at its deadline of 60
    thread.join(5)

    assert seen == [([1], 2.0)]


def test_a_thread_blocked_outside_the_clock_stalls_it_and_is_counted() -> None:
    """A wait the clock cannot see: time goes on after stall_seconds, and the test can tell."""
    clock = SimulatedClock(stall_seconds=0.2)
    blocker = threading.Event()
    joined = threading.Event()

    def blocked() -> None:
        clock.take_part()
        joined.set()
        blocker.wait(10)  # not through the clock

    thread = threading.Thread(target=blocked, daemon=True)
    thread.start()
    assert joined.wait(5)
    try:
        clock.sleep(1.0)
    finally:
        blocker.set()
        thread.join(5)

    assert clock.now() == pytest.approx(1.0)
    assert clock.stalls >= 1


def test_a_thread_that_left_the_clock_does_not_hold_it() -> None:
    clock = SimulatedClock()
    ended = threading.Event()

    def busy_elsewhere() -> None:
        clock.take_part()
        clock.leave()
        ended.wait(10)

    thread = threading.Thread(target=busy_elsewhere, daemon=True)
    thread.start()
    try:
        clock.sleep(5.0)
    finally:
        ended.set()
        thread.join(5)

    assert clock.now() == pytest.approx(5.0)
    assert clock.stalls == 0


def test_wait_until_ends_when_done_when_given_up_or_at_its_time() -> None:
    clock = SimulatedClock()
    cond = threading.Condition()
    state = {"done": False, "quit": False}

    def flip(key: str) -> None:
        with cond:
            state[key] = True
            cond.notify_all()

    with cond:
        assert wait_until(clock, cond, lambda: state["done"], 30.0) is False
    assert clock.now() == pytest.approx(30.0)  # the timeout, in simulated seconds

    timer = threading.Timer(0.05, flip, ("quit",))
    timer.start()
    with cond:
        # No timeout: only the notified give_up ends it.
        assert (
            wait_until(clock, cond, lambda: state["done"], give_up=lambda: state["quit"]) is False
        )
    timer.join()

    flip("done")
    with cond:
        assert wait_until(clock, cond, lambda: state["done"], 0.0, give_up=lambda: True) is True
