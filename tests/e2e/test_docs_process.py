"""Generated documentation agrees with ``--about``: the README's settings table, the Hub
definition and meltano.yml, read by running the target and the generator scripts as processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import hub_definition  # noqa: E402 - a script module, importable once scripts/ is on the path

from target_userpilot.settings import Settings  # noqa: E402

README_PATH = REPO / "README.md"
README = README_PATH.read_text(encoding="utf-8")
#: Every documentation file whose links must resolve: the README and each page it links to.


@pytest.fixture(scope="module")
def about() -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "target_userpilot", "--about", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    about: dict[str, Any] = json.loads(result.stdout)
    return about


def _loader() -> dict[str, Any]:
    return hub_definition.loader_in_meltano_yml(REPO / "meltano.yml")


# Generated files are up to date


@pytest.mark.parametrize("script", ["readme_settings.py", "hub_definition.py"])
def test_generated_docs_match_about(script: str) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def test_check_mode_notices_a_stale_readme(tmp_path: Path) -> None:
    stale = tmp_path / "README.md"
    stale.write_text(README.replace("| `dry_run` | boolean | `false` |", "| `dry_run` | bool | |"))
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "readme_settings.py"),
            "--check",
            "--readme",
            stale,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "make readme" in result.stderr


def test_check_mode_notices_a_stale_hub_definition(tmp_path: Path) -> None:
    stale = tmp_path / "definition.yml"
    text = (REPO / "plugin" / "loaders" / "target-userpilot--userpilot.yml").read_text()
    stale.write_text(text.replace("value: 7200", "value: 3600"))
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "hub_definition.py"), "--check", "--output", stale],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "make hub" in result.stderr


# meltano.yml and --about


def test_meltano_yml_declares_every_setting_of_about_with_its_kind_and_default(
    about: dict[str, Any],
) -> None:
    declared = {s["name"]: s for s in _loader()["settings"]}
    expected = dict(hub_definition.settings_of(about))

    assert sorted(declared) == sorted(expected)
    for name, schema_ in expected.items():
        setting = declared[name]
        assert setting.get("kind", "string") == hub_definition.meltano_kind(schema_), name
        assert setting.get("value") == schema_.get("default"), name
        assert bool(setting.get("sensitive")) == bool(schema_.get("secret")), name
        if "enum" in schema_:
            assert [o["value"] for o in setting["options"]] == schema_["enum"], name


def test_meltano_yml_describes_the_targets_own_settings_as_about_does(
    about: dict[str, Any],
) -> None:
    declared = {s["name"]: s for s in _loader()["settings"]}
    # The target's own settings; the SDK's built-ins may keep wording of their own there.
    for name in Settings.__dataclass_fields__:
        described = " ".join(declared[name]["description"].split())
        assert described == about["settings"]["properties"][name]["description"], name


def test_meltano_yml_capabilities_are_the_targets(about: dict[str, Any]) -> None:
    loader = _loader()
    assert sorted(loader["capabilities"]) == sorted(about["capabilities"])
    assert loader["executable"] == about["name"]
    assert loader["namespace"] == about["name"].replace("-", "_")
