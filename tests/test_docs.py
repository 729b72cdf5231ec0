"""The README stays true: its settings table lists every setting with its real default."""

from __future__ import annotations

import re
from pathlib import Path

from qa.config import BUNDLED_MODEL, PROJECT_ROOT, describe_settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _table() -> dict[str, str]:
    block = README.split("<!-- settings-table -->")[1].split("<!-- /settings-table -->")[0]
    rows = {}
    for line in block.splitlines():
        m = re.match(r"\|\s*`(QA_[A-Z_]+)`\s*\|\s*(.*?)\s*\|", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_every_setting_is_documented_with_its_default() -> None:
    table = _table()
    settings = describe_settings()
    assert set(table) == {s["env"] for s in settings}
    for s in settings:
        documented = table[s["env"]].strip("`")
        default = s["default"]
        if default == BUNDLED_MODEL:
            assert "bundled" in documented
        elif isinstance(default, Path):
            assert documented.rstrip("/") == str(default.relative_to(PROJECT_ROOT))
        elif default == "":
            assert documented == "(empty)"
        else:
            assert documented == str(default), s["env"]


def test_readme_starts_with_the_two_commands() -> None:
    commands = re.findall(r"^make (\w+)", README.split("## ")[0], flags=re.MULTILINE)
    assert commands == ["serve", "test"]
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert re.search(r"^serve:", makefile, re.MULTILINE)
    assert re.search(r"^test:", makefile, re.MULTILINE)
    assert "make test" in (PROJECT_ROOT / ".ci" / "run").read_text()
