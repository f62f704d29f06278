"""The retry policy alone (retry.py): no sockets, and no real waiting except where a real stop
event is the point.

``backoff`` still decides how many tries and for how long; every pause before a retry is
waited on the caller's stop, so a stop ends it at once and no call follows. A stop that
records its waits and returns at once stands for time passing (simulated time).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from target_userpilot.clock import SimulatedClock
from target_userpilot.errors import (
    JobConflict,
    TransientError,
    Unconfirmed,
    UnexpectedAnswer,
    WaitInterrupted,
)
from target_userpilot.lanes.pace import SLOW_DOWN, EventPace
from target_userpilot.retry import RetryPolicy
from target_userpilot.userpilot.transport import parse_retry_after

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

POLICY = RetryPolicy(base_seconds=0.5, max_seconds=30.0, max_tries=5, poll_max_time=300.0)


class SimulatedStop:
    """A stop whose waits return at once; ``set_after`` waits in, the stop comes (True)."""

    def __init__(self, set_after: int | None = None) -> None:
        self.waits: list[float] = []
        self._set_after = set_after

    def is_set(self) -> bool:
        return self._set_after is not None and len(self.waits) >= self._set_after

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(0.0 if timeout is None else timeout)
        return self.is_set()


class Failing:
    """A call that raises ``error`` the first ``times`` calls, then returns ``"done"``."""

    def __init__(self, error: BaseException, times: int = 1_000) -> None:
        self.error = error
        self.times = times
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.times:
            raise self.error
        return "done"


RATE_LIMITED = TransientError("POST /v1/track answered HTTP 429", 8.0, status=429)

#: Each way of retrying, called as the client calls it.
MODES: dict[str, tuple[BaseException, Callable[..., Any]]] = {
    "run": (RATE_LIMITED, lambda call, stop: POLICY.run(call, "Deleting 3 users", stop=stop)),
    "once in effect": (
        RATE_LIMITED,
        lambda call, stop: POLICY.run_once_in_effect(call, "Sending an event", stop=stop),
    ),
    "poll": (
        TransientError("GET /v1/background_jobs/j answered HTTP 500", status=500),
        lambda call, stop: POLICY.poll(call, "Reading the status of job j", stop=stop),
    ),
    "409": (
        JobConflict("Another bulk job is running on the account (HTTP 409)"),
        lambda call, stop: POLICY.wait_out_conflicts(call, 7200.0, stop=stop),
    ),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_a_stop_during_a_retry_wait_ends_it_and_no_call_follows(mode: str) -> None:
    error, retried = MODES[mode]
    call = Failing(error)
    stop = SimulatedStop(set_after=2)  # the stop comes during the second pause

    with pytest.raises(WaitInterrupted) as stopped:
        retried(call, stop)

    assert call.calls == 2
    assert len(stop.waits) == 2
    assert "the run stopped before try 3" in str(stopped.value)


@pytest.mark.parametrize("mode", list(MODES))
def test_after_a_stop_the_first_try_is_the_callers_and_no_retry_follows(mode: str) -> None:
    error, retried = MODES[mode]
    call = Failing(error)
    stop = SimulatedStop(set_after=0)  # set before the call

    with pytest.raises(WaitInterrupted) as stopped:
        retried(call, stop)

    assert call.calls == 1
    assert stopped.value.last_error is error


class WatchedStop(threading.Event):
    """A real stop event that says when someone waits on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    @override
    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        return super().wait(timeout)


def test_a_real_stop_event_ends_a_long_retry_after_wait_at_once() -> None:
    """Retry-After: 60, and the stop comes while the policy waits: no second try."""
    stop = WatchedStop()
    calls: list[float] = []

    def call() -> None:
        calls.append(time.monotonic())
        raise TransientError("DELETE /v1/users answered HTTP 429", 60.0, status=429)

    ended: list[BaseException] = []
    calling = threading.Thread(
        target=lambda: _catch(lambda: POLICY.run(call, "Deleting 1 users", stop=stop), ended)
    )
    calling.start()
    assert stop.waiting.wait(10)  # the 60 s pause has begun
    stopped_at = time.monotonic()
    stop.set()
    calling.join(timeout=10)

    assert not calling.is_alive()
    assert time.monotonic() - stopped_at < 5  # a 60 s pause, ended by the stop
    assert len(calls) == 1
    assert isinstance(ended[0], WaitInterrupted)


def test_backoff_still_decides_the_tries_and_each_pause_is_waited_on_the_stop() -> None:
    call = Failing(TransientError("HTTP 503", status=503))
    stop = SimulatedStop()

    with pytest.raises(TransientError, match="failed 5 times"):
        POLICY.run(call, "Uploading the users batch b", stop=stop)

    assert call.calls == POLICY.max_tries
    assert len(stop.waits) == POLICY.max_tries - 1
    for attempt, wait in enumerate(stop.waits):
        assert POLICY.base_seconds / 4 <= wait <= POLICY.base_seconds * 2**attempt


