"""Request ids (taken from X-Request-ID when well formed), in headers and error bodies, and the
one log line per request, plain by default or JSON, with the question only when asked for."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qa.service import QAService
from qa.web import create_app
from qa.web.requestlog import accepted_id

JWC = "How many members does the Joint Water Commission have?"


def test_accepted_id() -> None:
    assert accepted_id("abc-123_X.y:z") == "abc-123_X.y:z"
    assert accepted_id("a" * 128) == "a" * 128
    for bad in ("", "a" * 129, "has space", "new\nline", "ünïcode", "<script>", None):
        new = accepted_id(bad)
        assert new != bad and len(new) == 32 and int(new, 16) >= 0


def test_ids_in_headers_and_error_bodies(tiny_service: QAService) -> None:
    client = create_app(tiny_service.settings, tiny_service).test_client()
    ok = client.get("/healthz", headers={"X-Request-ID": "client-chosen-1"})
    assert ok.headers["X-Request-ID"] == "client-chosen-1"
    generated = client.get("/healthz", headers={"X-Request-ID": "not well formed!"})
    assert generated.headers["X-Request-ID"] != "not well formed!"
    assert len(generated.headers["X-Request-ID"]) == 32
    other = client.get("/healthz")
    assert other.headers["X-Request-ID"] != generated.headers["X-Request-ID"]

    error = client.post("/api/v1/answer", json={"question": ""},
                        headers={"X-Request-ID": "bad-question-7"})
    assert error.status_code == 422
    assert error.headers["X-Request-ID"] == "bad-question-7"
    assert error.get_json()["error"]["request_id"] == "bad-question-7"
    missing = client.get("/api/v1/nope")
    assert missing.get_json()["error"]["request_id"] == missing.headers["X-Request-ID"]
    page = client.get("/documents/nope", headers={"X-Request-ID": "page-404"})
    assert page.status_code == 404 and "page-404" in page.get_data(as_text=True)


def _json_lines(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_json_log_line_per_request_without_the_question(tiny_service: QAService,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    settings = tiny_service.settings.replace(log_format="json")
    client = create_app(settings, tiny_service).test_client()
    capsys.readouterr()
    client.post("/api/v1/answer", json={"question": JWC}, headers={"X-Request-ID": "q-1"})
    client.get("/documents/nope", headers={"X-Request-ID": "q-2"})
    err = capsys.readouterr().err
    lines = {line["request_id"]: line for line in _json_lines(err)}
    answer = lines["q-1"]
    assert answer["logger"] == "qa.requests" and answer["level"] == "INFO"
    assert (answer["method"], answer["route"], answer["status"]) == ("POST", "/api/v1/answer",
                                                                     200)
    assert answer["abstained"] is False
    assert answer["index_version"] == tiny_service.status()["version"]
    assert answer["duration_ms"] > 0
    assert "question" not in answer and JWC not in err
    missing = lines["q-2"]
    assert (missing["route"], missing["status"]) == ("/documents/<doc_id>", 404)
    assert missing["index_version"] is None and missing["abstained"] is None


def test_questions_are_logged_only_when_enabled(tiny_service: QAService,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    settings = tiny_service.settings.replace(log_format="json", log_questions=1)
    client = create_app(settings, tiny_service).test_client()
    capsys.readouterr()
    client.get("/", query_string={"q": JWC}, headers={"X-Request-ID": "page-q"})
    (line,) = [x for x in _json_lines(capsys.readouterr().err) if x["request_id"] == "page-q"]
    assert line["question"] == JWC and line["route"] == "/"


def test_plain_log_is_the_default(tiny_service: QAService,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert tiny_service.settings.log_format == "plain"
    client = create_app(tiny_service.settings, tiny_service).test_client()
    capsys.readouterr()
    client.post("/api/v1/answer", json={"question": JWC}, headers={"X-Request-ID": "plain-1"})
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "id=plain-1" in x]
    assert "qa.requests: POST /api/v1/answer 200 " in line
    assert "abstained=False" in line and JWC not in line
    assert not line.startswith("{")


def test_a_rate_limited_request_keeps_the_client_id(tiny_service: QAService) -> None:
    client = create_app(tiny_service.settings.replace(rate_limit=1), tiny_service).test_client()
    assert client.get("/api/v1/documents", environ_base={"REMOTE_ADDR": "10.9.9.9"}
                      ).status_code == 200
    refused = client.get("/api/v1/documents", headers={"X-Request-ID": "limited-1"},
                         environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert refused.status_code == 429
    assert refused.headers["X-Request-ID"] == "limited-1"
    assert refused.get_json()["error"]["request_id"] == "limited-1"
