"""What the account holds: profiles as Userpilot merges them, scheduled deletions, received
events, and the uploads' files when kept.

Plain data without a lock of its own: the account calls it under its lock.
"""

from __future__ import annotations

import copy
from typing import Any

from target_userpilot.sandbox.payloads import OBJECTS


class ProfileStore:
    """Users and companies by id, merged row by row in the order jobs complete; deletions as
    scheduled (applied only by `run_deletions`, as Userpilot runs them once a day); events in
    the order they were received."""

    def __init__(self, keep_uploads: bool = False) -> None:
        self.keep_uploads = keep_uploads
        self.clear()

    def clear(self) -> None:
        """Forget every profile and kept upload."""
        self.profiles: dict[str, dict[str, dict[str, Any]]] = {obj: {} for obj in OBJECTS}
        self.uploads: list[bytes] = []  # accepted uploads' files, only with keep_uploads
        self.deletions: dict[str, list[str]] = {obj: [] for obj in OBJECTS}
        self.pending_deletions: dict[str, list[str]] = {obj: [] for obj in OBJECTS}
        self.events: list[dict[str, Any]] = []
        #: Records of completed Import API jobs, in file order, each with its `inserted_at`.
        self.imported: list[dict[str, Any]] = []

    def keep_upload(self, data: bytes) -> None:
        """Remember an accepted upload's file, if the sandbox was asked to."""
        if self.keep_uploads:
            self.uploads.append(data)

    def merge(self, obj: str, row: dict[str, Any]) -> None:
        """Apply one row as Userpilot does: metadata merges, null removes, a company_id moves."""
        id_field = OBJECTS[obj][0]
        key = row[id_field]
        profiles = self.profiles[obj]
        if obj == "users":
            profile = profiles.setdefault(key, {"user_id": key, "company_id": None, "metadata": {}})
            if row.get("company_id") is not None:
                profile["company_id"] = row["company_id"]
        else:
            profile = profiles.setdefault(key, {"company_id": key, "metadata": {}})
        for name, value in (row.get("metadata") or {}).items():
            if value is None:
                profile["metadata"].pop(name, None)
            else:
                profile["metadata"][name] = value

    def profiles_copy(self, obj: str) -> dict[str, dict[str, Any]]:
        """Deep copies of one object's profiles, safe for the caller to change."""
        if obj not in OBJECTS:
            raise ValueError(f"profiles are kept for 'users' and 'companies', not {obj!r}")
        return copy.deepcopy(self.profiles[obj])

    def schedule_deletions(self, obj: str, ids: list[str]) -> None:
        """Note ids to delete at the next deletion run; the profiles stay until then."""
        self.deletions[obj].extend(ids)
        self.pending_deletions[obj].extend(ids)

    def deletions_copy(self, obj: str) -> list[str]:
        """Every id scheduled for deletion since the start or a reset, in request order."""
        if obj not in OBJECTS:
            raise ValueError(f"deletions are kept for 'users' and 'companies', not {obj!r}")
        return list(self.deletions[obj])

    def run_deletions(self) -> dict[str, int]:
        """Apply the pending deletions: profiles go, and a deleted user's events with them.

        Whatever profile holds a scheduled id when the run comes is erased, including one
        created again after the deletion request, as Userpilot's daily run would.
        Returns how many profiles were removed, per object.
        """
        removed = dict.fromkeys(OBJECTS, 0)
        for obj, ids in self.pending_deletions.items():
            for key in ids:
                if self.profiles[obj].pop(key, None) is not None:
                    removed[obj] += 1
            if obj == "users" and ids:
                gone = set(ids)
                self.events = [event for event in self.events if event["user_id"] not in gone]
                self.imported = [e for e in self.imported if e.get("user_id") not in gone]
            ids.clear()
        return removed

    def has_profile(self, obj: str, key: str) -> bool:
        """Whether a profile with this id exists now."""
        return key in self.profiles[obj]

    def add_event(self, event: dict[str, Any]) -> None:
        """Store one received event."""
        self.events.append(event)

    def import_records(self, records: list[dict[str, Any]], completed_at: str, job_id: str) -> None:
        """Apply a completed import job: profiles identified, events kept with their time."""
        for record in records:
            kind = record["event_type"]
            if kind in ("identify_user", "identify_company"):
                obj = "users" if kind == "identify_user" else "companies"
                row: dict[str, Any] = {
                    k: record[k] for k in ("user_id", "company_id", "metadata") if k in record
                }
                if obj == "companies":
                    row.pop("user_id", None)
                self.merge(obj, row)
                continue
            self.imported.append({**record, "imported_at": completed_at, "job_id": job_id})

    def imported_copy(self) -> list[dict[str, Any]]:
        """Every imported event (track and page_view records), oldest job first."""
        return copy.deepcopy(self.imported)

    def events_copy(self) -> list[dict[str, Any]]:
        """Every received event, oldest first, as deep copies."""
        return copy.deepcopy(self.events)
