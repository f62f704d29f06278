"""Every exception that can end a run, and the exit code each one ends it with.

One table, so that reading how a run can end means opening one file. ``docs/troubleshooting.md``
lists the same codes (a drift test keeps them equal). An exception that is always caught on the way
(the lanes' ``Abandoned``, the validator's ``Unsupported``, the reader's ``NotJSON``) lives beside
the code that raises and catches it; ``docs/development.md`` says where the code is chosen.
"""

from __future__ import annotations

from singer_sdk.exceptions import (
    ConfigValidationError,
    InvalidInputLine,
    InvalidJSONSchema,
    MappingError,
    MissingKeyPropertiesError,
    RecordsWithoutSchemaException,
)


class ConfigurationError(ValueError):
    """A setting (or the environment: CA bundles, proxies) that cannot work.

    Raised before any input is read where it can be found then; a proxy that refuses its
    credentials (407) shows only at the first request.
    """


class LedgerMissing(ConfigurationError):
    """A reader (``userpilot-ledger``) found no ledger where ``state_db`` points."""


class UserpilotError(Exception):
    """Userpilot answered something the run cannot go on from."""


class AuthenticationError(UserpilotError):
    """The API key was refused (401/403): retrying cannot help."""


class PayloadTooLarge(UserpilotError):
    """Userpilot refused a batch as too large (413): the caller splits it."""


class JobNotFound(UserpilotError):
    """A job status call answered 404: the job is not known there."""


class JobConflict(UserpilotError):
    """Another bulk job holds the account (409), possibly another client's."""


class TransientError(UserpilotError):
    """A failure worth another try: 429, 5xx, a dropped connection or a timeout."""

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        *,
        reached_server: bool = True,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        #: False when the connection itself failed: the request cannot have been acted on.
        self.reached_server = reached_server
        #: The HTTP status of the answer, if one came.
        self.status = status

    @property
    def had_no_effect(self) -> bool:
        """Whether the failure proves the request changed nothing in Userpilot.

        A connection that never opened; a 429 (the rate limiter turned it away before it was
        processed); a 503 with ``Retry-After`` (the server put it off and said when to come
        back). Anything else after the request left (a timeout, a dropped connection, 500, 502,
        504, a 503 without ``Retry-After``, which a proxy also sends when its upstream dies
        mid-request) may have taken effect.
        """
        if not self.reached_server or self.status == 429:
            return True
        return self.status == 503 and self.retry_after is not None


class RequestRefused(UserpilotError):
    """Userpilot refused the request with a 4xx of its own (other than those above): it did
    nothing with it."""


class UnexpectedAnswer(UserpilotError):
    """A 2xx answer that is not what Userpilot sends (a proxy page, another service).

    Not a TransientError: an upload answered so is never sent again (it may have reached
    Userpilot), and a run that ends on one says "not Userpilot's API", not "unreachable".
    Status polls, which change nothing, retry it for a while all the same.
    """


class EventRefused(UserpilotError):
    """Userpilot refused one event (a 4xx about its content): the caller rejects that record."""


class UserNotFound(EventRefused):
    """Userpilot answered a track request 404: it has no user with the event's ``user_id``.

    The event was not recorded; the events lane tries it once more after this run's users are
    loaded, before it rejects it.
    """


class Unconfirmed(UserpilotError):
    """A request that cannot be taken back got no clear answer, so it was not sent again.

    It may have taken effect or not; a second copy could count twice (an event). The caller
    decides what the unknown outcome means for its record.
    """


class JobFailed(RuntimeError):
    """A Userpilot job ended ``failed``."""


class JobTimeout(RuntimeError):
    """A job did not end within ``job_timeout_seconds``."""


class LedgerUnavailable(RuntimeError):
    """The ledger's database (``state_db``) stopped answering mid-run, past its retries."""


class InvalidRecord(ValueError):
    """A record that cannot become a valid Userpilot row; the message is the reason."""


class InvalidRecordError(RuntimeError):
    """``on_invalid_record`` is ``fail`` and a record could not become a row."""


class BatchFileError(RuntimeError):
    """A file a BATCH message lists cannot be read: missing, corrupt, or of an unknown encoding."""


class SpoolUnwritable(RuntimeError):
    """A spool file (a batch, or the events waiting to be sent) could not be written.

    Most often the disk holding the spool folder (TMPDIR) is full.
    """


class StateUndeliverable(RuntimeError):
    """STATE could not be written to stdout: its reader closed it."""


class NothingLoaded(RuntimeError):
    """Every record of the run was refused: not a success, whatever ``on_invalid_record`` says."""


class MirrorDeleteRefused(RuntimeError):
    """A full-table version would delete more profiles than the mirror-delete guard allows."""


class MissingKeyRecordError(InvalidRecordError, MissingKeyPropertiesError):
    """``fail``: a record lacks a key property; the SDK's own error type, with our sentence."""


class WaitInterrupted(Exception):
    """The run stopped during a wait before a retry (a 429, a 5xx, a lost answer, another
    client's job): the request was not sent again.

    Caught by the lane that made the call, which says what was left unsent and ends without a
    failure; it never reaches the user as the run's reason.
    """

    def __init__(self, message: str, last_error: BaseException | None = None) -> None:
        super().__init__(message)
        #: The failure that would have been retried, if any (None: a wait for another job).
        self.last_error = last_error


class Terminated(BaseException):
    """SIGTERM or SIGINT: the run stops reading; the job already in flight is awaited.

    Raised on the reading thread where it checks whether the run stops (``Run.check``), never
    from a signal handler. A BaseException, like KeyboardInterrupt, so that no ``except
    Exception`` on the way out swallows it.
    """


#: Exit codes, one per way a run can end badly (documented in docs/troubleshooting.md). The most
#: specific class of an exception decides: TransientError is also a UserpilotError.
EXIT_CODES: dict[type[BaseException], int] = {
    ConfigurationError: 2,
    ConfigValidationError: 2,
    MappingError: 2,
    AuthenticationError: 3,
    JobFailed: 4,
    JobTimeout: 5,
    InvalidRecordError: 6,
    MissingKeyPropertiesError: 6,
    InvalidInputLine: 7,
    RecordsWithoutSchemaException: 7,
    InvalidJSONSchema: 7,
    BatchFileError: 7,
    UserpilotError: 8,
    TransientError: 9,
    LedgerUnavailable: 9,
    Terminated: 10,
    StateUndeliverable: 11,
    NothingLoaded: 12,
    SpoolUnwritable: 13,
    MirrorDeleteRefused: 14,
}


def exit_code(exc: BaseException) -> int | None:
    """The exit code for ``exc``, or None for an exception no table row covers (a bug)."""
    return next((EXIT_CODES[k] for k in type(exc).__mro__ if k in EXIT_CODES), None)
