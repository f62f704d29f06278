"""Dry run: batches written to disk exactly as they would be uploaded, with no network at all."""

from __future__ import annotations

import os
import shutil
from typing import Any


class DryRunClient:
    """Stands in for :class:`~target_userpilot.client.UserpilotClient` when ``dry_run`` is on.

    Each batch is copied to ``<output_dir>/<object>-<n>.ndjson`` and reported as a job that has
    already completed, so STATE, the summary and everything else behave as in a real run.
    """

    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir
        self._counts: dict[str, int] = {}

    def upload(
        self, object: str, path: str, filename: str, *, conflict_wait: float = 0.0
    ) -> dict[str, Any]:
        """Write the batch file where the operator can read it; never touches the network."""
        del filename, conflict_wait  # named like the real client's, unused here
        os.makedirs(self.output_dir, exist_ok=True)
        n = self._counts[object] = self._counts.get(object, 0) + 1
        target = os.path.join(self.output_dir, f"{object}-{n}.ndjson")
        shutil.copyfile(path, target)
        with open(target, "rb") as handle:
            rows = sum(1 for _ in handle)
        return {
            "job_id": f"dry-run:{object}-{n}",
            "status": "completed",
            "filename": os.path.basename(target),
            "total_rows": rows,
            "completed_rows": rows,
        }

    def job_status(self, job_id: str) -> dict[str, Any]:
        """Dry-run jobs complete as they are 'uploaded'."""
        return {"job_id": job_id, "status": "completed"}

    def close(self) -> None:
        """Nothing to close."""
