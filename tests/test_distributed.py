"""Index builds on a real Ray cluster on loopback (no mocks): one started in the building process
with 2 CPUs (``local``, tests/ray_local_build.py), and a two-node one (``ray start --head`` plus
``ray start --address``) that `qa index --ray 127.0.0.1:PORT` builds against
(tests/ray_two_nodes.py). Both run inside a fresh network namespace that has only loopback: Ray's
servers bind every interface. Each builds the bundled corpus; the result must equal a local build
of it: same documents, chunks, sentences and offsets, vectors within 1e-5, the same answers. An
install without ray (pip --no-deps) is told how to get it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import PROJECT, free_port, make_settings

from qa import store
from qa.cli import main
from qa.config import Settings
from qa.indexing import build_index
from qa.service import QAService

GOLD = PROJECT / "qa" / "data" / "gold.jsonl"


@pytest.fixture(scope="module")
def local_build(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The bundled corpus built here, without Ray (torch encoder on both sides)."""
    settings = make_settings(PROJECT / "corpus", tmp_path_factory.mktemp("local") / "index",
                             encoder="torch")
    build_index(settings)
    return settings


def _snapshot(settings: Settings) -> dict[str, Any]:
    """Everything a build publishes, in a comparable form."""
    reader = store.open_current(settings.index_dir)
    try:
        docs = {d["doc_id"]: (d["path"], d["title"], d["content_hash"])
                for d in reader.documents()}
        rows = {}
        for doc_id in docs:
            full = reader.document(doc_id)
            assert full is not None
            rows[doc_id] = (full["text"], [(c["chunk_id"], c["start"], c["end"], c["text"],
                                            c["content_key"])
                                           for c in reader.document_chunks(doc_id)],
                            [(s["start"], s["end"], s["content_key"])
                             for s in reader.document_sentences(doc_id)],
                            reader.document_acronyms(doc_id))
        n = reader.faiss.ntotal
        assert reader.token_vectors is not None
        return {"docs": docs, "rows": rows,
                "manifest": {k: reader.manifest[k] for k in
                             ("documents", "ids", "counts", "params", "token_store")},
                "vectors": reader.faiss.reconstruct_n(0, n),
                "sentences": np.array(reader.sentence_vectors),
                "tokens": np.array(reader.token_vectors, dtype=np.int16),
                "token_offsets": np.array(reader.token_offsets),
                "token_starts": np.array(reader.token_starts)}
    finally:
        reader.close()


def _answers(settings: Settings, questions: list[str]) -> list[tuple[str, list[str]]]:
    service = QAService(settings).load()
    out = []
    for q in questions:
        response = service.ask(q, use_cache=False)
        out.append((response["answer"]["text"], [p["id"] for p in response["passages"]]))
    return out


def _assert_same_build(ray_settings: Settings, local: Settings) -> None:
    a, b = _snapshot(ray_settings), _snapshot(local)
    assert a["docs"] == b["docs"]
    assert a["rows"] == b["rows"]
    assert a["manifest"] == b["manifest"]
    np.testing.assert_allclose(a["vectors"], b["vectors"], atol=1e-5)
    np.testing.assert_allclose(a["sentences"], b["sentences"], atol=1e-5)
    np.testing.assert_array_equal(a["token_offsets"], b["token_offsets"])
    np.testing.assert_array_equal(a["token_starts"], b["token_starts"])
    # int8 codes of vectors equal within 1e-5: a rounding edge may move one step.
    assert int(np.abs(a["tokens"] - b["tokens"]).max()) <= 1
    questions = [json.loads(line)["question"] for line in GOLD.read_text().splitlines()[:12]]
    assert _answers(ray_settings, questions) == _answers(local, questions)


NAMESPACE = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
TWO_NODES = Path(__file__).resolve().parent / "ray_two_nodes.py"
LOCAL_BUILD = Path(__file__).resolve().parent / "ray_local_build.py"