def test_a_retry_that_succeeds_returns_its_answer_after_the_pauses() -> None:
    call = Failing(TransientError("HTTP 502", status=502), times=2)
    stop = SimulatedStop()

    assert POLICY.run(call, "Listing jobs", stop=stop) == "done"
    assert (call.calls, len(stop.waits)) == (3, 2)


def test_retry_after_is_the_pause_with_a_little_spread() -> None:
    call = Failing(RATE_LIMITED, times=1)
    stop = SimulatedStop()

    POLICY.run(call, "Deleting 1 users", stop=stop)

    (wait,) = stop.waits
    assert 8.0 <= wait <= 8.0 + POLICY.base_seconds / 2


def test_a_poll_pauses_no_longer_than_its_time_allows() -> None:
    call = Failing(UnexpectedAnswer("not a job"), times=1)
    stop = SimulatedStop()
    policy = RetryPolicy(base_seconds=1000.0, max_seconds=1000.0, poll_max_time=2.0)

    assert policy.poll(call, "Reading the status of job j", stop=stop) == "done"
    assert stop.waits[0] <= 2.0


def test_time_limits_are_measured_on_the_policys_clock() -> None:
    """Simulated time: a poll gives up after poll_max_time, and another client's job is waited
    out for conflict_wait, in the clock's seconds (backoff's own max_time is wall time)."""
    clock = SimulatedClock()
    policy = RetryPolicy(base_seconds=0.5, max_seconds=30.0, poll_max_time=300.0, clock=clock)
    failing = Failing(TransientError("GET /v1/background_jobs/j answered HTTP 500", status=500))

    with pytest.raises(TransientError, match=r"failed \d+ times in 300 s"):
        policy.poll(failing, "Reading the status of job j", stop=threading.Event())
    assert clock.now() == pytest.approx(300.0)

    conflict = Failing(JobConflict("Another bulk job is running on the account (HTTP 409)"))
    with pytest.raises(JobConflict):
        policy.wait_out_conflicts(conflict, 120.0, stop=threading.Event())
    assert clock.now() == pytest.approx(420.0)
    assert clock.stalls == 0


def test_an_event_that_may_have_arrived_is_not_retried_and_waits_for_nothing() -> None:
    call = Failing(TransientError("POST /v1/track answered HTTP 502", status=502))
    stop = SimulatedStop()

    with pytest.raises(Unconfirmed):
        POLICY.run_once_in_effect(call, "Sending an event", stop=stop)

    assert (call.calls, stop.waits) == (1, [])


def test_after_a_429_the_events_pace_alone_decides_when_the_event_goes_again() -> None:
    """One 429: one pause, one slow-down; the retried event takes a slot of the pace."""
    pace = EventPace(60.0, clock=SimulatedClock(100.0))  # one event a second (at 98%)
    assert pace.reserve() == 100.0  # the event that will be refused took this slot
    call = Failing(RATE_LIMITED, times=1)
    stop = SimulatedStop()

    POLICY.run_once_in_effect(call, "Sending an event", stop=stop, pace=pace)

    assert stop.waits == [8.0]  # Retry-After, from the pace, with nothing added
    assert pace.rate_limited == 1
    assert pace.rate == 60.0 * SLOW_DOWN
    # The next event comes a slowed interval after the retried one's slot.
    assert pace.reserve() == pytest.approx(108.0 + 60.0 / (48.0 * 0.98))


def _catch(call: Callable[[], Any], into: list[BaseException]) -> None:
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - handed to the test
        into.append(exc)


def test_an_event_slot_taken_before_a_429_arrived_is_paused_too() -> None:
    """The dispatcher took the next event's slot just before another sender's 429 came back:
    that slot must not go out during the pause the 429 asked for."""
    pace = EventPace(60.0, clock=SimulatedClock(100.0))
    taken = pace.reserve()
    later = pace.reserve()
    assert pace.recheck(later) is None  # no 429: the slot stands

    pace.slow_down(8.0)

    moved = pace.recheck(later)
    assert taken == 100.0
    assert moved is not None and moved >= 108.0
    assert pace.recheck(moved) is None


def test_backoff_grows_exponentially_with_full_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(base_seconds=0.5, max_seconds=30.0)
    plain = TransientError("HTTP 503")
    for attempt in range(10):
        wait = policy.wait_before_retry(plain, attempt)
        assert policy.base_seconds / 4 <= wait <= min(30.0, 0.5 * 2**attempt)
    limited = TransientError("HTTP 429", retry_after=7.0)
    for attempt in range(5):
        assert 7.0 <= policy.wait_before_retry(limited, attempt) <= 7.0 + policy.base_seconds / 2
    # A day-long ban is not waited: the one parser caps it, and the policy adds only jitter.
    huge = TransientError("HTTP 429", retry_after=parse_retry_after("86400"))
    assert policy.wait_before_retry(huge, 0) <= 120.0 + policy.base_seconds / 2
