"""The README's configuration table names every CLAD_* setting, and only those."""

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from pipeline import settings
from pipeline.settings import Settings

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parents[3] / "README.md"


def _setting_variables() -> set[str]:
    classes = [f.default_factory for f in Settings.model_fields.values()]
    assert all(isinstance(c, type) and issubclass(c, BaseSettings) for c in classes)
    # every concern's class is gathered in Settings: none is left out of the check
    declared = {c for c in vars(settings).values()
                if isinstance(c, type) and issubclass(c, BaseSettings) and c is not Settings
                and c.__module__ == settings.__name__}
    assert declared == set(classes)
    return {f"CLAD_{name.upper()}" for c in classes for name in c.model_fields}


def _readme_variables() -> set[str]:
    section = README.read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for row in section.splitlines():
        if row.startswith("| `CLAD_"):
            names |= set(re.findall(r"`(CLAD_[A-Z0-9_]+)`", row.split("|")[1]))
    return names


def test_readme_settings_table_and_settings_classes_agree() -> None:
    in_code, in_readme = _setting_variables(), _readme_variables()
    missing, unknown = sorted(in_code - in_readme), sorted(in_readme - in_code)
    assert not missing, f"settings missing from the README table: {missing}"
    assert not unknown, f"the README table names settings that do not exist: {unknown}"
