"""Record validation against the stream's JSON schema, fast for the records that pass.

The SDK validates each record with ``jsonschema``, which costs about ten times more than
everything else the target does with a record. Almost every record is valid, so this module
compiles the schema once into plain Python checks that can only say "valid" when ``jsonschema``
would. Whenever they cannot say so (an invalid record, a value of an unusual type, a schema
keyword they do not implement), the SDK's own ``jsonschema`` validator decides, and its verdict
and error message are the ones reported. The result is exactly the SDK's validation, at a
fraction of its cost on the common path.
"""

from __future__ import annotations

import decimal
import json
import numbers
import sys
import weakref
from collections.abc import Callable
from typing import Any

from singer_sdk.exceptions import InvalidRecord as SchemaInvalidRecord
from singer_sdk.sinks.core import BaseJSONSchemaValidator, JSONSchemaValidator

Check = Callable[[Any], bool]

#: Python types that certainly are each JSON type. Anything else (a float holding an integer,
#: a dict subclass...) is left to jsonschema, which knows every rule.
_TYPES: dict[str, frozenset[type]] = {
    "string": frozenset({str}),
    "integer": frozenset({int}),
    "number": frozenset({int, float, decimal.Decimal}),
    "boolean": frozenset({bool}),
    "null": frozenset({type(None)}),
    "object": frozenset({dict}),
    "array": frozenset({list}),
}
_NUMBERS = _TYPES["number"]

#: Keywords that apply subschemas in ways these checks do not follow: any of them in a schema
#: leaves the whole stream to jsonschema.
_UNSUPPORTED = frozenset(
    {
        "$ref",
        "$dynamicRef",
        "contains",
        "dependentSchemas",
        "if",
        "not",
        "oneOf",
        "patternProperties",
        "prefixItems",
        "propertyNames",
        "unevaluatedItems",
        "unevaluatedProperties",
    }
)

if sys.version_info >= (3, 12):
    from typing import override
else:  # pragma: no cover
    from typing_extensions import override


class Unsupported(Exception):
    """The schema uses a keyword the fast checks do not implement."""


class RecordValidator(BaseJSONSchemaValidator):
    """The SDK's ``jsonschema`` validation, with a compiled fast path for valid records."""

    def __init__(self, schema: dict[str, Any], *, validate_formats: bool = False) -> None:
        # The SDK's validator checks the schema itself, and has the last word on every record.
        self.reference = JSONSchemaValidator(schema, validate_formats=validate_formats)
        super().__init__(schema)
        try:
            self.check: Check | None = compile_schema(
                schema, self.reference.validator, skip_formats=not validate_formats
            )
        except Unsupported:
            self.check = None

    @override
    def validate(self, record: dict[str, Any]) -> None:
        """Return if ``record`` matches the schema; else raise the SDK's ``InvalidRecord``."""
        check = self.check
        if check is None or not check(record):
            self.reference.validate(record)

    def problem(self, record: dict[str, Any]) -> str | None:
        """None when ``record`` matches the schema; else why not, naming the property and the
        rule, never the value (records carry personal data)."""
        check = self.check
        if check is not None and check(record):
            return None
        try:
            self.reference.validate(record)
        except SchemaInvalidRecord as exc:
            return schema_reason(exc)
        return None


def schema_reason(exc: SchemaInvalidRecord) -> str:
    """Why a record failed its schema, naming the property and the rule, never the value."""
    cause = exc.__cause__
    path = ".".join(str(p) for p in getattr(cause, "absolute_path", ()) or ())
    rule = getattr(cause, "validator", None)
    if rule is None:
        return "does not match the stream's schema"
    expected = json.dumps(getattr(cause, "validator_value", None), default=str)
    where = f"property '{path}'" if path else "the record"
    return f"does not match the stream's schema: {where} fails '{rule}' ({expected})"


def compile_schema(schema: Any, validator: Any, *, skip_formats: bool = True) -> Check:
    """A function that returns True only for instances ``validator`` accepts.

    False means "not sure", never "invalid": the caller then asks ``validator``. Raises
    :class:`Unsupported` for a schema that uses a keyword these checks do not implement.
    """
    return _Compiler(validator, skip_formats).node(schema)


