"""Shared pieces of the benchmark scripts: machine facts, percentiles, a served `qa` process."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
GOLD = PROJECT / "qa" / "data" / "gold.jsonl"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor() or "unknown CPU")
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0")
    return (f"{os.cpu_count()} cores, {cpu}, {int(mem) / 1024 / 1024:.0f} GiB RAM, "
            f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def gold_questions() -> list[str]:
    return [json.loads(line)["question"] for line in GOLD.read_text().splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(index_dir: Path, corpus_dir: Path | None = None, **extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "QA_INDEX_DIR": str(index_dir), **extra}
    if corpus_dir is not None:
        env["QA_CORPUS_DIR"] = str(corpus_dir)
    return env


def run_qa(args: list[str], env: dict[str, str], timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qa.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


@contextlib.contextmanager
def served(env: dict[str, str], workers: int = 2, port: int = 0,
           ready_timeout: float = 180) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """`qa serve` (gunicorn) on 127.0.0.1, ready when yielded, always stopped afterwards."""
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "qa.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), "--no-build"], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"qa serve exited with status {proc.returncode}")
            with contextlib.suppress(OSError):
                status, _ = request(port, "GET", "/readyz")
                if status == 200:
                    break
            time.sleep(0.25)
        else:
            raise RuntimeError("qa serve did not become ready in time")
        yield port, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def request(port: int, method: str, path: str, body: Any = None,
            conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    """One HTTP request; reuses ``conn`` (keep-alive) when given."""
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        c.request(method, path, body=data, headers=headers)
        response = c.getresponse()
        return response.status, response.read()
    finally:
        if own:
            c.close()


def rss_mb(pids: Sequence[int]) -> float:
    return memory_mb(pids)["rss"]


def memory_mb(pids: Sequence[int]) -> dict[str, float]:
    """Summed RSS, PSS and private (unshared) memory of processes, from smaps_rollup.

    RSS counts a shared memory-mapped file once per process that maps it; PSS splits shared
    pages between their processes, so the PSS sum is what the processes together occupy."""
    fields = {"Rss:": "rss", "Pss:": "pss", "Private_Clean:": "private", "Private_Dirty:": "private"}
    total = dict.fromkeys(("rss", "pss", "private"), 0)
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                parts = line.split()
                if parts and parts[0] in fields:
                    total[fields[parts[0]]] += int(parts[1])
    return {k: v / 1024 for k, v in total.items()}


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out.extend(int(c) for c in (task / "children").read_text().split())
    return out


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)
