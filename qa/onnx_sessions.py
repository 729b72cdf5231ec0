"""ONNX Runtime sessions of the query encoder: options, thread layout by load, the saved
optimized model and the gated int8 model.

Owns how a question's forward pass is run, not what it computes: the ONNX export itself, the
tokenizer and the pooling stay in ``embedding``; the int8 model is made by ``quantization``. Knows
nothing of files beyond the encoder's cache directory, nor of FAISS or ranking.

- **Threads by load.** One question on an idle machine may use every core; under load, each
  request gets one thread, or the workers' thread pools fight over the cores. A ``LoadGauge``
  counts the requests in flight across the worker processes of one server (shared memory made
  before the fork), and ``QuerySessions.run`` picks, per call, the session whose intra-op thread
  count fits: ``threads_for(in_flight, cores, host_load=...)``, the tasks runnable on the machine
  at that moment standing for what other processes take (``RunnableTasks``). The pools of
  multi-thread sessions stop spinning when a call returns, so a lone request's own idle pool is
  never counted as somebody else's load.
- **Optimized model on disk.** The export is optimized once (ORT_ENABLE_EXTENDED: the fusions of
  attention, layer norm and GELU, which do not depend on the CPU) and saved next to it, named by
  the export's model hash and the onnxruntime version, so it is never stale; it is checked
  against the plain export before it is published (temp file, then ``os.replace``).
- **int8 only behind a gate.** The int8 model (made by ``quantization``) is used only when a gate
  record says it passed for this very file (its sha256): quality within half a point of the
  float model, abstention unchanged. The record is the one ``bench/quant_gate.py`` wrote next to
  it, or the verdict shipped with the package, under which ``ensure_int8`` rebuilds the judged
  file from the same export (the build is reproducible) and checks its sha256.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from qa import quantization, store

log = logging.getLogger(__name__)

OPTIMIZED_LEVEL = "extended"  # portable: ORT_ENABLE_ALL's layout changes depend on the CPU
MIN_COSINE = 0.9999  # optimized vs plain export, on the probe questions
PROBES = ("What is the Conference on Interaction and Confidence Building Measures?",
          "When did the member states sign the declaration in Almaty?")
GATE_SUFFIX = ".gate.json"


def threads_for(in_flight: int, cores: int, most: int = 0, host_load: float = 0.0) -> int:
    """Intra-op threads for one question when ``in_flight`` requests (this one included) share
    ``cores``: all of them for a lone request, one each once requests outnumber the cores, the
    cores shared out in between; at most ``most`` (0: no cap). ``host_load``: the tasks
    runnable on the machine now, this request's included (``RunnableTasks``); tasks beyond the
    requests in flight (other processes, other tenants of a shared host) hold cores too. On a
    host oversubscribed by others, a second thread waits for a core at every step of the
    forward pass: measured slower than one."""
    cores = max(1, cores)
    busy = max(1, in_flight, int(host_load))
    threads = max(1, cores // busy)
    return min(threads, most) if most > 0 else threads


class RunnableTasks:
    """How many tasks are runnable on the machine right now, the caller included: the kernel's
    instantaneous count (``/proc/loadavg``'s fourth field). Where there is
    no such file, the 1-minute load average stands in for it.

    Instantaneous, not averaged: a lone question on an idle machine should get every core even
    when the last minute was busy (a benchmark's own client, a build that just ended), and one
    thread when another process is running now. The 1-minute average, used before, said "busy"
    for a minute after every burst: a lone request then ran on one thread at twice the time."""

    PATH = Path("/proc/loadavg")

    def __init__(self) -> None:
        self._fd: int | None = None

    def __call__(self) -> float:
        try:
            if self._fd is None:
                self._fd = os.open(self.PATH, os.O_RDONLY)
            # pread on one open file: about 2 us, where open-read-close took 8 us idle and
            # about a millisecond on a loaded host (profiled).
            return float(os.pread(self._fd, 128, 0).split()[3].split(b"/")[0])
        except (OSError, IndexError, ValueError):
            return os.getloadavg()[0]

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


class LoadGauge:
    """Requests in flight, across the processes that share it when made with ``shared=True``
    before they fork (a counter in shared memory), else in this process only."""

    def __init__(self, shared: bool = False) -> None:
        self._value: Any
        if shared:
            self._value = multiprocessing.get_context("fork").Value("i", 0)
            self._lock: Any = self._value.get_lock()
        else:
            self._value = _Box()
            self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        return int(self._value.value)  # one aligned int: read without the lock

    @contextmanager
    def request(self) -> Iterator[None]:
        """Count one request for as long as the block runs."""
        with self._lock:
            self._value.value += 1
        try:
            yield
        finally:
            with self._lock:
                self._value.value -= 1


class _Box:
    value = 0


def optimized_path(export: Path) -> Path:
    """Where the optimized copy of ``export`` lives: keyed by the export's name (the model's
    content hash) and the onnxruntime version that wrote it."""
    import onnxruntime as ort

    return export.with_name(f"{export.stem}.opt-{OPTIMIZED_LEVEL}-ort{ort.__version__}.onnx")


def int8_path(export: Path) -> Path:
    return export.with_name(f"{export.stem}.int8.onnx")


def gate_path(model: Path) -> Path:
    return model.with_name(model.name + GATE_SUFFIX)


def gate_passed(model: Path) -> bool:
    """True when a gate record says ``model`` passed, for this very file: the record next to it
    (``bench/quant_gate.py``), else the verdict shipped with the package."""
    if not model.is_file():
        return False
    record = gate_path(model)
    data: Any = None
    if record.is_file():
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            return False
    else:
        data = quantization.shipped_verdict()
    return (isinstance(data, dict) and bool(data.get("passed"))
            and data.get("sha256") == store.verification.file_sha256(model))


def write_gate(model: Path, record: Mapping[str, Any]) -> Path:
    """Write ``model``'s gate record (``record`` must say ``passed``), keyed by its sha256."""
    path = gate_path(model)
    data = {**record, "model_file": model.name, "sha256": store.verification.file_sha256(model)}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


def ensure_int8(export: Path, tokenize: quantization.Tokenize) -> Path | None:
    """The int8 model of ``export``, built when a gate verdict shipped with the package passed
    the very file that this export makes (its sha256 is checked; a file that differs is
    removed). None when no shipped verdict applies: then only ``bench/quant_gate.py`` can make
    and judge one."""
    target = int8_path(export)
    if target.is_file():
        return target
    verdict = quantization.shipped_verdict()
    if not verdict or not verdict.get("passed") or not export.is_file():
        return None
    if verdict.get("model_file") != target.name:
        return None  # another model (the name is its content hash): no need to hash the export
    if verdict.get("export_sha256") != store.verification.file_sha256(export):
        return None  # another model, or another exporter's bytes: not what was judged
    quantization.build_int8(export, target, tokenize)
    if store.verification.file_sha256(target) != verdict.get("sha256"):
        log.warning("the int8 query encoder built here differs from the one the gate passed; "
                    "questions stay on the float model")
        target.unlink(missing_ok=True)
        return None
    return target


def session_options(threads: int, level: str = "all", spin: bool = True,
                    save_to: Path | None = None) -> Any:
    import onnxruntime as ort

    levels = {"none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = levels[level]
    if not spin:
        # A pool thread that spins after its share of a call takes a core from the request
        # threads of the other worker.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    elif threads > 1:
        # Spin within a call (it is what makes two threads faster on short inputs), never after
        # it: an idle pool that spins would take a core from the other worker and count as load.
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    if save_to is not None:
        opts.optimized_model_filepath = str(save_to)
    return opts


def open_session(path: Path, threads: int, level: str = "all", spin: bool = True) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), session_options(threads, level, spin),
                                providers=["CPUExecutionProvider"])


