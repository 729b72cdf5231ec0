"""Query latency and throughput of the production server (`qa serve`, gunicorn) on this machine.

Measures `POST /api/v1/answer` over the gold questions for one client, then throughput at 4 and
16 concurrent clients (bounded duration, stops by itself), and in the same run the bare floor:
encoding the question plus one FAISS search, in-process, timed right after each one-client
request. Requests are made unique (question and top_k) so that the answer cache does not serve
them; the cached case is reported on its own.

    python bench/latency.py --workers 2 --duration 20
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import (
    PROJECT,
    env_for,
    gold_questions,
    machine,
    percentile,
    request,
    run_qa,
    served,
    table,
)


def floor_timer(index_dir: Path) -> Callable[[str], float]:
    """A function timing the bare floor for one question: encode_query + one FAISS search,
    in-process, with the server's encoder (ONNX, one thread). Returns milliseconds."""
    from qa.embedding import Embedder
    from qa.store import open_current

    reader = open_current(index_dir)
    embedder = Embedder(backend="auto", onnx_dir=index_dir / "cache" / "onnx", threads=1)
    embedder.encode_query("warm up")

    def time_one(question: str) -> float:
        started = time.perf_counter()
        reader.dense_search(embedder.encode_query(question), 50)
        return (time.perf_counter() - started) * 1000

    return time_one


def one_client(port: int, questions: list[str], floor: Callable[[str], float],
               ) -> tuple[list[float], list[float], list[float], int]:
    """(request latencies, floor times, cached-answer latencies, errors). Each request is
    followed by one floor sample for the same question, so that both see the same machine: on a
    shared host the speed drifts over a run, and a floor timed apart would skew the ratio."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies, floors, cached, errors = [], [], [], 0
    try:
        for top_k in (5, 4):
            for q in questions:
                started = time.perf_counter()
                status, _ = request(port, "POST", "/api/v1/answer",
                                    {"question": q, "top_k": top_k}, conn)
                latencies.append((time.perf_counter() - started) * 1000)
                errors += status != 200
                floors.append(floor(q))
        for _ in range(50):
            started = time.perf_counter()
            status, _ = request(port, "POST", "/api/v1/answer", {"question": questions[0]}, conn)
            cached.append((time.perf_counter() - started) * 1000)
            errors += status != 200
    finally:
        conn.close()
    return latencies, floors, cached, errors


def concurrent(port: int, questions: list[str], clients: int,
               duration: float) -> tuple[float, list[float], int]:
    """(answers per second, latencies, errors) for ``clients`` threads during ``duration`` s."""
    combos = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors = [0]
    deadline = time.monotonic() + duration

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while time.monotonic() < deadline:
                with lock:
                    i = next(combos)
                body = {"question": questions[i % len(questions)],
                        "top_k": 1 + (i // len(questions)) % 20}
                started = time.perf_counter()
                try:
                    status, _ = request(port, "POST", "/api/v1/answer", body, conn)
                except OSError:
                    status = 0
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    latencies.append(elapsed)
                    errors[0] += status != 200
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 60)
    return len(latencies) / (time.perf_counter() - started), latencies, errors[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-dir", type=Path, default=PROJECT / "index")
    parser.add_argument("--corpus-dir", type=Path, default=PROJECT / "corpus")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds of each concurrent phase")
    parser.add_argument("--profile", action="store_true",
                        help="also profile 200 in-process answers with pyinstrument")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()

    env = env_for(args.index_dir, args.corpus_dir)
    built = run_qa(["index", "--json"], env)
    if built.returncode != 0:
        sys.exit(f"qa index failed: {built.stderr.strip()}")
    questions = gold_questions()
    floor_of = floor_timer(args.index_dir)
    with served(env, workers=args.workers) as (port, _):
        single, floors, cached, single_errors = one_client(port, questions, floor_of)
        floor = percentile(floors, 50)
        # No rate for one client: the floor is timed between its requests.
        rows: list[tuple[Any, ...]] = [
            ("1 client", len(single), percentile(single, 50), percentile(single, 95),
             percentile(single, 99), "—", single_errors)]
        results = {"floor_p50_ms": floor, "single": single}
        for clients in (4, 16):
            rate, lat, errors = concurrent(port, questions, clients, args.duration)
            rows.append((f"{clients} clients", len(lat), percentile(lat, 50), percentile(lat, 95),
                         percentile(lat, 99), rate, errors))
            results[f"c{clients}"] = {"rate": rate, "errors": errors,
                                      "p50": percentile(lat, 50), "p99": percentile(lat, 99)}
    print(f"\n{machine()}; qa serve --workers {args.workers}; {len(questions)} gold questions\n")
    print(table(["load", "requests", "p50 ms", "p95 ms", "p99 ms", "answers/s", "errors"], rows))
    p50 = percentile(single, 50)
    print(f"\ncached answer p50: {percentile(cached, 50):.2f} ms; bare floor (encode + FAISS, "
          f"in-process, timed between the one-client requests) p50: {floor:.2f} ms\n")
    checks = [
        ("one client p50 <= 25 ms", f"{p50:.1f}", p50 <= 25),
        ("one client p99 <= 60 ms", f"{percentile(single, 99):.1f}", percentile(single, 99) <= 60),
        ("p50 <= 2x bare floor", f"{p50 / floor:.2f}x", p50 <= 2 * floor),
        (">= 50 answers/s at 4 clients", f"{results['c4']['rate']:.1f}",
         results["c4"]["rate"] >= 50),
        ("zero errors", str(sum(r[-1] for r in rows)), sum(r[-1] for r in rows) == 0),
    ]
    print(table(["target", "measured", "met"], [(n, m, "yes" if ok else "NO")
                                                for n, m, ok in checks]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.profile:
        profile(env, questions)


def profile(env: dict[str, str], questions: list[str]) -> None:
    from pyinstrument import Profiler

    from qa.config import Settings
    from qa.service import QAService

    service = QAService(Settings.load()).load()
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for i in range(200):
        service.ask(questions[i % len(questions)], use_cache=False)
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False)[:6000])


if __name__ == "__main__":
    main()
