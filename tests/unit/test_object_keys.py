"""Keys cleared: a null object, or one that lost keys, sends null for the keys it no longer has.

Plain dicts through ``to_row`` with an :class:`ObjectKeys` (pure); the runs through the real
target, across runs with the ledger and within a run without one, are in ``test_keys_cleared``.
"""

from __future__ import annotations

from typing import Any

from target_userpilot.records.object_keys import ObjectKeys
from target_userpilot.records.routing import route_for
from target_userpilot.records.rows import NamesSeen, to_row

#: A jsonb column as tap-postgres declares it: no properties, so keys come only from values.
JSONB = {"id": {"type": "integer"}, "prefs": {"type": ["object", "null"]}}


def _row(keys: ObjectKeys, **values: object) -> dict[str, Any]:
    route = route_for("users", JSONB, ["id"])
    metadata: dict[str, Any] = to_row({"id": 1, **values}, route, NamesSeen(keys))[1]["metadata"]
    return metadata


def test_a_null_object_clears_every_key_it_was_sent_with() -> None:
    keys = ObjectKeys()
    assert _row(keys, prefs={"lang": "en", "theme": "dark"}) == {
        "prefs__lang": "en",
        "prefs__theme": "dark",
    }

    assert _row(keys, prefs=None) == {"prefs": None, "prefs__lang": None, "prefs__theme": None}


def test_an_object_that_lost_a_key_clears_that_key_only() -> None:
    keys = ObjectKeys()
    _row(keys, prefs={"lang": "en", "theme": "dark"})

    assert _row(keys, prefs={"lang": "fr"}) == {"prefs__lang": "fr", "prefs__theme": None}
    assert _row(keys, prefs={}) == {"prefs__lang": None, "prefs__theme": None}


def test_nested_keys_are_cleared_when_their_branch_goes() -> None:
    keys = ObjectKeys()
    _row(keys, prefs={"ui": {"theme": "dark", "size": 2}, "lang": "en"})

    assert _row(keys, prefs={"ui": None, "lang": "en"}) == {
        "prefs__ui": None,
        "prefs__lang": "en",
        "prefs__ui__theme": None,
        "prefs__ui__size": None,
    }


def test_an_object_that_became_a_plain_value_or_an_array_clears_its_keys() -> None:
    keys = ObjectKeys()
    _row(keys, prefs={"lang": "en"})

    assert _row(keys, prefs="none") == {"prefs": "none", "prefs__lang": None}
    assert _row(keys, prefs=["a"]) == {"prefs": '["a"]', "prefs__lang": None}


def test_keys_known_from_earlier_runs_are_cleared_on_the_first_row() -> None:
    keys = ObjectKeys({"prefs": ["prefs__lang", "prefs__theme"]})

    assert _row(keys, prefs=None) == {"prefs": None, "prefs__lang": None, "prefs__theme": None}
    assert keys.take_new() == {}  # nothing new for the ledger


def test_new_keys_are_handed_out_once_for_the_ledger() -> None:
    keys = ObjectKeys({"prefs": ["prefs__lang"]})
    _row(keys, prefs={"lang": "en", "theme": "dark"})

    assert keys.take_new() == {"prefs": ["prefs__theme"]}
    _row(keys, prefs={"lang": "en", "theme": "dark"})
    assert keys.take_new() == {}


def test_a_property_absent_from_the_record_clears_nothing() -> None:
    keys = ObjectKeys({"prefs": ["prefs__lang"]})

    assert _row(keys, plan="pro") == {"plan": "pro"}


def test_a_value_another_property_gives_is_not_overwritten_by_a_clear() -> None:
    keys = ObjectKeys({"prefs": ["prefs__lang"]})

    assert _row(keys, prefs__lang="de", prefs=None) == {"prefs__lang": "de", "prefs": None}


def test_the_memory_is_bounded_and_says_so() -> None:
    keys = ObjectKeys(limit=3)
    _row(keys, prefs={"a": 1, "b": 2, "c": 3, "d": 4})

    assert keys.full
    assert keys.count == 3


def test_without_keys_a_row_is_as_before() -> None:
    route = route_for("users", JSONB, ["id"])

    assert to_row({"id": 1, "prefs": None}, route)[1]["metadata"] == {"prefs": None}


def test_cleared_keys_come_in_one_order_whatever_order_they_were_learned_in() -> None:
    """skip_unchanged compares encoded rows: a run that learned them must match one that loaded."""
    learned = ObjectKeys()
    _row(learned, prefs={"theme": "dark", "lang": "en", "b": 1})
    loaded = ObjectKeys({"prefs": ["prefs__lang", "prefs__b", "prefs__theme"]})

    assert list(_row(learned, prefs=None)) == list(_row(loaded, prefs=None))
