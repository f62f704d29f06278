"""Generate the Meltano Hub plugin definition of the loader from `target-userpilot --about`.

    python scripts/hub_definition.py          # rewrite the definition (path: DEFINITION)
    python scripts/hub_definition.py --check  # exit 1 (and show a diff) if it is stale

The file follows Meltano Hub's plugin definition syntax (the Hub keeps such files as
``_data/meltano/loaders/<name>/<variant>.yml``), so it can be proposed to the Hub as it is, or
used directly: ``meltano add --plugin-type loader target-userpilot --from-ref <this file>``.

Everything comes from ``--about --format=json`` (names, kinds, defaults, descriptions, which
setting is secret, capabilities), except what ``--about`` cannot say: the display labels and the
plugin's ``commands`` (``sandbox`` runs the bundled ``userpilot-sandbox``, ``ledger`` runs
``userpilot-ledger``, each from the loader's own virtualenv, where Meltano's ``invoke`` finds them
and hands them the loader's settings), taken from the loader in the project's ``meltano.yml`` so
the two read the same, and the few constants below.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from readme_settings import about, write_or_check

ROOT = Path(__file__).resolve().parent.parent
VARIANT = "userpilot"
DEFINITION = ROOT / "plugin" / "loaders" / f"target-userpilot--{VARIANT}.yml"
MELTANO_YML = ROOT / "meltano.yml"
HEADER = (
    "# Meltano Hub plugin definition of target-userpilot, generated from\n"
    "# `target-userpilot --about --format=json` by `make hub` (scripts/hub_definition.py).\n"
    "# Do not edit by hand. Use it with:\n"
    "#   meltano add --plugin-type loader target-userpilot --from-ref <path or URL of this file>\n"
)
#: The one setting a run needs (a dry run, which sends nothing, does without it).
SETTINGS_GROUP_VALIDATION = [["api_key"]]
#: Words whose capitals a name-derived label should keep.
ACRONYMS = {"api": "API", "url": "URL", "id": "ID", "db": "DB", "json": "JSON", "ndjson": "NDJSON"}


def meltano_kind(schema: dict[str, Any]) -> str:
    """The Meltano setting ``kind`` for a JSON schema from ``--about``.

    A JSON number becomes ``string``, and the target reads the number from the text ("2.5").
    Meltano 4.4 has no kind that takes a fraction from both places: ``integer`` (what the Hub's
    own generator, hub-utils, maps a number to) fails on ``meltano config set ... 2.5`` and on
    ``TARGET_USERPILOT_BATCH_WAIT_SECONDS=0.5`` (``int()``), and ``decimal`` stops with "Object
    of type Decimal is not JSON serializable" when the value comes from an environment variable.
    """
    if "enum" in schema:
        return "options"
    types = json_types(schema)
    if len(types) == 1:
        return {"number": "string"}.get(types[0], types[0])
    return "array" if "array" in types else "string"


def json_types(schema: dict[str, Any]) -> list[str]:
    """The non-null JSON types a schema allows, in order."""
    found: list[str] = []
    declared = schema.get("type")
    if isinstance(declared, str):
        found.append(declared)
    elif isinstance(declared, list):
        found += [t for t in declared if isinstance(t, str)]
    for option in schema.get("anyOf", []) + schema.get("oneOf", []):
        if isinstance(option, dict):
            found += json_types(option)
    unique: list[str] = []
    for kind in found:
        if kind != "null" and kind not in unique:
            unique.append(kind)
    return unique


def settings_of(about_doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Settings as Meltano names them, in ``--about`` order.

    An object that takes keys of its own choosing (``object_mapping``, ``stream_maps``) is one
    setting of kind object; an object with a fixed set of properties and nothing else
    (``faker_config``) is its properties, dotted (``faker_config.seed``), as the Hub lists them.
    """
    out: list[tuple[str, dict[str, Any]]] = []
    for name, schema in about_doc["settings"].get("properties", {}).items():
        children = schema.get("properties") or {}
        if children and not schema.get("additionalProperties"):
            out += [(f"{name}.{child}", sub) for child, sub in children.items()]
        else:
            out.append((name, schema))
    return out


