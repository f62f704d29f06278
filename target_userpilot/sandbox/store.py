"""What the account holds: profiles as Userpilot merges them, and the uploads' files when kept.

Plain data without a lock of its own: the account calls it under its lock.
"""

from __future__ import annotations

import copy

from target_userpilot.sandbox.payloads import OBJECTS


class ProfileStore:
    """Users and companies by id, merged row by row in the order jobs complete."""

    def __init__(self, keep_uploads: bool = False) -> None:
        self.keep_uploads = keep_uploads
        self.clear()

    def clear(self) -> None:
        """Forget every profile and kept upload."""
        self.profiles: dict[str, dict[str, dict]] = {obj: {} for obj in OBJECTS}
        self.uploads: list[bytes] = []  # accepted uploads' files, only with keep_uploads

    def keep_upload(self, data: bytes) -> None:
        """Remember an accepted upload's file, if the sandbox was asked to."""
        if self.keep_uploads:
            self.uploads.append(data)

    def merge(self, obj: str, row: dict) -> None:
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

    def profiles_copy(self, obj: str) -> dict[str, dict]:
        """Deep copies of one object's profiles, safe for the caller to change."""
        if obj not in OBJECTS:
            raise ValueError(f"profiles are kept for 'users' and 'companies', not {obj!r}")
        return copy.deepcopy(self.profiles[obj])
