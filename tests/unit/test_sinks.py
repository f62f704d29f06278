"""The sink's contract with the SDK: the private hooks it overrides are still called as relied on.

`docs/development.md` lists each override of a private SDK method and what it relies on. These
tests read the pinned SDK's own code, so an upgrade that moves or drops one of those calls fails
here, by name, instead of silently bypassing the override.
"""

from __future__ import annotations

import inspect
import signal
from collections.abc import Callable

from singer_sdk import Target
from singer_sdk.plugin_base import PluginBase
from singer_sdk.sinks import Sink

from target_userpilot.sinks import UserpilotSink


def _source(function: Callable[..., object]) -> str:
    return inspect.getsource(function)


def test_the_sdk_record_path_calls_the_sink_hooks_we_override_in_order() -> None:
    code = _source(Target._process_record_message)
    calls = [
        "._validate_and_parse(",
        "._singer_validate_message(",
        ".process_record(",
        "._after_process_record(",
    ]
    positions = [code.find(call) for call in calls]
    assert -1 not in positions, dict(zip(calls, positions, strict=True))
    assert positions == sorted(positions)


def test_the_sdk_removes_sdc_columns_through_the_hook_we_override() -> None:
    """Without add_record_metadata, the record path calls _remove_sdc_metadata_from_record on
    the record itself, before validation: our override keeps a set _sdc_deleted_at there."""
    code = _source(Target._process_record_message)
    removal = code.find("._remove_sdc_metadata_from_record(transformed_record)")
    assert removal != -1
    assert removal < code.find("._validate_and_parse(")


def test_the_sdk_drains_a_sink_only_when_it_reports_a_size() -> None:
    """Our sinks report size 0: rows live in the run's buffer, so the SDK drains nothing."""
    assert "current_size == 0" in _source(Target.drain_one)
    assert "is_full" in _source(Target._process_record_message)


def test_the_sdk_validates_records_only_in_the_hook_we_override() -> None:
    """Our schema check is part of each record's decision. The SDK's own (which logs a failing
    record's values at ERROR and parses date-times) must stay inside ``_validate_and_parse``,
    which ours replaces, or records would be validated twice."""
    assert "get_validator()" in _source(Sink.__init__)
    assert "_validator" in _source(Sink._validate_and_parse)
    assert "_validator" not in _source(Target._process_record_message)


def test_the_sdk_installs_handle_termination_for_sigterm_and_sigint() -> None:
    code = _source(PluginBase._setup_signal_handlers)
    assert "_handle_termination" in code
    assert "SIGTERM" in code
    assert signal.SIGINT.name in code or "SIGINT" in code


def test_the_sdk_reads_state_messages_through_process_state_message() -> None:
    assert "SingerMessageType.STATE: self._process_state_message" in _source(Target.process_lines)


def test_the_sdk_env_config_is_a_class_property_merged_into_the_config() -> None:
    assert "self._env_var_config" in _source(PluginBase.__init__)


def test_sink_reports_no_size_so_sdk_drains_are_no_ops() -> None:
    assert inspect.isdatadescriptor(UserpilotSink.current_size)
    assert inspect.isdatadescriptor(UserpilotSink.is_full)


def test_the_sdk_reads_batch_and_activate_version_messages_through_the_handlers_we_override() -> (
    None
):
    code = _source(Target.process_lines)
    assert "SingerMessageType.BATCH: self._process_batch_message" in code
    assert "ACTIVATE_VERSION: self._process_activate_version_message" in code


def test_the_sdk_record_handler_takes_one_record_message_and_applies_stream_maps() -> None:
    """BATCH records are handed to ``_process_record_message`` as RECORD message dicts."""
    assert list(inspect.signature(Target._process_record_message).parameters) == [
        "self",
        "message_dict",
    ]
    code = _source(Target._process_record_message)
    assert 'message_dict["stream"]' in code
    assert 'message_dict["record"]' in code
    assert "stream_map.transform(" in code
