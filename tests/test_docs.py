"""The README stays true: its settings table (defaults and flags), the CLI's exit statuses and the
API's error statuses match the code."""

from __future__ import annotations

import re
from pathlib import Path

import click

import qa.cli
import qa.web
from qa import errors, openapi
from qa.cli import COMMAND_SETTINGS, cli, setting_flag
from qa.config import BUNDLED_MODEL, CHECKOUT_ROOT, describe_settings

PROJECT_ROOT = CHECKOUT_ROOT or Path()

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _rows() -> dict[str, tuple[str, str]]:
    """Variable -> (flag column, default column) of the README's settings table."""
    block = README.split("<!-- settings-table -->")[1].split("<!-- /settings-table -->")[0]
    rows = {}
    for line in block.splitlines():
        m = re.match(r"\|\s*`(QA_[A-Z_]+)`\s*\|\s*(.*?)\s*\|\s*(.*?)\s*\|", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3))
    return rows


def _table() -> dict[str, str]:
    return {env: default for env, (_, default) in _rows().items()}


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
            assert documented.rstrip("/") == default.name
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
    ci = (PROJECT_ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    # CI runs the newcomer's path (runtime dependencies only) before the test extra is installed.
    assert re.search(r"^smoke:", makefile, re.MULTILINE)
    commands = [line.split()[1] for line in ci.splitlines() if line.startswith("make ")]
    assert commands.index("smoke") < commands.index("audit") < commands.index("test")


def _options(command: click.Command) -> set[str]:
    return {opt for p in command.params if isinstance(p, click.Option) for opt in p.opts}


def _commands() -> dict[str, click.Command]:
    """Every command by its name as typed, subcommands of a group too (``feedback export``)."""
    assert isinstance(cli, click.Group)
    found: dict[str, click.Command] = {}
    for name, command in cli.commands.items():
        found[name] = command
        if isinstance(command, click.Group):
            found.update({f"{name} {sub}": c for sub, c in command.commands.items()})
    return found


def test_settings_table_names_the_real_flags_of_each_command() -> None:
    assert isinstance(cli, click.Group)
    for row in describe_settings():
        flag = setting_flag(row["name"])
        having = [name for name, command in _commands().items() if flag in _options(command)]
        assert sorted(having) == sorted(c for c, names in COMMAND_SETTINGS.items()
                                        if row["name"] in names), flag
        documented = _rows()[row["env"]][0]
        if having:
            assert documented == f"`{flag}` ({', '.join(having)})"
        else:
            assert "environment only" in documented
    # Secrets stay in the environment: no command takes one as a flag.
    secrets = [setting_flag(r["name"]) for r in describe_settings() if r["metadata"].get("secret")]
    assert "--admin-token" in secrets
    assert all(flag not in _options(c) for c in _commands().values() for flag in secrets)


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_readme_names_every_exit_status_of_an_error() -> None:
    assert qa.cli and qa.web  # every module that defines an error class is loaded
    statuses = {cls.exit_status for cls in {errors.QAError, *_subclasses(errors.QAError)}}
    sentence = re.search(r"Errors print one `error: \.\.\.` line and exit with status (.*?)\.\n",
                         README, re.DOTALL)
    assert sentence is not None
    assert {int(n) for n in re.findall(r"\b\d\b", sentence.group(1))} == statuses


def test_readme_lists_the_error_statuses_of_the_openapi_document() -> None:
    document = openapi.openapi_document()
    declared = {int(status) for path in document["paths"].values() for op in path.values()
                for status in op["responses"] if int(status) >= 400}
    sentence = re.search(r"Errors are always .*? with\s+status ([\d, or]+)\.", README, re.DOTALL)
    assert sentence is not None
    listed = {int(n) for n in re.findall(r"\d{3}", sentence.group(1))}
    # 405 is Flask's answer to a wrong method on any route: not declared per operation.
    assert listed == declared | {405}
