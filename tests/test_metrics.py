"""GET /metrics: what is counted, the optional token, and a real 2-worker gunicorn server whose
scrape counts the requests of both workers (prometheus_client's multiprocess mode)."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings, serving

from qa.config import Settings
from qa.service import QAService
from qa.web import create_app

JWC = "How many members does the Joint Water Commission have?"
UNANSWERABLE = "What is the capital of France?"


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a Prometheus text exposition (None when absent)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if m is None or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()) and len(found) == len(labels):
            return float(m.group(3))
    return None


def test_metrics_count_requests_answers_stages_and_the_index(built_tiny: Settings,
                                                             embedder: Any) -> None:
    tiny_service = QAService(built_tiny, embedder=embedder)  # its own, empty answer cache
    client = create_app(tiny_service.settings, tiny_service).test_client()
    assert client.post("/api/v1/answer", json={"question": JWC}).status_code == 200
    assert client.post("/api/v1/answer", json={"question": JWC}).status_code == 200  # cached
    assert client.get("/", query_string={"q": UNANSWERABLE}).status_code == 200
    assert client.get("/documents/nope").status_code == 404
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    text = response.get_data(as_text=True)
    assert sample(text, "qa_http_requests_total", route="/api/v1/answer", method="POST",
                  status="200") == 2
    assert sample(text, "qa_http_requests_total", route="/documents/<doc_id>", method="GET",
                  status="404") == 1
    assert sample(text, "qa_answers_total") == 3
    assert sample(text, "qa_answer_cache_hits_total") == 1
    assert sample(text, "qa_answer_abstentions_total") == 1
    for stage in ("encode", "retrieve", "answer"):  # the two answers that were not cached
        assert sample(text, "qa_answer_duration_seconds_count", stage=stage) == 2
    assert sample(text, "qa_answer_duration_seconds_count", stage="total") == 3
    status = tiny_service.status()
    assert sample(text, "qa_index_info", version=status["version"]) == 1
    assert sample(text, "qa_index_documents") == status["documents"]
    assert sample(text, "qa_index_chunks") == status["chunks"]


def test_metrics_token(tiny_service: QAService) -> None:
    settings = tiny_service.settings.replace(metrics_token="m3trics")
    client = create_app(settings, tiny_service).test_client()
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused.get_json()["error"]["code"] == "unauthorized"
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.get("/metrics", headers={"Authorization": "Bearer m3trics"})
    assert ok.status_code == 200
    assert "qa_http_requests_total" in ok.get_data(as_text=True)


def test_rebuild_jobs_are_counted_by_outcome(fresh_service: QAService) -> None:
    settings = fresh_service.settings.replace(admin_token="t0ken")
    client = create_app(settings, fresh_service).test_client()
    auth = {"Authorization": "Bearer t0ken"}
    (settings.corpus_dir / "aral.txt").write_text("The Aral Sea Bridge is 42 kilometres long.\n")
    job = client.post("/api/v1/index", headers=auth).get_json()["job"]
    deadline = time.monotonic() + 300
    while job["state"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = client.get(f"/api/v1/index/jobs/{job['id']}", headers=auth).get_json()["job"]
    assert job["state"] == "succeeded", job
    text = client.get("/metrics").get_data(as_text=True)
    assert sample(text, "qa_rebuild_jobs_total", outcome="succeeded") == 1
    assert sample(text, "qa_rebuild_duration_seconds_count", outcome="succeeded") == 1
    assert sample(text, "qa_rebuild_jobs_total", outcome="failed") is None


# -- a real gunicorn server with two workers -------------------------------------------------
def _get(port: int, path: str, headers: dict[str, str] | None = None,
         method: str = "GET", body: str | None = None) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body, headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        conn.close()


@pytest.fixture
def two_workers(built_tiny: Settings, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """`qa serve --workers 2` over a copy of the tiny index, logging JSON to a file, with its
    temp folder (where the metrics directory goes) under tmp_path."""
    shutil.copytree(built_tiny.index_dir, tmp_path / "index")
    settings = make_settings(built_tiny.corpus_dir, tmp_path / "index")
    temp = tmp_path / "tmp"
    temp.mkdir()
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    env.update(HF_HUB_OFFLINE="1", TMPDIR=str(temp), QA_LOG_FORMAT="json")
    with serving("--no-build", "--workers", "2", "--corpus-dir", str(settings.corpus_dir),
                 "--index-dir", str(settings.index_dir), "--encoder", "torch", log=log,
                 env=env, grace=60) as (port, proc):
        deadline = time.monotonic() + 300
        ready = False
        while not ready and time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = _get(port, "/readyz")[0] == 200
            except OSError:
                time.sleep(0.5)
        assert ready, log.read_text(errors="replace")[-3000:]
        yield {"port": port, "log": log, "temp": temp, "proc": proc}


def _log_lines(log: Path) -> list[dict[str, Any]]:
    """The JSON objects of the log. Two workers and the master share the file, so a line may
    begin with another process's unterminated output (a progress bar, say): each object is
    read from its first brace."""
    lines = []
    decoder = json.JSONDecoder()
    for line in log.read_text(errors="replace").splitlines():
        start = line.find('{"')
        if start >= 0:
            try:
                lines.append(decoder.raw_decode(line, start)[0])
            except ValueError:  # the last line, still being written
                continue
    return lines


def _logged(log: Path, request_id: str) -> dict[str, Any]:
    """The request's log line. A worker may write it just after the response has left, so it is
    waited for (bounded: 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        found = [r for r in _log_lines(log) if r.get("request_id") == request_id]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, log.read_text(errors="replace")[-3000:]
            return found[0]
        time.sleep(0.02)


def _pid_of(log: Path, request_id: str) -> int:
    return int(_logged(log, request_id)["pid"])


@pytest.mark.slow
def test_a_scrape_counts_the_requests_of_both_workers(two_workers: dict[str, Any]) -> None:
    port, log = two_workers["port"], two_workers["log"]
    # Requests until both workers have answered some, each on its own connection. The second
    # worker may still be loading its app when the first is ready, so the bound is in time
    # (120 s), with a pause that lets the other worker reach accept().
    pids: dict[int, int] = {}
    sent = 0
    deadline = time.monotonic() + 120
    while len(pids) < 2 and time.monotonic() < deadline:
        rid = f"health-{sent}"
        status, headers, _ = _get(port, "/healthz", {"X-Request-ID": rid})
        assert status == 200 and headers["X-Request-ID"] == rid
        sent += 1
        pid = _pid_of(log, rid)
        pids[pid] = pids.get(pid, 0) + 1
        time.sleep(0.02)
    assert len(pids) == 2, f"one worker answered all {sent} requests"
    status, headers, text = _get(port, "/metrics", {"X-Request-ID": "scrape-1"})
    assert status == 200
    scraped_by = _pid_of(log, "scrape-1")
    other = next(pid for pid in pids if pid != scraped_by)
    assert pids[other] >= 1  # requests only the other worker counted ...
    # ... are in the scrape, with those of the worker that answered it.
    assert sample(text, "qa_http_requests_total", route="/healthz", method="GET",
                  status="200") == sent

    # An answer is logged as one JSON line, without the question (log_questions is off).
    status, headers, body = _get(port, "/api/v1/answer", {"Content-Type": "application/json",
                                                          "X-Request-ID": "answer-1"},
                                 "POST", json.dumps({"question": JWC}))
    assert status == 200
    line = _logged(log, "answer-1")
    assert line["method"] == "POST" and line["route"] == "/api/v1/answer"
    assert line["status"] == 200 and line["abstained"] is False
    assert line["index_version"] == json.loads(body)["index_version"]
    assert isinstance(line["duration_ms"], float)
    assert "question" not in line and JWC not in log.read_text(errors="replace")

    # The server made one metrics directory for this run; a worker that dies is marked dead
    # (its live gauges leave the directory, its counters stay), and stopping removes it.
    (metrics_dir,) = two_workers["temp"].glob("qa-metrics-*")
    victim = other
    assert (metrics_dir / f"counter_{victim}.db").exists()
    assert list(metrics_dir.glob(f"gauge_live*_{victim}.db"))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while list(metrics_dir.glob(f"gauge_live*_{victim}.db")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not list(metrics_dir.glob(f"gauge_live*_{victim}.db"))
    assert (metrics_dir / f"counter_{victim}.db").exists()
    proc = two_workers["proc"]
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert not metrics_dir.exists()
