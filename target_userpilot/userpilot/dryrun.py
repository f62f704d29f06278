"""Dry run: batches written to disk exactly as they would be uploaded, with no network at all."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
from typing import Any

from target_userpilot.privacy.files import make_private_dirs, open_private
from target_userpilot.summary import count
from target_userpilot.userpilot.client import deletion_body

logger = logging.getLogger("target_userpilot")

#: The files a dry run writes, and the only ones the next dry run removes from output_dir:
#: ``<object>-<n>.ndjson`` batches, and request bodies named ``<object>-<kind>-<n>.json`` or
#: ``.ndjson`` (deletions, events). Anything else in the folder is the operator's and stays.
OUTPUT_FILE = re.compile(r"(users|companies|events)(-[a-z]+)?-[0-9]+\.(ndjson|json)")
#: Track request bodies per ``events-<n>.ndjson`` file, like the rows of a batch.
EVENTS_PER_FILE = 10_000


def clear_previous_run(output_dir: str) -> int:
    """Remove the files an earlier dry run left in ``output_dir``; return how many.

    Otherwise a second dry run into the same folder leaves the first run's extra files beside
    its own, and the folder no longer shows what this run would have sent.
    """
    try:
        names = os.listdir(output_dir)
    except FileNotFoundError:
        return 0
    removed = 0
    for name in names:
        path = os.path.join(output_dir, name)
        if OUTPUT_FILE.fullmatch(name) and os.path.isfile(path) and not os.path.islink(path):
            os.remove(path)
            removed += 1
    return removed


class DryRunClient:
    """Stands in for :class:`~target_userpilot.userpilot.client.UserpilotClient` in a dry run.

    Each batch is copied to ``<output_dir>/<object>-<n>.ndjson`` and reported as a job that has
    already completed, so the summary and everything else behave as in a real run, except STATE:
    the run holds it back (``checkpoints.hold_back``), as nothing here is durable in Userpilot.
    The files hold personal data: they, and the folders the run creates, are owner-only.
    """

    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._events_in_file = 0
        removed = clear_previous_run(output_dir)
        if removed:
            logger.info(
                "Dry run: removed %s of an earlier dry run from output_dir '%s', so it holds "
                "only this run's batches.",
                count(removed, "batch file"),
                output_dir,
            )

    def upload(
        self,
        object: str,
        path: str,
        filename: str,
        *,
        conflict_wait: float = 0.0,
        stop: Any = None,
        reached: Any = None,
    ) -> dict[str, Any]:
        """Write the batch file where the operator can read it; never touches the network.

        ``<object>-<n>.ndjson``; Import API files of events: ``events-import-<n>.ndjson``.
        """
        del filename, conflict_wait, stop, reached  # named like the real client's, unused here
        make_private_dirs(self.output_dir)
        # An events batch is an Import API file (events_api: import), named apart from the
        # track request bodies of events-<n>.ndjson.
        name = "events-import" if object == "events" else object
        n = self._counts[name] = self._counts.get(name, 0) + 1
        target = os.path.join(self.output_dir, f"{name}-{n}.ndjson")
        fd = open_private(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with open(fd, "wb") as out, open(path, "rb") as batch:
            shutil.copyfileobj(batch, out)
        with open(target, "rb") as handle:
            rows = sum(1 for _ in handle)
        return {
            "job_id": f"dry-run:{name}-{n}",
            "status": "completed",
            "filename": os.path.basename(target),
            "total_rows": rows,
            "completed_rows": rows,
        }

    def delete_profiles(self, object: str, ids: list[str], *, stop: Any = None) -> dict[str, Any]:
        """Write the deletion request's body to ``<object>-delete-<n>.json``; delete nothing."""
        key = f"{object}-delete"
        n = self._counts[key] = self._counts.get(key, 0) + 1
        self._write(f"{key}-{n}.json", deletion_body(object, ids))
        return {"message": f"dry run: {len(ids)} {object} would be scheduled for deletion"}

    def _write(self, name: str, data: bytes) -> None:
        """One owner-only file in output_dir (it names people)."""
        make_private_dirs(self.output_dir)
        fd = open_private(
            os.path.join(self.output_dir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        )
        with open(fd, "wb") as out:
            out.write(data)

    def job_status(self, job_id: str, *, stop: Any = None) -> dict[str, Any]:
        """Dry-run jobs complete as they are 'uploaded'."""
        return {"job_id": job_id, "status": "completed"}

    def find_import(
        self, filename: str, job_id: str | None = None, *, stop: Any = None
    ) -> dict[str, Any] | None:
        """A dry run records no import file, so it never looks for one's job."""
        del filename, job_id, stop
        return None

    def track(
        self,
        user_id: str,
        event_name: str,
        metadata: dict[str, Any] | None,
        *,
        stop: Any = None,
    ) -> None:
        """Append one track request body to ``events-<n>.ndjson``, a new file every 10,000."""
        event: dict[str, Any] = {"user_id": user_id, "event_name": event_name}
        if metadata is not None:
            event["metadata"] = metadata
        line = json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:  # the events lane sends from several threads
            if self._events_in_file == 0 or self._events_in_file >= EVENTS_PER_FILE:
                self._counts["events"] = self._counts.get("events", 0) + 1
                self._events_in_file = 0
            self._events_in_file += 1
            make_private_dirs(self.output_dir)
            target = os.path.join(self.output_dir, f"events-{self._counts['events']}.ndjson")
            fd = open_private(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            with open(fd, "w", encoding="utf-8") as out:
                out.write(line)

    def close(self) -> None:
        """Nothing to close."""
