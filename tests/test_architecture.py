"""Module boundaries of the qa package, checked on the source with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "qa"
MODULES = sorted(PACKAGE.rglob("*.py"))  # subpackages too: qa/store/ is a package of modules
STORE = PACKAGE / "store"
MODEL_LIBS = {"torch", "sentence_transformers", "onnxruntime", "onnx", "transformers",
              "tokenizers"}
STORAGE_LIBS = {"faiss", "sqlite3"}
ENV_WRITERS = {"setdefault", "update"}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imports(path: Path) -> set[str]:
    """Top-level package names a module imports (anywhere in the file, lazy imports too)."""
    found: set[str] = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _is_os_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ"
            and isinstance(node.value, ast.Name) and node.value.id == "os")


def _environment_reads(path: Path) -> list[int]:
    """Line numbers where the module reads the environment (writes of defaults are allowed)."""
    tree = _tree(path)
    parents = _parents(tree)
    lines = []
    for node in ast.walk(tree):
        imported = isinstance(node, ast.ImportFrom) and node.module == "os" and any(
            a.name in ("environ", "getenv", "environb", "getenvb") for a in node.names)
        called = (isinstance(node, ast.Attribute) and node.attr in ("getenv", "getenvb")
                  and isinstance(node.value, ast.Name) and node.value.id == "os")
        if imported or called:
            lines.append(node.lineno)
        elif _is_os_environ(node):
            parent = parents.get(node)
            writes = (
                isinstance(parent, ast.Attribute) and parent.attr in ENV_WRITERS
                and isinstance(parents.get(parent), ast.Call)
                and parents[parent].func is parent  # type: ignore[attr-defined]
            ) or (
                isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store | ast.Del)
            )
            if not writes:
                lines.append(node.lineno)
    return sorted(lines)


def _rel(path: Path, package: Path = PACKAGE) -> str:
    return f"qa/{path.relative_to(package).as_posix()}"


def _storage_offenders(modules: list[Path], package: Path = PACKAGE) -> dict[str, list[str]]:
    """Modules outside the store package (``<package>/store/``) that import faiss or sqlite3."""
    store = package / "store"
    return {_rel(p, package): sorted(_imports(p) & STORAGE_LIBS) for p in modules
            if store not in p.parents and _imports(p) & STORAGE_LIBS}


def test_package_is_parsed() -> None:
    names = {_rel(p) for p in MODULES}
    assert {"qa/config.py", "qa/embedding.py", "qa/cli.py", "qa/indexing.py",
            "qa/store/__init__.py", "qa/store/reader.py", "qa/store/writer.py"} <= names
    assert not (PACKAGE / "store.py").exists()  # a module beside the package would shadow it


def test_only_embedding_imports_model_libraries() -> None:
    # onnx_sessions runs the query encoder's ONNX sessions for embedding, and quantization
    # makes its int8 model (issue #19).
    allowed = {PACKAGE / "embedding.py", PACKAGE / "onnx_sessions.py", PACKAGE / "quantization.py"}
    offenders = {_rel(p): sorted(_imports(p) & MODEL_LIBS) for p in MODULES
                 if p not in allowed and _imports(p) & MODEL_LIBS}
    assert offenders == {}
    assert _imports(PACKAGE / "embedding.py") >= {"torch", "sentence_transformers", "onnxruntime"}
    assert _imports(PACKAGE / "onnx_sessions.py") & MODEL_LIBS == {"onnxruntime"}
    assert _imports(PACKAGE / "quantization.py") & MODEL_LIBS <= {"onnxruntime", "onnx"}


def test_only_store_imports_faiss_and_sqlite() -> None:
    assert _storage_offenders(MODULES) == {}
    inside = set().union(*(_imports(p) for p in STORE.rglob("*.py")))
    assert inside >= STORAGE_LIBS


def test_storage_checker_names_an_import_outside_the_store(tmp_path: Path) -> None:
    """The rule holds for the package as a whole: its modules may import sqlite3 and faiss
    (lazily too), no module outside it may, at the top level or in a subpackage."""
    package = tmp_path / "qa"
    (package / "store").mkdir(parents=True)
    (package / "sub").mkdir()
    (package / "store" / "reader.py").write_text("import sqlite3\n\ndef f():\n    import faiss\n")
    (package / "retrieval.py").write_text("from __future__ import annotations\nimport sqlite3\n")
    (package / "sub" / "ann.py").write_text("def f():\n    from faiss import IndexFlatIP\n")
    (package / "web.py").write_text("from qa import store\n")
    modules = sorted(package.rglob("*.py"))
    assert _storage_offenders(modules, package) == {"qa/retrieval.py": ["sqlite3"],
                                                    "qa/sub/ann.py": ["faiss"]}


WEB = PACKAGE / "web"


def test_web_is_a_package_of_modules() -> None:
    assert not (PACKAGE / "web.py").exists()  # a module beside the package would shadow it
    names = {p.stem for p in WEB.glob("*.py")}
    assert {"__init__", "app", "api", "pages", "admin", "presentation", "metrics"} <= names


def test_web_imports_no_heavy_libraries() -> None:
    modules = sorted(WEB.rglob("*.py"))
    assert modules
    offenders = {_rel(p): sorted(_imports(p) & {"faiss", "torch", "sqlite3", "numpy",
                                                *MODEL_LIBS})
                 for p in modules if _imports(p) & {"faiss", "torch", "sqlite3", "numpy",
                                                    *MODEL_LIBS}}
    assert offenders == {}


def test_only_config_reads_the_environment() -> None:
    offenders = {_rel(p): lines for p in MODULES if p != PACKAGE / "config.py"
                 if (lines := _environment_reads(p))}
    assert offenders == {}
    assert _environment_reads(PACKAGE / "config.py")  # the checker does see real reads


def test_environment_checker_tells_reads_from_writes(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\n"
        "os.environ.setdefault('A', '1')\n"
        "os.environ.update({'B': '2'})\n"
        "os.environ['C'] = '3'\n"
        "x = os.environ.get('D')\n"
        "y = os.environ['E']\n"
        "z = os.getenv('F')\n"
        "w = 'G' in os.environ\n"
        "from os import environ\n")
    assert _environment_reads(sample) == [5, 6, 7, 8, 9]


def test_no_utils_module() -> None:
    bad = [p for p in PACKAGE.rglob("*") if p.stem in ("utils", "util", "helpers", "misc")]
    assert bad == []


def test_no_print_calls_outside_cli() -> None:
    offenders = {}
    for path in MODULES:
        calls = [n.lineno for n in ast.walk(_tree(path))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                 and n.func.id == "print"]
        if calls and path != PACKAGE / "cli.py":
            offenders[_rel(path)] = calls
    assert offenders == {}
