"""Faults: builds killed midway, two builds at once, damaged index files, interrupted uploads,
and rebuilds while a live server answers questions."""

from __future__ import annotations

import http.client
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import TINY, make_settings, serving
from werkzeug.serving import make_server

from qa import store
from qa.config import Settings
from qa.embedding import Embedder
from qa.errors import IndexCorruptError, TooLargeError
from qa.indexing import build_index
from qa.service import QAService
from qa.uploads import save_upload
from qa.web import create_app

QUESTION = "How many members does the Joint Water Commission have?"


def _cli(*args: str, env: dict[str, str] | None = None,
         timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qa.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, check=False)


@pytest.fixture
def copied(built_tiny: Settings, tmp_path: Path) -> Settings:
    """A private copy of the session's tiny corpus and built index."""
    shutil.copytree(built_tiny.corpus_dir, tmp_path / "corpus")
    shutil.copytree(built_tiny.index_dir, tmp_path / "index")
    return make_settings(tmp_path / "corpus", tmp_path / "index", encoder="torch",
                         reload_interval=0.05)


def _loads_and_answers(settings: Settings, embedder: Embedder) -> str:
    reader = store.open_current(settings.index_dir)  # verifies every checksum
    version = reader.version
    reader.close()
    answer = QAService(settings, embedder=embedder).ask(QUESTION)
    assert answer["index_version"] == version
    assert answer["passages"][0]["doc_id"] == "lake-baikal-accord"
    return version


def _holds(settings: Settings, doc_id: str, text: str) -> bool:
    """Whether the published version's text of ``doc_id`` contains ``text``."""
    reader = store.open_current(settings.index_dir)
    try:
        return text in (reader.document_text(doc_id) or "")
    finally:
        reader.close()


