"""Bad records: what happens to a record that cannot become a valid Userpilot row.

Every rejection of the run goes through :meth:`RejectLog.reject`, whoever finds it (a stream's
sink, the job lane for a row Userpilot refused alone, the events lane for an event it refused):
it is counted there once, in the run's summary under its lock, then logged, kept or made the
run's end.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from target_userpilot.errors import InvalidRecordError
from target_userpilot.privacy.files import open_private

if TYPE_CHECKING:
    from target_userpilot.summary import RunSummary

logger = logging.getLogger("target_userpilot.rejects")


class RejectLog:
    """Counts (in the run's summary), logs and (optionally) keeps every rejected record; stops
    the run on ``fail``."""

    def __init__(
        self, policy: str = "skip", path: str | None = None, summary: RunSummary | None = None
    ) -> None:
        self.policy = policy
        self.path = path
        #: Where each rejection is counted, per stream (``rejected``).
        self._summary = summary
        self._lock = threading.Lock()

    def reject(
        self,
        stream: str,
        position: int | None,
        reason: str,
        record: Any = None,
        *,
        record_json: str | None = None,
    ) -> None:
        """Handle one rejected record of ``stream``, the ``position``-th record of that stream.

        Counted first (with ``fail`` too: the record that stops the run is in the summary).
        The log line names the stream, the position and the reason, never the record: records
        carry personal data. The record itself goes only to ``rejects_path``, if set; one too
        deep to read goes there as ``record_json``, the JSON text the tap sent.
        """
        where = (
            f"record #{position} of stream '{stream}'"
            if position
            else f"a row of stream '{stream}'"
        )
        if self._summary is not None:
            self._summary.add(stream, "rejected")
        if self.path:
            entry = {"stream": stream, "position": position, "reason": reason}
            if record_json is None:
                entry["record"] = record
            else:
                entry["record_json"] = record_json
            line = json.dumps(entry, ensure_ascii=False, default=str) + "\n"
            with self._lock:  # lines from several threads never interleave
                _append(self.path, line)
        if self.policy == "fail":
            msg = (
                f"Rejected {where}: {reason}. on_invalid_record is 'fail', so the run stops here "
                "and no STATE is written past this record; fix the record or set "
                "on_invalid_record to 'skip'."
            )
            raise InvalidRecordError(msg)
        logger.warning("Rejected %s: %s. Skipping it.", where, reason)


def _append(path: str, line: str) -> None:
    """Append one line to ``path``, readable by its owner only (an older file is tightened).

    Rejected records hold personal data. A lone surrogate (a string that is not valid Unicode,
    one reason to reject a record) cannot be encoded as UTF-8: it is written as its JSON escape
    (``\\ud800``), which reads back as the same string.
    """
    fd = open_private(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with open(fd, "a", encoding="utf-8", errors="backslashreplace") as handle:
        handle.write(line)
