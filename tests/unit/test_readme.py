"""The README's configuration table and the settings object agree."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices

from notifier.config import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme_table() -> None:
    missing = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        assert isinstance(alias, AliasChoices), name
        variable = str(alias.choices[0])
        if f"`{variable}`" not in README:
            missing.append(variable)
    assert missing == []
