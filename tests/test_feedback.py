"""Answer feedback: the API and the answer page's form store it (validated, size-limited, rate
limited) in a SQLite file outside the index builds, kept across rebuilds; `qa feedback export`
writes the "not helpful" questions as gold-set candidates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup
from click.testing import CliRunner

from qa import openapi
from qa.cli import cli
from qa.config import Settings
from qa.evaluation import load_gold
from qa.feedback import FeedbackBook, feedback_path
from qa.service import QAService
from qa.web import create_app

JWC = "How many members does the Joint Water Commission have?"


@pytest.fixture
def service(fresh_service: QAService, tmp_path: Path) -> QAService:
    return fresh_service


def _answer(client: Any, question: str = JWC) -> dict[str, Any]:
    response = client.post("/api/v1/answer", json={"question": question})
    assert response.status_code == 200
    body: dict[str, Any] = response.get_json()
    return body


def _feedback_body(answer: dict[str, Any], rating: str, **extra: Any) -> dict[str, Any]:
    return {"rating": rating, "question": answer["question"],
            "answer": answer["answer"]["text"], "index_version": answer["index_version"],
            "citations": answer["citations"], **extra}


def test_api_feedback_is_stored_with_question_citations_and_version(service: QAService) -> None:
    client = create_app(service.settings, service).test_client()
    answer = _answer(client)
    response = client.post("/api/v1/feedback",
                           json=_feedback_body(answer, "not_helpful", comment="Too short."))
    assert response.status_code == 201
    body = response.get_json()
    assert not list(openapi.validator("FeedbackResponse").iter_errors(body))
    assert body["feedback"]["rating"] == "not_helpful"
    (row,) = FeedbackBook(service.settings).store.rows()
    assert row["question"] == JWC and row["comment"] == "Too short."
    assert row["index_version"] == answer["index_version"]
    assert row["citations"] == answer["citations"]
    assert feedback_path(service.settings) == service.settings.index_dir / "feedback.sqlite"
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'qa_feedback_total{rating="not_helpful"} 1.0' in metrics


@pytest.mark.parametrize("change, fragment", [
    ({"rating": "meh"}, "rating"),
    ({"index_version": "../../etc"}, "index_version"),
    ({"question": ""}, "question"),
    ({"comment": "x" * 1001}, "comment"),
    ({"citations": [{"n": 1}]}, "citations"),
    ({"extra": 1}, "extra"),
])
def test_api_feedback_is_validated(service: QAService, change: dict[str, Any],
                                   fragment: str) -> None:
    client = create_app(service.settings, service).test_client()
    body = {"rating": "helpful", "question": JWC, "index_version": "v1", **change}
    response = client.post("/api/v1/feedback", json=body)
    assert response.status_code == 400, response.data
    assert fragment in response.get_json()["error"]["message"]
    assert list(FeedbackBook(service.settings).store.rows()) == []


def test_api_feedback_bodies_are_limited_to_a_few_kilobytes(service: QAService) -> None:
    client = create_app(service.settings, service).test_client()
    body = {"rating": "helpful", "question": JWC, "index_version": "v1",
            "answer": "y" * 3900, "comment": "z" * 1000,
            "citations": [{"n": n, "passage_id": "p" * 300, "doc_id": "d" * 300,
                           "title": "t" * 300} for n in range(1, 5)]}
    response = client.post("/api/v1/feedback", json=body)
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "too_large"


def test_feedback_is_rate_limited_like_questions(service: QAService) -> None:
    client = create_app(service.settings.replace(rate_limit=2), service).test_client()
    body = {"rating": "helpful", "question": JWC, "index_version": "v1"}
    assert client.post("/api/v1/feedback", json=body).status_code == 201
    assert client.post("/feedback", data=body).status_code == 201
    refused = client.post("/api/v1/feedback", json=body)
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert client.post("/feedback", data=body).status_code == 429


def test_answer_page_form_records_feedback(service: QAService) -> None:
    client = create_app(service.settings, service).test_client()
    page = BeautifulSoup(client.get("/", query_string={"q": JWC}).get_data(as_text=True),
                         "html.parser")
    form = page.find("form", class_="feedback-form")
    assert form is not None and form["method"] == "post" and form["action"] == "/feedback"
    buttons = {b["value"]: b.get_text() for b in form.find_all("button")}
    assert buttons == {"helpful": "Helpful", "not_helpful": "Not helpful"}
    data = {i["name"]: i["value"] for i in form.find_all("input", type="hidden")}
    response = client.post("/feedback", data={**data, "rating": "helpful",
                                              "comment": "Exactly right"})
    assert response.status_code == 201
    assert "Thank you" in response.get_data(as_text=True)
    (row,) = FeedbackBook(service.settings).store.rows()
    assert row["rating"] == "helpful" and row["comment"] == "Exactly right"
    assert row["citations"][0]["doc_id"] == "lake-baikal-accord"
    assert row["index_version"] == service.status()["version"]
    assert client.post("/feedback", data={**data, "rating": "bogus"}).status_code == 400


def test_feedback_survives_a_rebuild(service: QAService) -> None:
    book = FeedbackBook(service.settings)
    book.record({"rating": "not_helpful", "question": "Q?", "index_version": "v1"})
    before = service.status()["version"]
    (service.settings.corpus_dir / "new.txt").write_text("The Altai treaty was signed in 2030.\n")
    result = service.index()
    assert result.version != before
    service.index(full=True)
    assert [r["question"] for r in FeedbackBook(service.settings).store.rows()] == ["Q?"]


def test_export_writes_not_helpful_questions_as_gold_candidates(tmp_path: Path) -> None:
    db = tmp_path / "fb" / "feedback.sqlite"
    settings = Settings.load({"index_dir": tmp_path / "index", "feedback_db": str(db)},
                             environ={})
    book = FeedbackBook(settings)
    cite = [{"n": 1, "passage_id": "doc-a-c3", "doc_id": "doc-a", "title": "A"}]
    book.record({"rating": "not_helpful", "question": "Who chairs the forum?",
                 "index_version": "v1", "citations": cite, "comment": "wrong person",
                 "answer": "Someone."})
    book.record({"rating": "not_helpful", "question": "who chairs  the forum",
                 "index_version": "v2", "comment": "still wrong"})
    book.record({"rating": "helpful", "question": "When was CICA founded?",
                 "index_version": "v1"})
    gold = load_gold(Path(__file__).resolve().parent.parent / "qa" / "data" / "gold.jsonl")
    book.record({"rating": "not_helpful", "question": gold[0].question, "index_version": "v1"})
    out = tmp_path / "candidates.jsonl"
    result = CliRunner().invoke(cli, ["feedback", "export", "--feedback-db", str(db),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1  # one per question; helpful ones and gold questions left out
    (row,) = rows
    assert row["question"] == "Who chairs the forum?"
    assert row["answer"] is None and row["quote"] is None and row["answerable"] is True
    assert row["doc"] == "doc-a" and row["kind"] == "feedback"
    assert row["feedback"]["times"] == 2
    assert row["feedback"]["comments"] == ["wrong person", "still wrong"]
    assert row["feedback"]["index_versions"] == ["v1", "v2"]
    (candidate,) = load_gold(out)  # the gold file's format: the evaluation reads it
    assert candidate.question == "Who chairs the forum?" and candidate.answer is None
    printed = CliRunner().invoke(cli, ["feedback", "export", "--feedback-db", str(db)])
    assert [json.loads(x)["id"] for x in printed.output.splitlines()] == [row["id"]]


def test_feedback_text_that_utf8_cannot_hold_is_stored_replaced(service: QAService) -> None:
    client = create_app(service.settings, service).test_client()
    raw = '{"rating": "helpful", "question": "lone \\ud800 surrogate", "index_version": "v1", ' \
          '"comment": "nul \\u0000 here"}'
    response = client.post("/api/v1/feedback", data=raw, content_type="application/json")
    assert response.status_code == 201, response.data
    (row,) = FeedbackBook(service.settings).store.rows()
    assert row["question"].startswith("lone ") and "\ud800" not in row["question"]
    assert "\x00" not in row["comment"]
