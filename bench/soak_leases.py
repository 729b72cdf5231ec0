"""Soak of issue #16: load on two servers while documents are uploaded, the index is rebuilt, a
rebuild is SIGKILLed mid-way, and one server keeps its first build for the whole run.

Server A (`qa serve`, 2 workers, reload every 0.5 s) and server B (1 worker, reload interval one
hour: it serves the first build throughout, holding a lease on it) answer --clients threads
asking the gold questions. Meanwhile a loop uploads a document to A's admin API, runs `qa index`,
and every third round starts `qa index --full` and SIGKILLs it after a few seconds. Reported:
failed requests per server, builds that were missing while a server reported serving them (a
build deleted while leased), the builds left on disk, and the resident memory of each server
after warm-up and at the end. Works on temporary copies; stops by itself.

    python bench/soak_leases.py --duration 600 --clients 8
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PROJECT, children, env_for, gold_questions, machine, request, rss_mb, run_qa, served

TOKEN = "soak-token"


class Clients:
    """Threads asking the gold questions of one server until the deadline."""

    def __init__(self, port: int, count: int, deadline: float) -> None:
        self.port, self.deadline = port, deadline
        self.questions = gold_questions()
        self.requests = self.failed = 0
        self.statuses: dict[int, int] = {}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(count)]
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(120)

    def _run(self, n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        i = n
        while time.monotonic() < self.deadline:
            try:
                status, _ = request(self.port, "POST", "/api/v1/answer",
                                    {"question": self.questions[i % len(self.questions)]}, conn)
            except OSError:
                status = 0
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            with self.lock:
                self.requests += 1
                self.failed += status != 200
                self.statuses[status] = self.statuses.get(status, 0) + 1
            i += 7
        conn.close()


def upload(port: int, name: str, text: str) -> int:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\""
            f"\r\nContent-Type: text/plain\r\n\r\n{text}\r\n--{boundary}--\r\n").encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/api/v1/documents?replace=true", body=body, headers={
            "Authorization": f"Bearer {TOKEN}",
            "Content-Type": f"multipart/form-data; boundary={boundary}"})
        return conn.getresponse().status
    finally:
        conn.close()


def serving(port: int) -> str | None:
    status, body = request(port, "GET", "/readyz")
    return str(json.loads(body)["version"]) if status == 200 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--clients", type=int, default=8, help="client threads (3/4 on A)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        corpus, index = Path(tmp) / "corpus", Path(tmp) / "index"
        shutil.copytree(PROJECT / "corpus", corpus)
        env = env_for(index, corpus, QA_RELOAD_INTERVAL="0.5", QA_ADMIN_TOKEN=TOKEN)
        built = run_qa(["index", "--json"], env)
        if built.returncode != 0:
            sys.exit(f"qa index failed: {built.stderr.strip()}")
        first = json.loads(built.stdout)["version"]
        slow_env = {**env, "QA_RELOAD_INTERVAL": "3600"}
        with served(env, workers=2) as (port_a, proc_a), served(slow_env, workers=1) as (
                port_b, proc_b):
            started = time.monotonic()
            deadline = started + args.duration
            on_a = max(1, args.clients * 3 // 4)
            load_a = Clients(port_a, on_a, deadline)
            load_b = Clients(port_b, args.clients - on_a, deadline)
            memory: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
            rounds = killed = index_failures = missing = 0
            upload_failures = 0
            next_sample = started
            while time.monotonic() < deadline:
                rounds += 1
                status = upload(port_a, f"soak-{rounds % 4}.txt",
                                f"Soak note {rounds}. The Orkhon valley survey number {rounds} "
                                f"was published in {2030 + rounds % 50}.\n")
                upload_failures += status not in (200, 201)
                if rounds % 3 == 0:  # a rebuild killed mid-way
                    proc = subprocess.Popen([sys.executable, "-m", "qa.cli", "index", "--full"],
                                            env=env, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
                    time.sleep(4)
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(60)
                    killed += 1
                done = run_qa(["index", "--json"], env, timeout=900)
                index_failures += done.returncode != 0
                for port in (port_a, port_b):
                    version = serving(port)
                    if version is not None and not (index / "builds" / version).is_dir():
                        missing += 1
                now = time.monotonic()
                if now >= next_sample:
                    for name, proc_x in (("A", proc_a), ("B", proc_b)):
                        memory[name].append((now - started,
                                             rss_mb([proc_x.pid, *children(proc_x.pid)])))
                    next_sample = now + 15
            load_a.join()
            load_b.join()
            b_version = serving(port_b)
            builds = sorted(p.name for p in (index / "builds").iterdir())
            for name, proc_x in (("A", proc_a), ("B", proc_b)):
                memory[name].append((time.monotonic() - started,
                                     rss_mb([proc_x.pid, *children(proc_x.pid)])))

    print(f"\n{machine()}; {args.duration:.0f} s, {args.clients} clients "
          f"({on_a} on A, {args.clients - on_a} on B)\n")
    for name, load in (("A (reload 0.5 s, 2 workers)", load_a), ("B (reload 1 h)", load_b)):
        print(f"server {name}: {load.requests} requests, {load.failed} failed, "
              f"statuses {load.statuses}")
    print(f"rounds: {rounds} uploads ({upload_failures} failed), {rounds} `qa index` "
          f"({index_failures} failed), {killed} `qa index --full` SIGKILLed mid-way")
    print(f"server B still serving the first build: {b_version == first}")
    print(f"builds missing while a server reported serving them: {missing}")
    print(f"builds on disk at the end: {len(builds)}")
    for name, samples in memory.items():
        warm = [m for t, m in samples if t >= 60] or [m for _, m in samples]
        print(f"RSS of server {name}: {warm[0]:.0f} MB after warm-up, {samples[-1][1]:.0f} MB "
              f"at the end (max {max(m for _, m in samples):.0f} MB)")


if __name__ == "__main__":
    main()
