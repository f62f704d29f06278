"""The retry policy: the one place a retry is decided, declared once and immutable.

Which failures are worth another try, how long to wait (``Retry-After`` first, jittered
exponential backoff otherwise), and how many tries are enough. The client runs each call
through one of three ways of retrying: bounded tries (uploads, lists, deletions, events),
status polls (which may wait out a longer outage), and waiting out another client's job (409).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import backoff

from target_userpilot.errors import (
    JobConflict,
    TransientError,
    Unconfirmed,
    UnexpectedAnswer,
    WaitInterrupted,
)
from target_userpilot.transport import MAX_RETRY_AFTER_SECONDS

logger = logging.getLogger("target_userpilot.client")

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How failures are retried: transient ones, status polls, and another client's job.

    Transient failures (429, 5xx, dropped connections, timeouts) get ``max_tries`` tries;
    status polls retry them, and answers that are no job, for up to ``poll_max_time`` seconds;
    409 is waited out for as long as the caller's ``conflict_wait``.
    """

    base_seconds: float = 0.5
    max_seconds: float = 30.0
    max_tries: int = 8
    #: Status polls may wait out a longer outage: re-uploading is never the answer to one.
    poll_max_time: float = 300.0
    #: Longest pause between two uploads while another bulk job holds the account (409).
    conflict_max_seconds: float = 30.0

    def run(self, call: Callable[[], T], what: str) -> T:
        """``call``, its transient failures tried again up to ``max_tries`` times in all.

        Used for uploads, lists, deletions and events. Once it gives up, the error says what
        was being done (``what``), how often and for how long.
        """
        retrying = self._backoff(TransientError, max_tries=self.max_tries)
        return self._until_giving_up(retrying, call, what, polling=False)

    def run_once_in_effect(self, call: Callable[[], T], what: str) -> T:
        """``call``, which cannot be taken back (an event counts each time it arrives), tried
        again only after a failure that proves it had no effect (``TransientError.had_no_effect``:
        no connection, 429, 503 with ``Retry-After``), up to ``max_tries`` times in all.

        Any other failure after the request left (a timeout, a dropped connection, another 5xx)
        raises :class:`Unconfirmed` at once: trying again could make two of it.
        """

        def once() -> T:
            try:
                return call()
            except TransientError as exc:
                if exc.had_no_effect:
                    raise
                msg = f"{what} got no clear answer ({exc}); it may or may not have taken effect"
                raise Unconfirmed(msg) from None

        return self.run(once, what)

    def poll(self, call: Callable[[], T], what: str) -> T:
        """``call``, its transient failures and odd answers tried again for ``poll_max_time`` s.

        A poll changes nothing, and re-uploading is never the answer to a failed one, so a
        status poll may wait out a longer outage, and answers that are no job, than an upload.
        """
        polling = self._backoff((TransientError, UnexpectedAnswer), max_time=self.poll_max_time)
        return self._until_giving_up(polling, call, what, polling=True)

    def wait_out_conflicts(
        self,
        call: Callable[[], T],
        conflict_wait: float,
        interrupt: threading.Event | None = None,
    ) -> T:
        """``call``, tried again while it raises :class:`JobConflict`, for ``conflict_wait`` s.

        Another client's bulk job (409) holds the account; pauses grow (full jitter) up to
        ``conflict_max_seconds``. The last :class:`JobConflict` is raised when time is up.
        Setting ``interrupt`` (the run stops) ends a pause at once with
        :class:`WaitInterrupted`: nothing is sent after a stop.
        """
        started = time.monotonic()
        waits = 0
        while True:
            try:
                return call()
            except JobConflict:
                elapsed = time.monotonic() - started
                if elapsed >= conflict_wait:
                    raise
            ceiling = min(self.conflict_max_seconds, 2.0 * 2**waits)
            wait = min(random.uniform(0, ceiling), conflict_wait - elapsed)
            waits += 1
            _log_conflict({"wait": wait, "elapsed": elapsed})
            if interrupt is None:
                time.sleep(wait)
            elif interrupt.wait(wait):
                msg = "The run stopped while an upload waited for another client's job."
                raise WaitInterrupted(msg)

    def _backoff(self, errors: Any, **limits: Any) -> Any:
        """A backoff decorator for ``errors``: Retry-After first, else jittered expo."""
        return backoff.on_exception(
            _wait_for,
            errors,
            jitter=None,
            on_backoff=_log_retry,
            logger=None,
            policy=self,
            **limits,
        )

    def _until_giving_up(
        self, retrying: Any, call: Callable[[], T], what: str, *, polling: bool
    ) -> T:
        """Run ``call`` under ``retrying``; once it gives up, say so in a sentence.

        The last error alone ("answered HTTP 503") would not tell an operator that the target
        already tried for a while, or what to do next.
        """
        tries = 0
        started = time.monotonic()

        def counted() -> T:
            nonlocal tries
            tries += 1
            return call()

        try:
            result: T = retrying(counted)()
        except (TransientError, UnexpectedAnswer) as exc:
            if isinstance(exc, UnexpectedAnswer) and not polling:
                raise  # not retried under this policy: the error speaks for itself
            elapsed = time.monotonic() - started
            if isinstance(exc, UnexpectedAnswer):
                msg = (
                    f"{what} failed {tries} times in {elapsed:.0f} s; the last answer: {exc}. "
                    "Something other than Userpilot's API answers (a proxy or another "
                    "service): nothing after the last STATE was lost; check api_url and any "
                    "proxy between this machine and Userpilot, then rerun."
                )
                raise UnexpectedAnswer(msg) from None
            msg = (
                f"{what} failed {tries} times in {elapsed:.0f} s; the last try: {exc}. "
                "Userpilot or the network to it is failing: nothing after the last STATE was "
                "lost; check connectivity and Userpilot's status, then rerun."
            )
            raise TransientError(msg) from None
        return result


def _wait_for(policy: RetryPolicy) -> Generator[float, Any, None]:
    """Backoff wait generator: the server's ``Retry-After`` when given, else full-jitter expo."""
    error = yield 0.0
    attempt = 0
    while True:
        ceiling = min(policy.max_seconds, policy.base_seconds * (2**attempt))
        attempt += 1
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            # Honour the server, with a little spread so many clients don't return in step.
            wait = min(retry_after, MAX_RETRY_AFTER_SECONDS) + random.uniform(
                0, policy.base_seconds / 2
            )
        else:
            wait = random.uniform(policy.base_seconds / 4, ceiling)
        error = yield wait


def _log_retry(details: Any) -> None:
    error = details.get("exception")
    logger.warning(
        "Userpilot call failed (%s); try %d, retrying in %.1f s.",
        error,
        details["tries"],
        details["wait"],
    )


def _log_conflict(details: Any) -> None:
    logger.info(
        "Another bulk job holds the Userpilot account (HTTP 409); waiting %.1f s (%.0f s so far).",
        details["wait"],
        details["elapsed"],
    )
