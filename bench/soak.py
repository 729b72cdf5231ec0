"""Soak: sustained load against `qa serve` with memory sampled, then successive rebuilds under load.

Phase 1: --clients threads ask the gold questions for --duration seconds; errors are counted and
the resident memory of the gunicorn master and workers is sampled every second (warm-up vs end).
Phase 2: while 4 clients keep asking, --rebuilds successive `qa index` runs each add or change a
document; for each, the time from publication until every worker serves the new version, and the
failed requests. Works on a temporary copy of the corpus and index; stops by itself.

    python bench/soak.py --duration 60 --clients 16 --rebuilds 10
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    PROJECT,
    children,
    env_for,
    gold_questions,
    machine,
    percentile,
    request,
    rss_mb,
    run_qa,
    served,
    table,
)


class Load:
    """Client threads asking questions until stopped or past their deadline."""

    def __init__(self, port: int, clients: int, deadline: float) -> None:
        self.port, self.deadline = port, deadline
        self.questions = gold_questions()
        self.latencies: list[float] = []
        self.errors = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(n,)) for n in range(clients)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def _client(self, n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        i = n
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            body = {"question": self.questions[i % len(self.questions)],
                    "top_k": 1 + (i // len(self.questions)) % 20}
            started = time.perf_counter()
            try:
                status, _ = request(self.port, "POST", "/api/v1/answer", body, conn)
            except OSError:
                status = 0
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            with self.lock:
                self.latencies.append((time.perf_counter() - started) * 1000)
                self.errors += status != 200
            i += 7
        conn.close()


def served_versions(port: int, polls: int = 8) -> set[str]:
    """Versions reported by /readyz over several connections (each may reach another worker)."""
    seen = set()
    for _ in range(polls):
        status, body = request(port, "GET", "/readyz")
        if status == 200:
            seen.add(json.loads(body)["version"])
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of phase 1")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients in phase 1")
    parser.add_argument("--rebuilds", type=int, default=10, help="rebuilds in phase 2")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        corpus, index = Path(tmp) / "corpus", Path(tmp) / "index"
        shutil.copytree(PROJECT / "corpus", corpus)
        if (PROJECT / "index" / "CURRENT").exists():
            shutil.copytree(PROJECT / "index", index, ignore=shutil.ignore_patterns(".lock"))
        env = env_for(index, corpus, QA_RELOAD_INTERVAL="0.5")
        built = run_qa(["index", "--json"], env)
        if built.returncode != 0:
            sys.exit(f"qa index failed: {built.stderr.strip()}")
        with served(env, workers=args.workers) as (port, proc):
            pids = [proc.pid, *children(proc.pid)]
            samples: list[tuple[float, float]] = []
            started = time.monotonic()
            with Load(port, args.clients, started + args.duration) as load:
                while time.monotonic() < started + args.duration:
                    pids = [proc.pid, *children(proc.pid)]
                    samples.append((time.monotonic() - started, rss_mb(pids)))
                    time.sleep(1)
            warm = [m for t, m in samples if t >= min(10, args.duration / 3)]
            phase1 = (args.clients, len(load.latencies), len(load.latencies) / args.duration,
                      percentile(load.latencies, 50), percentile(load.latencies, 99), load.errors,
                      warm[0] if warm else float("nan"), samples[-1][1] if samples else 0.0)

            rebuilds = []
            deadline = time.monotonic() + 60 * args.rebuilds + 120
            with Load(port, 4, deadline) as during:
                for n in range(args.rebuilds):
                    target = corpus / f"soak-note-{n % 3}.txt"
                    target.write_text(f"Soak note {n}. The Orkhon valley survey number {n} was "
                                      f"published in {2030 + n} with {n + 3} chapters.\n")
                    done = run_qa(["index", "--json"], env)
                    published = time.monotonic()
                    version = json.loads(done.stdout)["version"] if done.returncode == 0 else "?"
                    lag = float("nan")
                    while time.monotonic() < published + 30:
                        if served_versions(port) == {version}:
                            lag = time.monotonic() - published
                            break
                        time.sleep(0.1)
                    rebuilds.append((n + 1, done.returncode, lag))
            phase2_errors = during.errors
            phase2_requests = len(during.latencies)

    print(f"\n{machine()}; qa serve --workers {args.workers}\n")
    print(table(["clients", "requests", "answers/s", "p50 ms", "p99 ms", "errors",
                 "RSS MB after warm-up", "RSS MB at end"], [phase1]))
    print(f"\nRebuilds under load (4 clients, {phase2_requests} requests, "
          f"{phase2_errors} failed):\n")
    print(table(["rebuild", "qa index exit", "seconds until every worker served it"], rebuilds))


if __name__ == "__main__":
    main()