def _namespace_problem() -> str | None:
    """Why a fresh network (and PID) namespace cannot be made here, or None when it can."""
    if os.geteuid() != 0:
        return "not root: unshare --net needs CAP_SYS_ADMIN"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (util-linux / iproute2)"
    try:
        done = subprocess.run([*NAMESPACE, "ip", "link", "set", "lo", "up"],
                              capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "unshare did not return within 30 s"
    if done.returncode:
        return f"unshare --net fails here: {done.stderr.strip()[-300:]}"
    return None


def _processes_in(pid_namespace: str) -> list[str]:
    """Command lines of the processes still in a PID namespace (``pid:[inode]``)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "ns" / "pid") == pid_namespace:
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # the process ended while looked at
            continue
    return found


def _run_in_namespace(script: Path, args: list[str], marker: Path,
                      timeout: float) -> subprocess.CompletedProcess[str] | None:
    """``script`` with ``args`` inside a fresh network and PID namespace (skipping the test when
    one cannot be made). Checks that nothing it started outlives it; returns the finished run,
    or None when it took longer than ``timeout`` (it is then killed, and the kernel ends all it
    started)."""
    problem = _namespace_problem()
    if problem:
        pytest.skip(f"cannot make a network namespace for the Ray cluster: {problem}")
    # The script reports its PID namespace first thing, so the test can check it is empty after.
    code = ("import os, runpy, sys\n"
            f"open({str(marker)!r}, 'w').write(os.readlink('/proc/self/ns/pid'))\n"
            f"sys.argv = [{str(script)!r}, *sys.argv[1:]]\n"
            f"runpy.run_path({str(script)!r}, run_name='__main__')\n")
    done: subprocess.CompletedProcess[str] | None = None
    with contextlib.suppress(subprocess.TimeoutExpired):
        done = subprocess.run([*NAMESPACE, sys.executable, "-c", code, *args],
                              capture_output=True, text=True, cwd=PROJECT, timeout=timeout,
                              check=False)
    namespace = marker.read_text()
    assert namespace != os.readlink("/proc/self/ns/pid")
    assert _processes_in(namespace) == []  # nothing of the cluster outlives the run
    return done


@pytest.mark.ray
def test_local_ray_build_equals_a_local_build(tmp_path: Path, local_build: Settings) -> None:
    """`local` starts a cluster in the building process (this machine's CPUs: 2) and stops it
    after; run in a fresh network namespace, where Ray can bind loopback only."""
    index = tmp_path / "index"
    done = _run_in_namespace(LOCAL_BUILD, [str(PROJECT / "corpus"), str(index)],
                             tmp_path / "pid-namespace", timeout=900)
    assert done is not None, "the local-cluster build took more than 900 s"
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    seen = [tuple(step) for step in report["progress"]]
    assert report["stopped"]
    first = report["first"]
    assert first["changed"] and first["embedded"] == first["chunks"]
    assert ("reading", 5, 5) in seen and seen[-1][0] == "embedding"
    assert seen[-1][1] == seen[-1][2]
    _assert_same_build(make_settings(PROJECT / "corpus", index, encoder="torch"), local_build)
    # The embedding cache is consulted first: a full rebuild on the cluster embeds nothing.
    assert report["again"]["changed"] and report["again"]["embedded"] == 0


@pytest.mark.ray
@pytest.mark.slow
def test_qa_index_on_a_two_node_cluster_equals_a_local_build(
        tmp_path: Path, local_build: Settings) -> None:
    """`ray start --head` plus a second `ray start --address 127.0.0.1:PORT` (one CPU each) and
    `qa index --ray 127.0.0.1:PORT`, all inside a fresh network namespace (only loopback exists
    there: Ray 2.60 would otherwise advertise the host's address and bind every interface) and
    a fresh PID namespace, which the kernel empties when the run ends or is killed."""
    index = tmp_path / "index"
    temp = Path(f"/tmp/qa-ray-{os.getpid()}-{free_port()}")  # socket paths fit in 107 bytes
    try:
        done = _run_in_namespace(TWO_NODES, [str(PROJECT / "corpus"), str(index), str(temp)],
                                 tmp_path / "pid-namespace", timeout=1500)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert done is not None, "the two-node run took more than 1,500 s"
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["nodes"] == ["127.0.0.1", "127.0.0.1"]
    result = report["build"]
    assert result["documents"] == 5 and result["embedded"] == result["chunks"]
    _assert_same_build(make_settings(PROJECT / "corpus", index, encoder="torch"), local_build)


@pytest.mark.ray
def test_an_unreachable_cluster_fails_cleanly(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    index = tmp_path / "index"
    with pytest.raises(SystemExit) as info:
        main(["index", "--corpus-dir", str(PROJECT / "corpus"), "--index-dir", str(index),
              "--ray", f"127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "error: cannot connect to the Ray cluster at '127.0.0.1:" in err
    assert not (index / "CURRENT").exists()


def test_without_ray_the_flag_says_how_to_install_it(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as when not installed
    index = tmp_path / "index"
    with pytest.raises(SystemExit) as info:
        main(["index", "--corpus-dir", str(PROJECT / "corpus"), "--index-dir", str(index),
              "--ray", "auto"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.strip().splitlines() == [
        "error: `--ray` / QA_RAY_ADDRESS needs Ray, which is not installed: "
        "pip install 'ray>=2.60,<3'"]
    assert not (index / "CURRENT").exists()