class _Compiler:
    def __init__(self, validator: Any, skip_formats: bool) -> None:
        self.validator = validator
        self.keywords = validator.VALIDATORS
        self.skip_formats = skip_formats

    def node(self, schema: Any) -> Check:
        if schema is True or schema == {}:
            return _accept
        if schema is False or not isinstance(schema, dict):
            return _unsure
        checks: list[Check] = []
        for keyword, value in schema.items():
            if keyword not in self.keywords:
                continue  # annotations ($defs, title, description...) jsonschema ignores too
            if keyword in _UNSUPPORTED:
                raise Unsupported(keyword)
            check = self.keyword(keyword, value, schema)
            if check is not None:
                checks.append(check)
        if not checks:
            return _accept
        if len(checks) == 1:
            return checks[0]
        if len(checks) == 2:
            first, second = checks
            return lambda v: first(v) and second(v)
        return lambda v: all(check(v) for check in checks)

    def keyword(self, keyword: str, value: Any, schema: dict[str, Any]) -> Check | None:
        if keyword == "type":
            return _type(value)
        if keyword == "properties":
            return self.properties(value, schema.get("additionalProperties", True))
        if keyword == "additionalProperties":
            # Checked together with properties, when there are any.
            return None if "properties" in schema else self.properties({}, value)
        if keyword == "items":
            return self.items(value)
        if keyword in ("anyOf", "allOf"):
            branches = [self.node(branch) for branch in value]
            if keyword == "anyOf":
                return lambda v: any(branch(v) for branch in branches)
            return lambda v: all(branch(v) for branch in branches)
        if keyword == "required":
            required = tuple(value)
            return lambda v: (
                all(key in v for key in required) if type(v) is dict else not isinstance(v, dict)
            )
        if keyword == "format" and self.skip_formats:
            return None
        if keyword == "enum":
            return self.enum(value, schema)
        if keyword in ("maxLength", "minLength"):
            return _length(keyword, value)
        if keyword in ("maximum", "minimum"):
            return _bound(keyword, value)
        return self.delegate(keyword, value, schema)

    def properties(self, properties: dict[str, Any], additional: Any) -> Check:
        checks = {name: self.node(sub) for name, sub in properties.items()}
        checks = {name: check for name, check in checks.items() if check is not _accept}
        # Most properties only name their types: those are tested inline, without a call.
        simple = {name: _TYPE_SETS[check] for name, check in checks.items() if check in _TYPE_SETS}
        checks = {name: check for name, check in checks.items() if name not in simple}
        extra: Check | None
        if additional is True or additional == {}:
            extra = None
        elif additional is False:
            extra = _unsure
        else:
            extra = self.node(additional)

        def check_properties(v: Any) -> bool:
            if type(v) is not dict:
                return not isinstance(v, dict)
            for name, item in v.items():
                allowed = simple.get(name)
                if allowed is not None:
                    if type(item) not in allowed:
                        return False
                    continue
                check = checks.get(name)
                if check is not None:
                    if not check(item):
                        return False
                elif extra is not None and name not in properties and not extra(item):
                    return False
            return True

        return check_properties

    def items(self, items: Any) -> Check:
        each = self.node(items)
        if each is _accept:
            return _accept

        def check_items(v: Any) -> bool:
            if type(v) is not list:
                return not isinstance(v, list)
            return all(each(item) for item in v)

        return check_items

    def enum(self, members: list[Any], schema: dict[str, Any]) -> Check:
        # Only strings and null are matched here: for them Python's == is jsonschema's equality
        # (for numbers and booleans it is not: True == 1 in Python, not in JSON Schema).
        strings = frozenset(m for m in members if type(m) is str)
        has_null = any(m is None for m in members)
        exact = self.delegate("enum", members, schema)

        def check_enum(v: Any) -> bool:
            if type(v) is str:
                return v in strings
            if v is None:
                return has_null
            return exact(v)

        return check_enum

    def delegate(self, keyword: str, value: Any, schema: dict[str, Any]) -> Check:
        """Any other one-value keyword: jsonschema's own implementation of it."""
        implementation = self.keywords[keyword]
        validator = self.validator

        def check(v: Any) -> bool:
            try:
                return next(iter(implementation(validator, value, v, schema)), None) is None
            except Exception:  # noqa: BLE001 - unsure: jsonschema decides (and raises it again)
                return False

        return check


def _accept(v: Any) -> bool:
    return True


def _unsure(v: Any) -> bool:
    return False


#: The type checks made so far, with the types each allows (``properties`` inlines them).
_TYPE_SETS: weakref.WeakKeyDictionary[Check, frozenset[type]] = weakref.WeakKeyDictionary()


def _type(names: str | list[str]) -> Check:
    if isinstance(names, str):
        names = [names]
    allowed: set[type] = set()
    for name in names:
        if name not in _TYPES:
            raise Unsupported(f"type {name!r}")
        allowed |= _TYPES[name]
    frozen = frozenset(allowed)

    def check_type(v: Any) -> bool:
        return type(v) in frozen

    _TYPE_SETS[check_type] = frozen
    return check_type


def _length(keyword: str, limit: int) -> Check:
    """``maxLength`` / ``minLength``: strings are measured, other values pass."""
    if keyword == "maxLength":
        return lambda v: len(v) <= limit if type(v) is str else not isinstance(v, str)
    return lambda v: len(v) >= limit if type(v) is str else not isinstance(v, str)


def _bound(keyword: str, limit: Any) -> Check:
    """``maximum`` / ``minimum``: numbers are compared, other values pass.

    NaN fails the comparison and is left to jsonschema, like numbers of unusual types.
    """

    def other(v: Any) -> bool:
        return type(v) is bool or not isinstance(v, numbers.Number)

    if keyword == "maximum":
        return lambda v: v <= limit if type(v) in _NUMBERS else other(v)
    return lambda v: v >= limit if type(v) in _NUMBERS else other(v)
