"""Shared fixtures: settings on tmp paths, one embedding model per session, a built tiny index."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from qa.config import Settings
from qa.embedding import Embedder
from qa.service import QAService

DATA = Path(__file__).parent / "data"
TINY = DATA / "tiny"
PROJECT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_server(proc: subprocess.Popen[bytes], grace: float = 60) -> None:
    """Stop a server started with ``start_new_session=True``: SIGTERM to its process group,
    then SIGKILL when it has not exited within ``grace`` seconds (both waits bounded)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


@contextlib.contextmanager
def serving(*args: str, log: Path, env: Mapping[str, str] | None = None,
            grace: float = 20) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """`qa serve` (gunicorn) started with ``args`` on 127.0.0.1 at a free port, in its own
    process group, its output in ``log``; yields (port, process) as soon as it is started (the
    caller waits for what it needs) and always stops it afterwards (``stop_server``)."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qa.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
             *args], env=dict(os.environ if env is None else env), cwd=PROJECT,
            start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield port, proc
    finally:
        stop_server(proc, grace)


def served_tiny_env(settings: Settings) -> dict[str, str]:
    """The environment that serves ``settings``' index and corpus with the torch encoder."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "QA_ENCODER": "torch",
            "QA_INDEX_DIR": str(settings.index_dir), "QA_CORPUS_DIR": str(settings.corpus_dir)}


def make_settings(corpus: Path, index: Path, **extra: object) -> Settings:
    """Settings isolated from the developer's environment (QA_* variables are ignored)."""
    return Settings.load({"corpus_dir": corpus, "index_dir": index, **extra}, environ={})


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="session")
def embedder(onnx_dir: Path) -> Embedder:
    """The bundled model, loaded once per test session (torch backend)."""
    return Embedder(backend="torch")


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    """A fresh, writable copy of the tiny corpus (tests may add or change documents)."""
    target = tmp_path / "corpus"
    shutil.copytree(TINY, target)
    return target


@pytest.fixture
def tiny_settings(tiny_corpus: Path, tmp_path: Path) -> Settings:
    return make_settings(tiny_corpus, tmp_path / "index", encoder="torch")


@pytest.fixture(scope="session")
def built_tiny(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Settings:
    """A read-only tiny index built once per session; tests that change it build their own."""
    root = tmp_path_factory.mktemp("tiny-built")
    corpus = root / "corpus"
    shutil.copytree(TINY, corpus)
    settings = make_settings(corpus, root / "index", encoder="torch", reload_interval=0.05)
    QAService(settings, embedder=embedder).index()
    return settings


@pytest.fixture(scope="session")
def tiny_service(built_tiny: Settings, embedder: Embedder) -> QAService:
    return QAService(built_tiny, embedder=embedder)


@pytest.fixture(scope="session")
def built_cica(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Settings:
    """The bundled CICA corpus indexed once per session (for quality floors)."""
    root = tmp_path_factory.mktemp("cica-built")
    settings = make_settings(PROJECT / "corpus", root / "index", encoder="torch")
    QAService(settings, embedder=embedder).index()
    return settings


@pytest.fixture(scope="session")
def cica_service(built_cica: Settings, embedder: Embedder) -> QAService:
    return QAService(built_cica, embedder=embedder)


@pytest.fixture
def fresh_service(tiny_settings: Settings, embedder: Embedder) -> Iterator[QAService]:
    """A service over its own writable corpus and index (built once)."""
    service = QAService(tiny_settings.replace(reload_interval=0.05), embedder=embedder)
    service.index()
    yield service
