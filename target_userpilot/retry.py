"""The retry policy: the one place a retry is decided and waited for, declared once, immutable.

Which failures are worth another try, how long to wait (``Retry-After`` first, jittered
exponential backoff otherwise), and how many tries, or how much time, are enough. Userpilot's
client runs each call (but ``--check-connection``'s single try) through one of four ways of
retrying: bounded tries (uploads, lists, deletions), tries of a request that cannot be taken
back (events), status polls (which may wait out a longer outage), and waiting out another
client's job (409). The PostgreSQL ledger runs
each operation through a fifth: a lost connection tried again for a while (:meth:`reconnect`).

How a stop reaches a retry. A retry is a new request, so after a stop none may start, and the
wait before it must end at once. ``backoff`` decides whether another try comes (which errors,
``max_tries``, a time limit through its ``giveup``), but it pauses with ``time.sleep``, which
nothing can interrupt. So each retried call gets a :class:`_Pauses`: the wait generator it
hands to ``backoff`` computes the real pause, keeps it, and yields 0 (``backoff``'s own sleep is
then nothing); the ``on_backoff`` handler, which ``backoff`` calls just before that sleep, waits
the real pause on the caller's ``stop`` event instead, on the policy's
:class:`~target_userpilot.clock.Clock`. A
time limit is measured on that clock too (``backoff``'s own ``max_time`` is wall time), so a
test runs a policy in simulated time. A stop set before or during the pause ends it with
:class:`~target_userpilot.errors.WaitInterrupted`, raised out of ``backoff``'s loop: no further
try starts. Every lane hands its own stop event to each client call (``stop=``), so the same
holds for an upload, a job lookup after a lost answer, a status poll, a deletion request and an
event; the run hands its stop to the ledger. The first try of a call is the caller's decision (a
status poll of the job in flight still goes after a stop; a new upload does not), never the
policy's.

A pace that spaces its own requests (the events' ``EventPace``) is handed in with ``pace=``:
after a 429, it alone decides when the refused request goes again (its next slot, after the
pause the 429 asked for), so one 429 is one slow-down, and the retry counts as the request it
is.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import backoff

from target_userpilot.clock import REAL_CLOCK, Clock
from target_userpilot.errors import (
    JobConflict,
    TransientError,
    Unconfirmed,
    UnexpectedAnswer,
    WaitInterrupted,
)
from target_userpilot.summary import count

logger = logging.getLogger("target_userpilot.userpilot.client")

T = TypeVar("T")


class Stop(Protocol):
    """What a retry waits on: set when the run stops (a lane's ``threading.Event``)."""

    def is_set(self) -> bool:
        """True once the run stops."""
        ...

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s for the stop; True if it came."""
        ...


class RatePace(Protocol):
    """A pace that owns its requests' timing (the events' pace, ``lanes/pace.py``)."""

    def after_rate_limit(self, retry_after: float | None) -> float:
        """Userpilot answered 429: slow down; seconds until the refused request may go again."""
        ...


#: Waited on when a caller hands no stop (a one-off call outside a run): never set.
_NO_STOP = threading.Event()


@dataclass(frozen=True)
class RetryPolicy:
    """How failures are retried: transient ones, status polls, another client's job, and a
    lost ledger connection.

    Transient failures (429, 5xx, dropped connections, timeouts) get ``max_tries`` tries;
    status polls retry them, and answers that are no job, for up to ``poll_max_time`` seconds;
    409 is waited out for as long as the caller's ``conflict_wait``; a lost ledger connection
    is tried again for ``reconnect_max_time`` seconds. Every pause is waited on ``clock`` and
    ends at once when the caller's ``stop`` is set.
    """

    base_seconds: float = 0.5
    max_seconds: float = 30.0
    max_tries: int = 8
    #: Status polls may wait out a longer outage: re-uploading is never the answer to one.
    poll_max_time: float = 300.0
    #: Longest pause between two uploads while another bulk job holds the account (409).
    conflict_max_seconds: float = 30.0
    #: How long one ledger operation keeps trying a lost connection (a server restart or a
    #: failover takes seconds) before the run stops.
    reconnect_max_time: float = 15.0
    #: What every pause is waited on, and every time limit measured by.
    clock: Clock = REAL_CLOCK

    def run(self, call: Callable[[], T], what: str, *, stop: Stop | None = None) -> T:
        """``call``, its transient failures tried again up to ``max_tries`` times in all.

        Used for uploads, lists and deletions. Once it gives up, the error says what was being
        done (``what``), how often and for how long.
        """
        pauses = _Pauses(self.wait_before_retry, what, stop, self.clock)
        retrying = pauses.decorator(TransientError, max_tries=self.max_tries)
        return self._until_giving_up(pauses, retrying, call, what, polling=False)

    def run_once_in_effect(
        self,
        call: Callable[[], T],
        what: str,
        *,
        stop: Stop | None = None,
        pace: RatePace | None = None,
    ) -> T:
        """``call``, which cannot be taken back (an event counts each time it arrives), tried
        again only after a failure that proves it had no effect (``TransientError.had_no_effect``:
        no connection, 429, 503 with ``Retry-After``), up to ``max_tries`` times in all.

        Any other failure after the request left (a timeout, a dropped connection, another 5xx)
        raises :class:`Unconfirmed` at once: trying again could make two of it. With ``pace``,
        the pace decides when a request refused with 429 goes again.
        """

        def once() -> T:
            try:
                return call()
            except TransientError as exc:
                if exc.had_no_effect:
                    raise
                msg = f"{what} got no clear answer ({exc}); it may or may not have taken effect"
                raise Unconfirmed(msg) from None

        def wait(error: BaseException | None, attempt: int) -> float:
            if pace is not None and isinstance(error, TransientError) and error.status == 429:
                return max(0.0, pace.after_rate_limit(error.retry_after))
            return self.wait_before_retry(error, attempt)

        pauses = _Pauses(wait, what, stop, self.clock)
        retrying = pauses.decorator(TransientError, max_tries=self.max_tries)
        return self._until_giving_up(pauses, retrying, once, what, polling=False)

    def poll(self, call: Callable[[], T], what: str, *, stop: Stop | None = None) -> T:
        """``call``, its transient failures and odd answers tried again for ``poll_max_time`` s.

        A poll changes nothing, and re-uploading is never the answer to a failed one, so a
        status poll may wait out a longer outage, and answers that are no job, than an upload.
        After a stop a failed poll is not tried again: the job is left to Userpilot.
        """
        pauses = _Pauses(
            self.wait_before_retry, what, stop, self.clock, max_time=self.poll_max_time
        )
        polling = pauses.decorator((TransientError, UnexpectedAnswer))
        return self._until_giving_up(pauses, polling, call, what, polling=True)

    def wait_out_conflicts(
        self, call: Callable[[], T], conflict_wait: float, *, stop: Stop | None = None
    ) -> T:
        """``call``, tried again while it raises :class:`JobConflict`, for ``conflict_wait`` s.

        Another client's bulk job (409) holds the account; pauses grow (full jitter) up to
        ``conflict_max_seconds``. The last :class:`JobConflict` is raised when time is up.
        A stop ends a pause at once with :class:`WaitInterrupted`: nothing is sent after it.
        """

        def wait(_error: BaseException | None, attempt: int) -> float:
            ceiling = min(self.conflict_max_seconds, 2.0 * 2**attempt)
            return random.uniform(0, ceiling)

        what = "An upload waiting for another client's job"
        pauses = _Pauses(wait, what, stop, self.clock, max_time=conflict_wait, log=_log_conflict)
        waiting = pauses.decorator(JobConflict)
        result: T = waiting(call)()
        return result

    def reconnect(
        self,
        call: Callable[[], T],
        lost: type[Exception],
        what: str,
        *,
        stop: Stop | None = None,
        log: Callable[[BaseException, float], None] | None = None,
    ) -> T:
        """``call``, tried again while it raises ``lost`` (a database connection lost, a server
        restarting), for ``reconnect_max_time`` seconds; the last ``lost`` is raised when time
        is up. ``log`` hears each failure and the pause before the next try (the caller words
        it without secrets). A stop ends a pause at once with :class:`WaitInterrupted`.
        """

        def told(
            what: str, error: BaseException | None, _tries: int, seconds: float, _e: float
        ) -> None:
            if log is not None and error is not None:
                log(error, seconds)

        pauses = _Pauses(
            self.wait_before_retry,
            what,
            stop,
            self.clock,
            max_time=self.reconnect_max_time,
            log=told,
        )
        result: T = pauses.decorator(lost)(call)()
        return result

    def wait_before_retry(self, error: BaseException | None, attempt: int) -> float:
        """Seconds before the next try, after ``attempt`` pauses already: the server's
        ``Retry-After`` when it gave one (capped where it was parsed, in ``transport.py``), with
        a little spread; else full-jitter exponential backoff."""
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            # Honour the server, with a little spread so many clients don't return in step.
            return float(retry_after) + random.uniform(0, self.base_seconds / 2)
        ceiling = min(self.max_seconds, self.base_seconds * (2**attempt))
        return random.uniform(self.base_seconds / 4, ceiling)

    def _until_giving_up(
        self, pauses: _Pauses, retrying: Any, call: Callable[[], T], what: str, *, polling: bool
    ) -> T:
        """Run ``call`` under ``retrying``; once it gives up, say so in a sentence.

        The last error alone ("answered HTTP 503") would not tell an operator that the target
        already tried for a while, or what to do next. A stop (``WaitInterrupted``) passes as
        it is: the lane that called says what was left unsent.
        """
        tries = 0

        def counted() -> T:
            nonlocal tries
            tries += 1
            return call()

        try:
            result: T = retrying(counted)()
        except (TransientError, UnexpectedAnswer) as exc:
            if isinstance(exc, UnexpectedAnswer) and not polling:
                raise  # not retried under this policy: the error speaks for itself
            elapsed = pauses.elapsed()
            if isinstance(exc, UnexpectedAnswer):
                msg = (
                    f"{what} failed {count(tries, 'time')} in {elapsed:.0f} s; the last answer: "
                    f"{exc}. "
                    "Something other than Userpilot's API answers (a proxy or another "
                    "service): nothing after the last STATE was lost; check api_url and any "
                    "proxy between this machine and Userpilot, then rerun."
                )
                raise UnexpectedAnswer(msg) from None
            msg = (
                f"{what} failed {count(tries, 'time')} in {elapsed:.0f} s; the last try: {exc}. "
                "Userpilot or the network to it is failing: nothing after the last STATE was "
                "lost; check connectivity and Userpilot's status, then rerun."
            )
            raise TransientError(msg) from None
        return result


class _Pauses:
    """The pauses of one retried call: computed for ``backoff``, waited on the stop.

    ``backoff`` asks its wait generator (:meth:`waits`) for each pause and sleeps what it
    yields, uninterruptibly: it gets 0. The real pause is kept here and waited by
    :meth:`pause`, ``backoff``'s ``on_backoff`` handler, on ``stop``, on ``clock``. A time
    limit is this clock's too: ``backoff`` is asked to give up (``giveup``) once ``max_time``
    has passed on it, and the last pause ends when the limit comes.
    """

    def __init__(
        self,
        schedule: Callable[[BaseException | None, int], float],
        what: str,
        stop: Stop | None,
        clock: Clock,
        *,
        max_time: float | None = None,
        log: Callable[[str, BaseException | None, int, float, float], None] | None = None,
    ) -> None:
        #: Seconds before the next try, from the failure and how many pauses came before.
        self._schedule = schedule
        self._what = what
        self._stop: Stop = stop if stop is not None else _NO_STOP
        self._clock = clock
        self._started = clock.now()
        self._max_time = max_time
        self._log = log or _log_retry
        self._next = 0.0

    def elapsed(self) -> float:
        """Seconds on the clock since the call's first try."""
        return self._clock.now() - self._started

    def decorator(self, errors: Any, **limits: Any) -> Any:
        """A ``backoff`` decorator retrying ``errors`` within ``limits``, pausing here."""
        return backoff.on_exception(
            self.waits,
            errors,
            jitter=None,
            on_backoff=self.pause,
            giveup=self._time_is_up,
            logger=None,
            **limits,
        )

    def _time_is_up(self, _error: BaseException) -> bool:
        return self._max_time is not None and self.elapsed() >= self._max_time

    def waits(self) -> Generator[float, Any, None]:
        """The wait generator ``backoff`` drives: keeps the real pause, yields 0."""
        error = yield 0.0
        attempt = 0
        while True:
            self._next = self._schedule(error, attempt)
            attempt += 1
            error = yield 0.0  # backoff's own sleep: nothing (pause() waits)

    def pause(self, details: Any) -> None:
        """``on_backoff``: wait the pause on the stop; a stop ends it, and the retries with it."""
        seconds = self._next
        elapsed = self.elapsed()
        if self._max_time is not None:
            seconds = min(seconds, max(0.0, self._max_time - elapsed))
        error = details.get("exception")
        tries = int(details["tries"])
        if not self._stop.is_set():
            self._log(self._what, error, tries, seconds, elapsed)
        if self._clock.wait(self._stop, seconds):
            msg = (
                f"{self._what} was not tried again: the run stopped before try {tries + 1}"
                f"{f' (the last try: {error})' if error is not None else ''}."
            )
            raise WaitInterrupted(msg, last_error=error)


def _log_retry(
    what: str, error: BaseException | None, tries: int, seconds: float, _elapsed: float
) -> None:
    logger.warning(
        "Userpilot call failed (%s); try %d, retrying in %.1f s.",
        error,
        tries,
        seconds,
    )


def _log_conflict(
    what: str, error: BaseException | None, tries: int, seconds: float, elapsed: float
) -> None:
    logger.info(
        "Another bulk job holds the Userpilot account (HTTP 409); waiting %.1f s (%.0f s so far).",
        seconds,
        elapsed,
    )
