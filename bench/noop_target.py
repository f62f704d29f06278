"""A do-nothing Singer SDK target: the baseline the real target is measured against.

Its sink is a plain ``BatchSink`` with the SDK's own ``process_record`` (records collected in the
batch context) and a ``process_batch`` that does nothing, so its speed is the SDK's own cost of
reading, validating and dispatching records. Run it like any target:
``python bench/noop_target.py --config config.json < input.jsonl``.
"""

from __future__ import annotations

import sys
from typing import Any

from singer_sdk import Target
from singer_sdk import typing as th
from singer_sdk.sinks import BatchSink

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override


class NoopSink(BatchSink):
    """Collects each batch as the SDK does by default, then drops it."""

    @override
    def process_batch(self, context: dict[str, Any]) -> None:
        """Do nothing: the batch is discarded."""


class NoopTarget(Target):
    """A target whose only work is the SDK's."""

    name = "target-noop"
    config_jsonschema = th.PropertiesList().to_dict()
    default_sink_class = NoopSink


if __name__ == "__main__":
    NoopTarget.cli()