@pytest.mark.slow
def test_killed_builds_leave_the_published_version_serving(copied: Settings,
                                                           embedder: Embedder) -> None:
    before = _loads_and_answers(copied, embedder)
    doc = copied.corpus_dir / "silk-road-rail.md"
    rng = random.Random(7)
    for attempt in range(3):
        doc.write_text(doc.read_text() + f"\n\nA new paragraph, revision {attempt}, about rail.\n")
        proc = subprocess.Popen(
            [sys.executable, "-m", "qa.cli", "index", "--corpus-dir", str(copied.corpus_dir),
             "--index-dir", str(copied.index_dir), "--encoder", "torch"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 6.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # Whatever the build had reached, CURRENT names a complete, loadable version: the one
        # before, or (when the kill came after the build had published, as it was exiting)
        # the new one, whole, with this attempt's paragraph.
        now = _loads_and_answers(copied, embedder)
        assert now == before or _holds(copied, "silk-road-rail", f"revision {attempt}, about rail")
        before = now
    result = build_index(copied, embedder=embedder)
    assert result.documents == 3
    assert not list(copied.index_dir.glob("builds/.tmp-*"))
    assert _loads_and_answers(copied, embedder) == result.version


def test_a_second_build_refuses_while_one_holds_the_lock(copied: Settings) -> None:
    layout = store.Layout(copied.index_dir)
    (copied.corpus_dir / "new.txt").write_text("The Altai treaty was signed in 2030 by five states.")
    with store.build_lock(layout):
        done = _cli("index", "--corpus-dir", str(copied.corpus_dir), "--index-dir",
                    str(copied.index_dir), "--encoder", "torch")
    assert done.returncode == 3
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "another `qa index` is running" in lines[0]
    assert "Traceback" not in done.stderr
    store.open_current(copied.index_dir).close()  # untouched and still valid


def test_a_build_with_wait_runs_once_the_lock_is_free(copied: Settings,
                                                      embedder: Embedder) -> None:
    layout = store.Layout(copied.index_dir)
    release = threading.Event()

    def hold() -> None:
        with store.build_lock(layout):
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.2)
    threading.Timer(0.5, release.set).start()
    result = build_index(copied, embedder=embedder, lock_wait=20)
    holder.join(10)
    assert result.documents == 3


def _damage(build: Path, name: str) -> Path:
    path = build / name
    if name == "vectors.faiss":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif name == "chunks.sqlite":
        data = bytearray(path.read_bytes())
        for i in range(4096, min(len(data), 8192)):
            data[i] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.write_text("{ not json")
    return path


@pytest.mark.parametrize("name", ["vectors.faiss", "chunks.sqlite", "manifest.json"])
def test_damaged_index_stops_ask_with_one_line(copied: Settings, name: str) -> None:
    build = copied.index_dir / "builds" / store.Layout(copied.index_dir).current_version()
    damaged = _damage(build, name)
    with pytest.raises(IndexCorruptError, match=name):
        store.open_current(copied.index_dir)
    done = _cli("ask", QUESTION, "--index-dir", str(copied.index_dir), "--encoder", "torch")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(damaged) in lines[0] and "qa index --full" in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_damaged_index_stops_serve_before_gunicorn_starts(copied: Settings) -> None:
    build = copied.index_dir / "builds" / store.Layout(copied.index_dir).current_version()
    damaged = _damage(build, "vectors.faiss")
    done = _cli("serve", "--no-build", "--index-dir", str(copied.index_dir), "--port", "0",
                "--encoder", "torch", timeout=120)
    assert done.returncode == 2
    assert str(damaged) in done.stderr and "qa index --full" in done.stderr
    assert "Traceback" not in done.stderr


def test_running_service_keeps_old_version_when_new_one_is_damaged(
        copied: Settings, embedder: Embedder) -> None:
    service = QAService(copied, embedder=embedder)
    old = service.ask(QUESTION)["index_version"]
    layout = store.Layout(copied.index_dir)
    bad = "29990101T000000000000-bad000"
    shutil.copytree(layout.build_dir(old), layout.build_dir(bad))
    damaged = _damage(layout.build_dir(bad), "vectors.faiss")
    store.publish(layout, bad)
    time.sleep(0.1)
    assert service.ask("How wide is the observatory's mirror?")["index_version"] == old
    ready = create_app(copied, service).test_client().get("/readyz")
    assert ready.status_code == 200
    body = ready.get_json()
    assert body["version"] == old
    # the version it kept and the one it refused, but no path (that is in the log)
    assert body["reload_error"] and bad in body["reload_error"]
    assert str(damaged) not in body["reload_error"]


class _Broken(io.RawIOBase):
    """A stream that delivers some bytes, then fails like a dropped connection."""

    def __init__(self) -> None:
        self.sent = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        if self.sent > 10_000:
            raise ConnectionResetError("client went away")
        n = min(len(buffer), 4096)
        buffer[:n] = b"a" * n
        self.sent += n
        return n


def test_interrupted_or_oversized_upload_leaves_nothing(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(TINY, corpus)
    before = sorted(p.name for p in corpus.iterdir())
    with pytest.raises(ConnectionResetError):
        save_upload(io.BufferedReader(_Broken()), corpus, "dropped.txt", 1 << 20, replace=False)
    with pytest.raises(TooLargeError):
        save_upload(io.BytesIO(b"x" * 5000), corpus, "big.txt", 1000, replace=False)
    assert sorted(p.name for p in corpus.iterdir()) == before


@pytest.mark.slow
def test_rebuilds_under_load_fail_no_request(copied: Settings, embedder: Embedder) -> None:
    service = QAService(copied, embedder=embedder)
    server = make_server("127.0.0.1", 0, create_app(copied, service), threaded=True)
    port = server.server_port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    statuses: list[int] = []
    stop = threading.Event()
    deadline = time.monotonic() + 120

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        questions = [QUESTION, "How long does the train take?", "Where is the observatory?"]
        i = n
        while not stop.is_set() and time.monotonic() < deadline:
            body = json.dumps({"question": questions[i % 3], "top_k": 1 + i % 5})
            conn.request("POST", "/api/v1/answer", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
            i += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        for n in range(5):
            (copied.corpus_dir / f"added-{n}.txt").write_text(
                f"Report {n}. The Khovd dam number {n} was completed in {2040 + n}.")
            version = build_index(copied, embedder=embedder).version
            seen = None
            until = time.monotonic() + 10
            while time.monotonic() < until and seen != version:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/readyz")
                seen = json.loads(conn.getresponse().read())["version"]
                conn.close()
                time.sleep(0.05)
            assert seen == version
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        server.shutdown()
    assert statuses and set(statuses) == {200}


@pytest.mark.slow
def test_serve_builds_a_missing_index_outside_the_master(tiny_corpus: Path,
                                                         tmp_path: Path) -> None:
    """`qa serve` on a fresh checkout builds the index first. The build's model and its thread
    pools must not live in the process gunicorn forks workers from: the master stays torch-free,
    answers come back, and the workers exit cleanly on SIGTERM (a forked torch pool aborted them)."""
    log = tmp_path / "serve.log"
    with serving("--workers", "1", "--corpus-dir", str(tiny_corpus), "--index-dir",
                 str(tmp_path / "index"), "--encoder", "torch", log=log,
                 env={**os.environ, "HF_HUB_OFFLINE": "1"}) as (port, proc):
        status, deadline = None, time.monotonic() + 240
        while status != 200 and time.monotonic() < deadline and proc.poll() is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("POST", "/api/v1/answer", json.dumps({"question": QUESTION}),
                             {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                status = response.status
            except OSError:
                time.sleep(0.5)
            finally:
                conn.close()
        assert status == 200, log.read_text(errors="replace")[-3000:]
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "libtorch" not in maps  # the master never loaded the model
        os.kill(proc.pid, signal.SIGTERM)  # the master alone: it must stop its workers
        assert proc.wait(timeout=60) == 0
    text = log.read_text(errors="replace")
    assert "no index yet: building it first" in text
    assert "SIGABRT" not in text and "terminate called" not in text, text[-3000:]
