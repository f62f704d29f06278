"""Settings from ``TARGET_USERPILOT_*`` environment variables, each read as its schema's type.

The SDK's own reader raises bare ``ValueError``s on a bad integer or JSON value, leaves numbers
as strings and reads any unrecognised boolean as false; here a value that cannot be its
setting's type is a :class:`ConfigurationError` naming the variable (never a secret's value).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

from target_userpilot.errors import ConfigurationError
from target_userpilot.rows import kind_of
from target_userpilot.settings import json_type

logger = logging.getLogger("target_userpilot")

#: Boolean environment values: the SDK's words for true, and the words for false. Anything else
#: is refused: the SDK would read a typo such as "ture" as false without a word.
TRUTHY = ("true", "1", "yes", "on")
FALSY = ("false", "0", "no", "off", "")


def env_config(
    schema: Mapping[str, Any], prefix: str, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Settings from ``<prefix><NAME>`` environment variables, each read as its schema's type.

    The SDK's own reader raises bare ``ValueError``s on a bad integer or JSON value, leaves
    numbers as strings and reads any unrecognised boolean as false. Here a value that cannot be
    its setting's type is a :class:`ConfigurationError` naming the variable. Without
    ``environ``, a ``.env`` file is loaded first, as the SDK does.
    """
    if environ is None:
        _load_dotenv(prefix)
        environ = os.environ
    config: dict[str, Any] = {}
    for name, prop in schema.get("properties", {}).items():
        variable = prefix + name.upper().replace("-", "_")
        if variable not in environ:
            continue
        logger.info("Parsing '%s' config from env variable '%s'.", name, variable)
        config[name] = _env_value(variable, environ[variable], prop)
    return config


def _load_dotenv(prefix: str) -> None:
    """Load a ``.env`` file into the environment the way the SDK finds and reads it."""
    # The SDK's own reader, given no settings, loads the .env file and parses nothing: the
    # file is then found and applied exactly as the SDK always did.
    from singer_sdk.configuration._dict_config import parse_environment_config

    parse_environment_config({"properties": {}}, prefix)


def _env_value(variable: str, raw: str, prop: Mapping[str, Any]) -> Any:
    wanted = json_type(prop)
    text = raw.strip()
    # Secrets are never echoed; other values are the operator's own configuration.
    shown = "" if prop.get("secret") else f" is '{text[:60]}'"
    if wanted == "integer":
        try:
            return int(text)
        except ValueError:
            example = prop.get("default", 1)
            msg = f"{variable}{shown}, not a whole number. Set it to an integer such as {example}."
            raise ConfigurationError(msg) from None
    if wanted == "number":
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            example = prop.get("default", 1)
            msg = f"{variable}{shown}, not a number. Set it to a number such as {example}."
            raise ConfigurationError(msg)
        return number
    if wanted == "boolean":
        if text.lower() in TRUTHY:
            return True
        if text.lower() in FALSY:
            return False
        msg = f"{variable}{shown}; set it to true or false."
        raise ConfigurationError(msg)
    if wanted in ("object", "array"):
        try:
            value = json.loads(text)
        except ValueError as exc:
            # The position, not the text: stream maps and their config may hold secrets.
            where = ""
            if isinstance(exc, json.JSONDecodeError):
                where = f"line {exc.lineno}, column {exc.colno}"
            msg = (
                f"{variable} is not valid JSON ({getattr(exc, 'msg', exc)} at {where}). It must "
                f"hold a JSON {wanted}."
            )
            raise ConfigurationError(msg) from None
        expected = dict if wanted == "object" else list
        if not isinstance(value, expected):
            msg = f"{variable} holds {kind_of(value)}; it must hold a JSON {wanted}."
            raise ConfigurationError(msg)
        return value
    return raw
