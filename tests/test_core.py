"""The SDK's standard target tests, run against the sandbox, then the target's own basics."""

from __future__ import annotations

import pytest
from singer_sdk.testing import get_target_test_class
from singer_sdk.testing.suites import target_tests

from target_userpilot.sandbox import Sandbox
from target_userpilot.target import TargetUserpilot

# The standard tests build the target in-process with a fixed config, so the sandbox they talk
# to is started once, here, for the whole module.
_SANDBOX = Sandbox(port=0, api_key="standard-tests-key", rows_per_minute=0).start()

_Standard = get_target_test_class(
    TargetUserpilot,
    config={"api_url": _SANDBOX.url, "api_key": "standard-tests-key"},
)


class TestTargetUserpilot(_Standard):  # type: ignore[misc, valid-type]
    """Standard target tests."""

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _stop_sandbox(cls):
        yield
        _SANDBOX.stop()

    @pytest.mark.skip(
        reason="Excluded: the contract rejects a record without a usable id per "
        "on_invalid_record (skip by default) instead of raising MissingKeyPropertiesError; "
        "tests/test_bad_input.py proves both policies."
    )
    def test_target_record_missing_key_property(self) -> None:
        """Replaced by our own bad-input tests."""


def test_standard_suite_is_not_empty() -> None:
    """Guard: a silently empty standard suite would make the class above prove nothing."""
    assert len(target_tests.tests) >= 15
