"""The query encoder's ONNX sessions: threads by load, the saved optimized model, the int8 gate."""

from __future__ import annotations

import contextlib
import multiprocessing
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from qa import onnx_sessions, quantization
from qa.embedding import Embedder
from qa.onnx_sessions import LoadGauge, QuerySessions, RunnableTasks, threads_for
from qa.store.verification import file_sha256

BENCH = Path(__file__).resolve().parent.parent / "bench"
QUESTIONS = ["What does OSCA stand for?",
             "When did the eighth round table of the think tank forum take place?",
             "According to Qiang, how often do the ministers meet?"]


@pytest.fixture(scope="module")
def export(embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of its own holding only the plain ONNX export of the bundled model."""
    exporter = Embedder(backend="auto", onnx_dir=tmp_path_factory.mktemp("onnx-export"))
    if not exporter.ensure_onnx():
        pytest.skip("ONNX export not possible here")
    path = exporter.onnx_path()
    assert path is not None
    return path


@pytest.fixture
def onnx_copy(export: Path, tmp_path: Path) -> Path:
    """A fresh directory with a copy of the export, for tests that add files beside it."""
    target = tmp_path / "onnx" / export.name
    target.parent.mkdir()
    shutil.copyfile(export, target)
    return target.parent


@pytest.mark.parametrize(("in_flight", "cores", "most", "threads"), [
    (1, 2, 0, 2), (2, 2, 0, 1), (5, 2, 0, 1), (0, 2, 0, 2),
    (1, 4, 0, 4), (2, 4, 0, 2), (3, 4, 0, 1), (1, 4, 2, 2), (1, 2, 1, 1), (1, 1, 0, 1),
])
def test_threads_by_load(in_flight: int, cores: int, most: int, threads: int) -> None:
    assert threads_for(in_flight, cores, most) == threads


@pytest.mark.parametrize(("in_flight", "host_load", "threads"), [
    (1, 0.2, 2), (1, 1.9, 2), (1, 2.1, 1), (1, 9.0, 1), (2, 0.0, 1),
])
def test_a_host_busy_with_other_work_gets_one_thread(in_flight: int, host_load: float,
                                                     threads: int) -> None:
    assert threads_for(in_flight, 2, host_load=host_load) == threads
    assert threads_for(in_flight, 8, host_load=host_load) == max(1, 8 // max(in_flight,
                                                                          int(host_load)))


@contextlib.contextmanager
def _busy_process() -> Iterator[None]:
    """Another process in a busy loop (started, and looping, before the block runs)."""
    hog = subprocess.Popen([sys.executable, "-c", "print('looping', flush=True)\nwhile True: pass"],
                           stdout=subprocess.PIPE, text=True)
    with hog:
        try:
            assert hog.stdout is not None and hog.stdout.readline().strip() == "looping"
            yield
        finally:
            hog.kill()


def test_runnable_tasks_count_the_caller_and_a_process_running_now(tmp_path: Path) -> None:
    runnable = RunnableTasks()
    assert runnable() >= 1  # the caller itself is running
    with _busy_process():
        # A busy loop is always runnable: running on a core or waiting for one.
        assert min(runnable() for _ in range(20)) >= 2
    missing = RunnableTasks()
    missing.PATH = tmp_path / "no-such-loadavg"  # elsewhere than Linux: the load average
    assert isinstance(missing(), float) and missing() >= 0


def test_a_lone_request_is_not_slowed_by_a_busy_minute_that_has_passed() -> None:
    """The 1-minute load average stays high after a burst; the count of runnable tasks follows
    the burst out at once. The least of 50 reads leaves out whatever runs only now and then."""
    runnable = RunnableTasks()
    with _busy_process():
        during = min(runnable() for _ in range(50))
    after = min(runnable() for _ in range(50))
    assert after <= during - 1
    assert threads_for(1, 2, host_load=during) == 1  # another process runs: one thread
    assert threads_for(1, 2, host_load=1.0) == 2  # this request alone: both cores


def _hold_request(gauge: LoadGauge, entered: multiprocessing.synchronize.Event,
                  release: multiprocessing.synchronize.Event) -> None:
    with gauge.request():
        entered.set()
        release.wait(30)


def test_a_shared_gauge_counts_the_requests_of_other_processes() -> None:
    ctx = multiprocessing.get_context("fork")
    gauge = LoadGauge(shared=True)
    entered, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_request, args=(gauge, entered, release))
    child.start()
    try:
        assert entered.wait(30)
        assert gauge.in_flight == 1
        with gauge.request():
            assert gauge.in_flight == 2
        assert gauge.in_flight == 1
    finally:
        release.set()
        child.join(30)
    assert child.exitcode == 0
    assert gauge.in_flight == 0


def test_a_request_that_fails_still_leaves_the_gauge() -> None:
    gauge = LoadGauge()
    with pytest.raises(RuntimeError), gauge.request():
        assert gauge.in_flight == 1
        raise RuntimeError("boom")
    assert gauge.in_flight == 0


def test_sessions_take_every_core_alone_and_one_thread_under_load(export: Path) -> None:
    gauge = LoadGauge()
    host_load = [0.0]
    sessions = QuerySessions(export, cores=2, gauge=gauge, host_load=lambda: host_load[0])
    embedder = Embedder(backend="onnx", onnx_dir=export.parent)
    ids = np.asarray([embedder._tokenizer.encode(QUESTIONS[0]).ids], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
             "token_type_ids": np.zeros_like(ids)}
    with gauge.request():
        alone = sessions.run(feeds)
        with gauge.request():
            loaded = sessions.run(feeds)
    assert sessions.calls == {2: 1, 1: 1}
    host_load[0] = 3.0  # alone, but the machine is busy with other work
    with gauge.request():
        sessions.run(feeds)
    assert sessions.calls == {2: 1, 1: 2}
    two, one = sessions.session(2).get_session_options(), sessions.session(1).get_session_options()
    assert two.intra_op_num_threads == 2 and one.intra_op_num_threads == 1
    # The two-thread pool spins within a call only: idle, it takes no core from anyone.
    assert two.get_session_config_entry("session.force_spinning_stop") == "1"
    np.testing.assert_allclose(alone, loaded, atol=1e-5)  # same model, only the threads differ


def test_the_optimized_model_is_saved_keyed_and_reused(embedder: Embedder,
                                                       onnx_copy: Path) -> None:
    import onnxruntime as ort

    onnx = Embedder(backend="onnx", onnx_dir=onnx_copy, query_precision="float")
    export = onnx.onnx_path()
    assert export is not None
    vectors = np.vstack([onnx.encode_query(q) for q in QUESTIONS])
    optimized = onnx_sessions.optimized_path(export)
    assert optimized.is_file()
    # Keyed by the model's content hash (the export's name) and the onnxruntime version.
    assert optimized.name.startswith(export.stem + ".")
    assert f"ort{ort.__version__}" in optimized.name
    assert onnx.query_sessions is not None and onnx.query_sessions.path == optimized
    assert sorted(p.name for p in onnx_copy.iterdir()) == sorted([export.name, optimized.name])
    # Within tolerance of the torch model, token vectors too.
    np.testing.assert_allclose(vectors, embedder.encode(QUESTIONS), atol=1e-4)
    vector, tokens = onnx.encode_query_with_tokens(QUESTIONS[2])
    torch_vector, torch_tokens = embedder.encode_query_with_tokens(QUESTIONS[2])
    np.testing.assert_allclose(vector, torch_vector, atol=1e-4)
    assert tokens.pieces == torch_tokens.pieces
    assert tokens.starts.tolist() == torch_tokens.starts.tolist()
    assert float((tokens.vectors * torch_tokens.vectors).sum(axis=1).min()) > 0.9999
    # Reused, not rewritten, by the next process's embedder.
    written = optimized.stat().st_mtime_ns
    again = Embedder(backend="onnx", onnx_dir=onnx_copy, query_precision="float")
    np.testing.assert_allclose(again.encode_query(QUESTIONS[0]), vectors[:1], atol=1e-6)
    assert again.query_sessions is not None and again.query_sessions.path == optimized
    assert optimized.stat().st_mtime_ns == written


def test_an_optimized_model_that_disagrees_is_not_used(onnx_copy: Path) -> None:
    onnx = Embedder(backend="onnx", onnx_dir=onnx_copy)
    export = onnx.onnx_path()
    assert export is not None

    def wrong(session: object, texts: list[str]) -> np.ndarray:
        rows = np.random.default_rng(len(texts)).normal(size=(len(texts), 384))
        return np.asarray(rows / np.linalg.norm(rows, axis=1, keepdims=True), dtype=np.float32)

    real_calls = [0]

    def half_wrong(session: object, texts: list[str]) -> np.ndarray:
        real_calls[0] += 1  # the first call checks the optimized copy: make it disagree
        return wrong(session, texts) if real_calls[0] == 1 else onnx._run_onnx(session, texts)[0]

    assert onnx_sessions.ensure_optimized(export, half_wrong) is None
    assert not onnx_sessions.optimized_path(export).exists()
    assert [p.name for p in onnx_copy.iterdir()] == [export.name]  # no temp file left


def _gate(sys_path: Path = BENCH) -> object:
    sys.path.insert(0, str(sys_path))
    try:
        import quant_gate
    finally:
        sys.path.remove(str(sys_path))
    return quant_gate


FLOAT = {"gold_hit@5": 0.882, "gold_answer_accuracy": 0.824, "gold_abstention": 0.5,
         "gold_false_abstention": 0.029, "squad_hit@1": 0.911, "squad_answer_accuracy": 0.863,
         "squad_unanswerable_abstained": 0.295, "squad_abstained": 0.05}


def test_the_gate_passes_figures_within_half_a_point() -> None:
    gate = _gate()
    assert gate.decide(FLOAT, FLOAT) == (True, [])  # type: ignore[attr-defined]
    close = {**FLOAT, "squad_hit@1": 0.907, "squad_unanswerable_abstained": 0.299,
             "gold_hit@5": 0.9}
    assert gate.decide(FLOAT, close) == (True, [])  # type: ignore[attr-defined]


@pytest.mark.parametrize(("figure", "value"), [
    ("gold_hit@5", 0.853),  # one gold question fewer in the top 5
    ("squad_hit@1", 0.905),
    ("gold_answer_accuracy", 0.8),
    ("gold_abstention", 0.527),  # abstains more: not unchanged
    ("squad_unanswerable_abstained", 0.285),  # abstains less: not unchanged either
    ("squad_abstained", 0.06),
])
def test_the_gate_fails_a_drop_or_a_moved_abstention(figure: str, value: float) -> None:
    passed, failures = _gate().decide(FLOAT, {**FLOAT, figure: value})  # type: ignore[attr-defined]
    assert not passed
    assert [f.split(":")[0] for f in failures] == [figure]


def test_the_gate_fails_what_was_not_measured() -> None:
    partial = {k: v for k, v in FLOAT.items() if not k.startswith("squad")}
    passed, failures = _gate().decide(FLOAT, partial)  # type: ignore[attr-defined]
    assert not passed and len(failures) == 4


def test_int8_is_used_only_with_a_passing_gate_for_that_very_file(onnx_copy: Path) -> None:
    export = next(onnx_copy.iterdir())
    int8 = onnx_sessions.int8_path(export)
    shutil.copyfile(export, int8)  # the file's content does not matter to the choice

    def chosen(precision: str = "auto") -> Path:
        sessions = Embedder(backend="onnx", onnx_dir=onnx_copy,
                            query_precision=precision).query_sessions
        assert sessions is not None
        return sessions.path

    assert chosen() != int8  # no gate record
    onnx_sessions.write_gate(int8, {"passed": False})
    assert chosen() != int8
    onnx_sessions.write_gate(int8, {"passed": True})
    assert chosen() == int8
    assert chosen("float") != int8
    with open(int8, "ab") as fh:  # changed after the gate: its verdict no longer holds
        fh.write(b"\0")
    assert chosen() != int8


def test_smoothing_leaves_the_float_model_unchanged(export: Path, embedder: Embedder,
                                                     tmp_path: Path) -> None:
    import onnx

    maxima = quantization.activation_maxima(export, embedder.word_piece_ids, QUESTIONS)
    # Six layers, four inputs each: Q, K and V share one; attention output; FFN in and out.
    assert len(maxima) == 6 * 4
    assert all(m.shape in {(384,), (1536,)} and (m > 0).all() for m in maxima.values())
    smoothed = quantization.smooth(onnx.load(str(export)), maxima)
    copy = tmp_path / "smoothed" / export.name
    copy.parent.mkdir()
    onnx.save(smoothed, str(copy))
    plain = Embedder(backend="onnx", onnx_dir=export.parent, query_precision="float")
    moved = Embedder(backend="onnx", onnx_dir=copy.parent, query_onnx=copy)
    for question in [*QUESTIONS, "Which states founded the CICA secretariat in 2006?"]:
        np.testing.assert_allclose(moved.encode_query(question), plain.encode_query(question),
                                   atol=1e-5)


@pytest.mark.slow
def test_the_int8_model_is_close_and_the_same_bytes_every_time(export: Path, embedder: Embedder,
                                                             tmp_path: Path) -> None:
    first = quantization.build_int8(export, tmp_path / "a.int8.onnx", embedder.word_piece_ids)
    second = quantization.build_int8(export, tmp_path / "b.int8.onnx", embedder.word_piece_ids)
    assert file_sha256(first) == file_sha256(second)  # what lets a shipped verdict name it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.int8.onnx", "b.int8.onnx"]  # no temp
    plain = Embedder(backend="onnx", onnx_dir=export.parent, query_precision="float")
    quantized = Embedder(backend="onnx", onnx_dir=export.parent, query_onnx=first)
    a = np.vstack([plain.encode_query(q) for q in QUESTIONS])
    b = np.vstack([quantized.encode_query(q) for q in QUESTIONS])
    cosines = (a * b).sum(axis=1)
    assert cosines.min() > 0.99
    assert cosines.max() < 0.99999  # really another model: this is what the gate is for


@pytest.mark.slow
def test_a_shipped_verdict_holds_only_for_the_file_it_names(onnx_copy: Path, embedder: Embedder,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    export = next(onnx_copy.iterdir())
    int8 = onnx_sessions.int8_path(export)
    reference = quantization.build_int8(export, onnx_copy.parent / "judged.int8.onnx",
                                        embedder.word_piece_ids)
    verdict = {"passed": True, "export_sha256": file_sha256(export),
               "sha256": file_sha256(reference), "model_file": int8.name}
    monkeypatch.setattr(quantization, "shipped_verdict", lambda: verdict)

    def chosen() -> Path:
        sessions = Embedder(backend="onnx", onnx_dir=onnx_copy).query_sessions
        assert sessions is not None
        return sessions.path

    assert onnx_sessions.ensure_int8(export, embedder.word_piece_ids) == int8
    assert file_sha256(int8) == verdict["sha256"] and chosen() == int8
    int8.unlink()
    verdict["sha256"] = "0" * 64  # a verdict on other bytes: the file built here is removed
    assert onnx_sessions.ensure_int8(export, embedder.word_piece_ids) is None
    assert not int8.exists() and chosen() != int8
    verdict.update(sha256=file_sha256(reference), export_sha256="1" * 64)  # another export
    assert onnx_sessions.ensure_int8(export, embedder.word_piece_ids) is None and not int8.exists()
    verdict.update(export_sha256=file_sha256(export), model_file="other-model.int8.onnx")
    assert onnx_sessions.ensure_int8(export, embedder.word_piece_ids) is None and not int8.exists()
    verdict.update(model_file=int8.name, passed=False)
    assert onnx_sessions.ensure_int8(export, embedder.word_piece_ids) is None and not int8.exists()


def test_the_shipped_verdict_names_the_int8_model_this_machine_builds(export: Path,
                                                                      embedder: Embedder,
                                                                      tmp_path: Path) -> None:
    """The verdict in qa/models applies to a fresh install: its export is the one made here,
    and the int8 build of it has the bytes that were judged."""
    verdict = quantization.shipped_verdict()
    if verdict is None:
        pytest.skip("no gate verdict is shipped")
    assert verdict["export_sha256"] == file_sha256(export)
    built = quantization.build_int8(export, tmp_path / "m.int8.onnx", embedder.word_piece_ids)
    assert file_sha256(built) == verdict["sha256"]


def test_the_server_counts_each_request_while_it_runs() -> None:
    from qa.server import CountRequests

    gauge = LoadGauge()
    seen: list[int] = []

    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        seen.append(gauge.in_flight)
        if environ.get("fail"):
            raise RuntimeError("boom")
        return [b"ok"]

    counted = CountRequests(app, gauge)
    assert counted({}, None) == [b"ok"]
    with gauge.request():
        counted({}, None)
    with pytest.raises(RuntimeError):
        counted({"fail": True}, None)
    assert seen == [1, 2, 1]
    assert gauge.in_flight == 0


def test_the_service_gives_its_encoder_the_gauge_and_the_thread_cap(tmp_path: Path) -> None:
    from qa.config import Settings
    from qa.service import QAService

    gauge = LoadGauge()
    settings = Settings.load({"index_dir": tmp_path / "index", "query_threads": 1,
                              "query_precision": "float"}, environ={})
    embedder = QAService(settings, gauge=gauge).embedder
    assert embedder.gauge is gauge
    assert embedder.threads == 1
    assert embedder.query_precision == "float"
    default = QAService(Settings.load({"index_dir": tmp_path / "index"}, environ={})).embedder
    assert default.threads is None and default.query_precision == "auto"
