"""Singer input: one line at a time, with errors that name the line and never echo a record."""

from __future__ import annotations

import json

from singer_sdk.exceptions import InvalidInputLine
from singer_sdk.io_base import SingerReader


class InputReader(SingerReader):
    """Singer input with errors that name the line, and never echo a whole record to the log."""

    def __init__(self) -> None:
        super().__init__()
        self.line_number = 0

    def deserialize_json(self, line: str) -> dict:
        """Parse one input line; a bad one stops the run with its line number.

        Numbers with a fraction become floats, not the SDK's Decimals: Userpilot stores numbers
        as JavaScript doubles, so a Decimal would only be made and converted back to a float
        for every number of every record. Integers stay exact ints (ids keep every digit).
        """
        self.line_number += 1
        try:
            message = json.loads(line)
        except ValueError as exc:
            msg = (
                f"Input line {self.line_number} is not valid JSON ({exc}). The tap's output is "
                "malformed; nothing after the last STATE was lost, fix the tap and rerun."
            )
            raise InvalidInputLine(msg) from None
        if not isinstance(message, dict):
            msg = f"Input line {self.line_number} is not a Singer message (a JSON object)."
            raise InvalidInputLine(msg)
        return message

    def assert_line_requires(self, line_dict: dict, requires: set[str]) -> None:
        """Name the line and the missing keys, never the message (it may hold personal data)."""
        missing = requires - set(line_dict)
        if missing:
            msg = (
                f"Input line {self.line_number} is missing the key(s) "
                f"{', '.join(sorted(missing))}; it is not a valid Singer message. Fix the tap "
                "and rerun."
            )
            raise InvalidInputLine(msg)

    def _process_unknown_message(self, message_dict: dict) -> None:
        msg = (
            f"Input line {self.line_number} has unknown Singer message type "
            f"'{message_dict.get('type')}'; expected SCHEMA, RECORD, STATE, ACTIVATE_VERSION or "
            "BATCH."
        )
        raise InvalidInputLine(msg)
