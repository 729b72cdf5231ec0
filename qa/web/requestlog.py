"""Request ids and the request log.

Every request gets an id: the client's ``X-Request-ID`` when it is well formed (1-128 letters,
digits and ``-_.:``), else a new random one. It is returned in the ``X-Request-ID`` header and
in error bodies, and written on the request's log line. One line per request on the
``qa.requests`` logger: method, route, status, duration, index version and whether the answer
abstained, as plain text (the default, for a terminal) or as one JSON object per line
(``log_format=json``, for a log collector). The question itself is written only with
``log_questions=1``: questions can hold what users would not want kept.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Any

from flask import Flask, Response, g, request
from pythonjsonlogger.json import JsonFormatter

from qa.config import Settings

HEADER = "X-Request-ID"
LOGGER = "qa.requests"
_WELL_FORMED = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(settings: Settings) -> logging.Logger:
    """The request logger writing to stderr in the configured format. Called by the app
    factory; a later call (another app in the same process) replaces the handler."""
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        if getattr(handler, "qa_request_log", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.qa_request_log = True  # type: ignore[attr-defined]
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger",
                           "process": "pid"}))
    else:
        handler.setFormatter(logging.Formatter(_PLAIN))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def install(app: Flask, settings: Settings) -> None:
    logger = configure(settings)
    log_questions = bool(settings.log_questions)

    def start() -> None:
        g.request_started = time.perf_counter()
        g.request_id = accepted_id(request.headers.get(HEADER))

    def finish(response: Response) -> Response:
        response.headers[HEADER] = request_id()
        line = fields(response, log_questions)
        logger.info(*_line(line), extra=line)
        return response

    app.before_request(start)
    app.after_request(finish)


def accepted_id(value: str | None) -> str:
    """The client's id when well formed, else a new one."""
    if value is not None and _WELL_FORMED.fullmatch(value):
        return value
    return os.urandom(16).hex()


def request_id() -> str:
    """The current request's id (a new one if the request never reached ``start``)."""
    if "request_id" not in g:
        g.request_id = os.urandom(16).hex()
    rid: str = g.request_id
    return rid


def route() -> str:
    """The matched route's pattern (``/documents/<doc_id>``), never the raw path: bounded in
    number, and no document id or question in a metric label."""
    rule = request.url_rule
    return rule.rule if rule is not None else "(unmatched)"


def note(**values: Any) -> None:
    """Add what a view learned (index version, abstained, question) to the request's line."""
    g.setdefault("request_notes", {}).update(values)


def fields(response: Response, log_questions: bool) -> dict[str, Any]:
    notes = dict(g.get("request_notes", {}))
    question = notes.pop("question", None)
    started = g.get("request_started")
    out: dict[str, Any] = {
        "request_id": request_id(), "method": request.method, "route": route(),
        "status": response.status_code,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
        "index_version": notes.pop("index_version", None),
        "abstained": notes.pop("abstained", None),
    }
    if log_questions and question is not None:
        out["question"] = question
    return out


def _line(f: dict[str, Any]) -> tuple[Any, ...]:
    text = "%s %s %s %sms id=%s"
    args: list[Any] = [f["method"], f["route"], f["status"], f["duration_ms"], f["request_id"]]
    if f["index_version"]:
        text += " index=%s"
        args.append(f["index_version"])
    if f["abstained"] is not None:
        text += " abstained=%s"
        args.append(f["abstained"])
    if "question" in f:
        text += " question=%r"
        args.append(f["question"])
    return (text, *args)
