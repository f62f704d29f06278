"""The run's logs in the ecosystem's forms: plain lines or the SDK's JSON, and METRIC records.

The SDK sets logging up before the target starts: plain lines on stderr, or the logging config
file that ``SINGER_SDK_LOG_CONFIG`` names. A config whose handler formats with the SDK's
``singer_sdk.logging.StructuredFormatter`` makes every log record one JSON object per line; it
is how a user turns JSON logs on, and what Meltano does for a plugin with the
``structured-logging`` capability (this one). :func:`json_stderr` tells the run which form it
writes, so that in JSON mode nothing else reaches stderr: the summary is one record with its
fields (``target_userpilot_summary``) instead of a table and a prefixed line, and Python's
warnings and an unexpected error become records too (:func:`structure_stray_output`).

METRIC records are the SDK's, written through ``singer_sdk.metrics`` at INFO on the
``singer_sdk.metrics`` logger: the SDK's own ``record_count`` of each sink (records per stream,
at most one point a minute while records arrive, and one when the stream ends), and the
``http_request_duration`` of every request to Userpilot (:func:`request_duration`, told by the
transport), tagged with the endpoint as a template (``/v1/background_jobs/{id}``), never an id.
"""

from __future__ import annotations

import logging
import sys
import threading
from types import TracebackType

from singer_sdk import metrics
from singer_sdk.logging import StructuredFormatter

#: The summary record's field (``extra`` of the SDK's JSON record) holding the summary's JSON.
SUMMARY_FIELD = "target_userpilot_summary"
#: What ``metrics_log_level`` takes: the level of the ``singer_sdk.metrics`` logger. Metrics are
#: written at INFO, so WARNING or above turns them off.
METRICS_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def json_stderr(logger: logging.Logger) -> bool:
    """Whether ``logger``'s records reach stderr as JSON, one object per line.

    True when a handler on the way from ``logger`` to the root writes to stderr through the
    SDK's ``StructuredFormatter`` (or another formatter whose class says JSON, such as
    python-json-logger's), as a ``SINGER_SDK_LOG_CONFIG`` file or Meltano sets it up.
    """
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if _writes_json_to_stderr(handler):
                return True
        if not current.propagate:
            break
        current = current.parent
    return False


def _writes_json_to_stderr(handler: logging.Handler) -> bool:
    if not isinstance(handler, logging.StreamHandler):
        return False
    if handler.stream not in (sys.stderr, sys.__stderr__):
        return False  # a file, or stdout: the summary's prefixed line goes to stderr
    formatter = handler.formatter
    return isinstance(formatter, StructuredFormatter) or "json" in type(formatter).__name__.lower()


def structure_stray_output(logger: logging.Logger) -> None:
    """In JSON mode, what Python itself would write to stderr becomes a log record as well.

    Python's warnings go through logging (``py.warnings``); an exception nothing caught (a bug)
    is one CRITICAL record with the SDK's structured ``exception``, instead of a traceback of
    many plain lines that would break a reader parsing stderr line by line. A logged exception
    shows no context that ``raise ... from None`` hid, as Python's own traceback would not.
    """
    logging.captureWarnings(True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_without_hidden_context)

    def log_uncaught(
        exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        _drop_suppressed_context(exc)
        logger.critical(
            "target-userpilot stopped on an unexpected error (%s): %s. This is a bug; please "
            "report it with this record.",
            exc_type.__name__,
            exc,
            exc_info=(exc_type, exc, tb),
        )

    def log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or issubclass(args.exc_type, SystemExit):
            return
        log_uncaught(args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = log_uncaught
    threading.excepthook = log_uncaught_in_thread


def _without_hidden_context(record: logging.LogRecord) -> bool:
    """A handler's filter: a logged exception shows no context ``from None`` hid."""
    if record.exc_info and record.exc_info[1] is not None:
        _drop_suppressed_context(record.exc_info[1])
    return True


def _drop_suppressed_context(exc: BaseException | None) -> None:
    """Forget each ``__context__`` that ``raise ... from None`` hid.

    Python's own traceback leaves it out; the SDK's JSON formatter would show it, and such a
    context may be an error whose text quotes what the ``from None`` kept out (a header).
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if exc.__suppress_context__:
            exc.__context__ = None
        exc = exc.__cause__ or exc.__context__


def set_metrics_level(level: str | None) -> None:
    """``metrics_log_level``: the ``singer_sdk.metrics`` logger's level, when it is set.

    Unset, the SDK's rule stands: the target's own level (``TARGET_USERPILOT_LOGLEVEL``, else
    ``LOGLEVEL``, else INFO), set by the SDK when the target starts.
    """
    if level:
        metrics.get_metrics_logger().setLevel(level.strip().upper())


def request_duration(method: str, endpoint: str, status: int | None, seconds: float) -> None:
    """One request to Userpilot ended: the SDK's ``http_request_duration`` METRIC record.

    Tagged as the SDK tags a tap's requests (``endpoint``, ``http_status_code``, ``status``),
    plus ``method``, since ``/v1/imports`` is both a list (GET) and an upload (POST). The time
    is measured here, from sending to the whole answer read; ``http_status_code`` is null when
    no answer came (a timeout, a refused connection), and ``status`` is ``succeeded`` only for
    a 2xx answer.
    """
    logger = metrics.get_metrics_logger()
    if not logger.isEnabledFor(logging.INFO):
        return  # metrics are off: not even the point is built
    succeeded = status is not None and 200 <= status < 300
    point = metrics.Point(
        "timer",
        metrics.Metric.HTTP_REQUEST_DURATION,
        round(seconds, 6),
        tags={
            metrics.Tag.ENDPOINT: endpoint,
            "method": method,
            metrics.Tag.HTTP_STATUS_CODE: status,
            metrics.Tag.STATUS: metrics.Status.SUCCEEDED if succeeded else metrics.Status.FAILED,
        },
    )
    metrics.log(logger, point)