def loader_in_meltano_yml(path: Path = MELTANO_YML) -> dict[str, Any]:
    """The target-userpilot loader as the project's meltano.yml declares it."""
    project = yaml.safe_load(path.read_text(encoding="utf-8"))
    for loader in project.get("plugins", {}).get("loaders", []):
        if loader.get("name") == "target-userpilot":
            declared: dict[str, Any] = loader
            return declared
    msg = f"{path} declares no target-userpilot loader."
    raise SystemExit(msg)


def definition(about_doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """The plugin definition, as data."""
    doc = about_doc if about_doc is not None else about()
    loader = loader_in_meltano_yml()
    labels = {s["name"]: s for s in loader.get("settings", [])}
    settings = []
    for name, schema in sorted(settings_of(doc)):
        known = labels.get(name, {})
        setting: dict[str, Any] = {
            "name": name,
            "label": known.get("label") or schema.get("title") or _label(name),
            "kind": meltano_kind(schema),
            "description": " ".join(str(schema.get("description") or "").split()),
        }
        if schema.get("secret"):
            setting["sensitive"] = True
        if setting["kind"] == "options":
            option_labels = {o["value"]: o.get("label") for o in known.get("options", [])}
            setting["options"] = [
                {"label": option_labels.get(value) or _label(str(value)), "value": value}
                for value in schema["enum"]
                if value is not None
            ]
        if schema.get("default") is not None:
            setting["value"] = schema["default"]
        settings.append(setting)
    urls = _project_urls()
    result: dict[str, Any] = {
        "name": doc["name"],
        "variant": VARIANT,
        "namespace": doc["name"].replace("-", "_"),
        "label": loader.get("label", "Userpilot"),
        "description": doc["description"],
        "domain_url": "https://userpilot.com",
        "executable": doc["name"],
        "pip_url": doc["name"],  # the distribution's name, as published
        "capabilities": sorted(doc["capabilities"]),
        "keywords": ["meltano_sdk"],
        "maintenance_status": "beta",
        "settings": settings,
        "settings_group_validation": SETTINGS_GROUP_VALIDATION,
    }
    if loader.get("commands"):
        result["commands"] = loader["commands"]
    # Only what pyproject.toml knows: no invented addresses.
    if "repository" in urls or "homepage" in urls:
        result["repo"] = urls.get("repository") or urls["homepage"]
    if "documentation" in urls:
        result["docs"] = urls["documentation"]
    return result


def render(data: dict[str, Any]) -> str:
    """The file's text: the header, then the definition with sorted keys, as the Hub keeps it."""
    body = yaml.safe_dump(data, sort_keys=True, allow_unicode=True, width=100)
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    """Write (or, with ``--check``, verify) the plugin definition."""
    parser = argparse.ArgumentParser(description="Generate the Meltano Hub plugin definition.")
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    parser.add_argument("--output", type=Path, default=DEFINITION)
    args = parser.parse_args(argv)

    data = definition()
    wanted = render(data)
    current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
    # Compared as data, so another PyYAML's line wrapping is not a difference.
    fresh = bool(current) and yaml.safe_load(current) == data and current.startswith(HEADER)
    return write_or_check(
        args.output, current, wanted, check=args.check, make_target="hub", fresh=fresh
    )


def _project_urls() -> dict[str, str]:
    """``[project.urls]`` of pyproject.toml, keys lower-cased (none on Python 3.10: no tomllib)."""
    if sys.version_info >= (3, 11):
        import tomllib

        project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
        return {k.lower(): v for k, v in project.get("urls", {}).items()}
    return {}


def _label(name: str) -> str:
    words = name.replace(".", " ").replace("_", " ").replace("-", " ").split()
    return " ".join(ACRONYMS.get(w.lower(), w.capitalize()) for w in words)


if __name__ == "__main__":
    sys.exit(main())