Run = Callable[[Any, list[str]], np.ndarray]  # (session, texts) -> pooled unit vectors


def ensure_optimized(export: Path, run: Run) -> Path | None:
    """The optimized copy of ``export``, written (and checked against it with ``run``) when
    missing; None when it cannot be written or disagrees, and the plain export is used."""
    target = optimized_path(export)
    if target.is_file():
        return target
    fd, tmp_name = tempfile.mkstemp(dir=export.parent, prefix=f".{target.stem}-",
                                    suffix=".onnx.tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            import onnxruntime as ort

            ort.InferenceSession(str(export), session_options(1, OPTIMIZED_LEVEL, save_to=tmp),
                                 providers=["CPUExecutionProvider"])
            a = run(open_session(tmp, 1), list(PROBES))
            b = run(open_session(export, 1), list(PROBES))
        except Exception as e:  # onnxruntime raises its own untyped errors
            log.warning("could not save an optimized query encoder, using the export: %s", e)
            return None
        if float((a * b).sum(axis=1).min()) < MIN_COSINE:
            log.warning("the optimized query encoder disagrees with the export; not using it")
            return None
        os.replace(tmp, target)
        return target
    finally:
        tmp.unlink(missing_ok=True)


class LazySession:
    """An InferenceSession of ``path`` opened on its first ``run``."""

    def __init__(self, path: Path, threads: int) -> None:
        self.path = path
        self.threads = threads
        self._session: Any = None
        self._lock = threading.Lock()

    def run(self, *args: Any, **kwargs: Any) -> Any:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = open_session(self.path, self.threads)
        return self._session.run(*args, **kwargs)


class QuerySessions:
    """Sessions of one ONNX file, one per thread count in use, created on first use; ``run``
    picks one by the gauge's load."""

    def __init__(self, path: Path, cores: int, gauge: LoadGauge | None = None,
                 most_threads: int = 0, host_load: Callable[[], float] | None = None) -> None:
        self.path = path
        self.cores = max(1, cores)
        self.gauge = gauge
        self.most_threads = most_threads
        self.host_load = host_load or RunnableTasks()
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()
        self.calls: dict[int, int] = {}  # calls by thread count (for tests and the bench)

    def threads_now(self) -> int:
        in_flight = self.gauge.in_flight if self.gauge is not None else 1
        return threads_for(in_flight, self.cores, self.most_threads, self.host_load())

    def session(self, threads: int) -> Any:
        found = self._sessions.get(threads)
        if found is None:
            with self._lock:
                found = self._sessions.get(threads)
                if found is None:
                    # Spinning only where the pool has threads to spin: a lone request's.
                    found = open_session(self.path, threads, "all", spin=threads > 1)
                    self._sessions[threads] = found
        return found

    def warm(self) -> None:
        """Create the sessions that the load can ask for (one thread, and all of them)."""
        for threads in {1, threads_for(1, self.cores, self.most_threads)}:
            self.session(threads)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        threads = self.threads_now()
        self.calls[threads] = self.calls.get(threads, 0) + 1
        return np.asarray(self.session(threads).run(None, feeds)[0])
