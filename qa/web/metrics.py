"""Prometheus metrics of the service and ``GET /metrics``.

Owns the metric definitions and their recording: requests by route, method and status; answer
latency, whole and per stage (encode, retrieve, answer); answers, abstentions and cache hits;
the served index version with its document and chunk counts; rebuild jobs by outcome and their
duration; index reload errors; feedback by rating.

Under ``qa serve`` every gunicorn worker writes its values to files in a directory the server
creates for its run (prometheus_client's multiprocess mode, see ``qa.metrics_dir``), and a
scrape answered by any worker adds up all of them. Elsewhere (tests, ``qa serve --dev``) the
app's own registry is scraped.
"""

from __future__ import annotations

import hmac
import threading
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from qa.errors import QAError, UnauthorizedError
from qa.service import QAService
from qa.web import requestlog

STAGES = ("encode", "retrieve", "answer")
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
REBUILD_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    """The metrics of one app. With ``multiprocess_dir`` the values live in that directory's
    files, shared by every worker of the server; without it in this object's registry."""

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        if multiprocess_dir is not None and values.ValueClass is values.MutexValue:
            # prometheus_client chose in-process values when it was first imported; a worker
            # of `qa serve` must write to the shared files instead.
            values.ValueClass = values.MultiProcessValue()
        self.registry = CollectorRegistry()
        reg = self.registry
        self.requests = Counter("qa_http_requests", "HTTP requests by route, method and status.",
                                ["route", "method", "status"], registry=reg)
        self.answer_seconds = Histogram(
            "qa_answer_duration_seconds", "Answer latency in seconds: the whole answer (stage "
            "total) and each stage of an answer that was not cached.", ["stage"],
            buckets=LATENCY_BUCKETS, registry=reg)
        self.answers = Counter("qa_answers", "Questions answered (the API and the page).",
                               registry=reg)
        self.abstentions = Counter("qa_answer_abstentions",
                                   "Answers where the service said the documents do not answer.",
                                   registry=reg)
        self.cache_hits = Counter("qa_answer_cache_hits", "Answers served from the answer cache.",
                                  registry=reg)
        self.index_info = Gauge("qa_index_info", "1 for the index version a worker serves.",
                                ["version"], multiprocess_mode="livemax", registry=reg)
        self.index_documents = Gauge("qa_index_documents", "Documents in the served index.",
                                     multiprocess_mode="livemostrecent", registry=reg)
        self.index_chunks = Gauge("qa_index_chunks", "Chunks (passages) in the served index.",
                                  multiprocess_mode="livemostrecent", registry=reg)
        self.reload_errors = Counter(
            "qa_index_reload_errors", "Newly published index versions a worker could not load "
            "(it kept serving the previous one).", registry=reg)
        self.reload_failing = Gauge(
            "qa_index_reload_failing", "1 while a worker keeps an older version because the "
            "newest cannot be loaded.", multiprocess_mode="livemax", registry=reg)
        self.rebuilds = Counter("qa_rebuild_jobs", "Rebuild jobs by outcome.", ["outcome"],
                                registry=reg)
        self.rebuild_seconds = Histogram("qa_rebuild_duration_seconds",
                                         "Duration of rebuild jobs in seconds, by outcome.",
                                         ["outcome"], buckets=REBUILD_BUCKETS, registry=reg)
        self.feedback = Counter("qa_feedback", "Answer feedback received, by rating.",
                                ["rating"], registry=reg)
        self._lock = threading.Lock()
        self._version: str | None = None
        self._reload_error: str | None = None

    # -- recording ----------------------------------------------------------------------------
    def observe_request(self, route: str, method: str, status: int) -> None:
        self.requests.labels(route, method, str(status)).inc()

    def observe_answer(self, response: dict[str, Any]) -> None:
        timings = response.get("timings_ms", {})
        self.answers.inc()
        if response["answer"]["abstained"]:
            self.abstentions.inc()
        if timings.get("cached"):
            self.cache_hits.inc()
        else:
            for stage in STAGES:
                if isinstance(timings.get(stage), int | float):
                    self.answer_seconds.labels(stage).observe(timings[stage] / 1000)
        if isinstance(timings.get("total"), int | float):
            self.answer_seconds.labels("total").observe(timings["total"] / 1000)

    def observe_rebuild(self, outcome: str, seconds: float) -> None:
        self.rebuilds.labels(outcome).inc()
        self.rebuild_seconds.labels(outcome).observe(seconds)

    def observe_index(self, service: QAService, version: str | None = None) -> None:
        """Record the served version and its counts when they changed (cheap otherwise), and a
        reload error when a new one appeared."""
        error = service.reload_error
        if error != self._reload_error:
            with self._lock:
                if error != self._reload_error:
                    if error is not None:
                        self.reload_errors.inc()
                    self.reload_failing.set(1 if error else 0)
                    self._reload_error = error
        if version is not None and version == self._version:
            return
        try:
            status = service.status()
        except QAError:  # no index yet: nothing served to describe
            return
        with self._lock:
            if status["version"] == self._version:
                return
            if self._version is not None:
                self.index_info.labels(self._version).set(0)
            self.index_info.labels(status["version"]).set(1)
            self.index_documents.set(status["documents"])
            self.index_chunks.set(status["chunks"])
            self._version = status["version"]

    # -- scraping -----------------------------------------------------------------------------
    def exposition(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self.multiprocess_dir))
        return generate_latest(registry)


def install(app: Flask, metrics: Metrics, token: str) -> None:
    """Count every request and serve ``GET /metrics`` (behind a bearer token when one is set)."""

    def count(response: Response) -> Response:
        metrics.observe_request(requestlog.route(), request.method, response.status_code)
        return response

    def scrape() -> Response:
        if token:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                     token.encode()):
                raise UnauthorizedError("a valid 'Authorization: Bearer <token>' header is "
                                        "required (QA_METRICS_TOKEN)")
        metrics.observe_index(app.extensions["qa"].service)
        return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)

    app.after_request(count)
    app.add_url_rule("/metrics", "metrics", scrape)
