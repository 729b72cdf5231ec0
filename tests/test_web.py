"""The web app through Flask's test client: every page and endpoint, every error case, the
OpenAPI document checked against real responses, security headers and escaping."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from bs4 import BeautifulSoup
from conftest import make_settings
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator

from qa import openapi
from qa.service import QAService
from qa.web import (
    JSON_BODY_LIMIT,
    SECURITY_HEADERS,
    Segment,
    create_app,
    describe_age,
    document_pieces,
    parse_highlight,
    split_marked,
)

JWC = "How many members does the Joint Water Commission have?"
UNANSWERABLE = "What is the capital of France?"


@pytest.fixture(scope="module")
def app(tiny_service: QAService) -> Flask:
    return create_app(settings=tiny_service.settings, service=tiny_service)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def assert_json_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The one error shape of the API: ``{"error": {"code", "message"}}`` with ``status``."""
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert_valid(body, "Error")
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert b"Traceback" not in response.data
    return body


def assert_valid(instance: Any, schema: str) -> None:
    errors = list(openapi.validator(schema).iter_errors(instance))
    assert not errors, [e.message for e in errors]


def post_answer(client: FlaskClient, body: Any) -> Any:
    return client.post("/api/v1/answer", json=body)


def soup(response: Any) -> BeautifulSoup:
    assert response.mimetype == "text/html"
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


# -- health ------------------------------------------------------------------------------------
def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert_valid(response.get_json(), "Health")


def test_readyz_reports_the_served_index(client: FlaskClient, tiny_service: QAService) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert_valid(body, "Ready")
    assert body["status"] == "ready"
    assert body["version"] == tiny_service.reader().version
    assert body["documents"] == 3
    assert body["reload_error"] is None


@pytest.fixture
def empty_app(tmp_path: Path, embedder: Any) -> Flask:
    (tmp_path / "corpus").mkdir()
    settings = make_settings(tmp_path / "corpus", tmp_path / "index", encoder="torch")
    return create_app(settings, QAService(settings, embedder=embedder))


def test_without_an_index_the_app_starts_and_reports_503(empty_app: Flask) -> None:
    client = empty_app.test_client()
    assert client.get("/healthz").status_code == 200
    assert_json_error(client.get("/readyz"), 503, "no_index")
    assert_json_error(post_answer(client, {"question": JWC}), 503, "no_index")
    assert_json_error(client.get("/api/v1/documents"), 503, "no_index")
    page = client.get("/")
    assert page.status_code == 503
    assert "qa index" in soup(page).get_text()


# -- POST /api/v1/answer -----------------------------------------------------------------------
def test_answer_cites_the_right_document(client: FlaskClient) -> None:
    response = post_answer(client, {"question": JWC})
    assert response.status_code == 200
    body = response.get_json()
    assert_valid(body, "AnswerResponse")
    assert body["question"] == JWC
    assert not body["answer"]["abstained"]
    assert {c["doc_id"] for c in body["citations"]} == {"lake-baikal-accord"}
    cited = {c["passage_id"] for c in body["citations"]}
    cited_text = " ".join(p["text"] for p in body["passages"] if p["id"] in cited)
    assert "nine members" in cited_text
    for sentence in body["answer"]["sentences"]:
        assert sentence["text"] in body["answer"]["text"]


def test_answer_quotes_the_fact(client: FlaskClient) -> None:
    body = post_answer(client, {"question": JWC}).get_json()
    assert "nine members" in body["answer"]["text"]


def test_answer_is_exactly_the_service_response(client: FlaskClient,
                                                tiny_service: QAService) -> None:
    body = post_answer(client, {"question": JWC, "top_k": 3}).get_json()
    expected = tiny_service.ask(JWC, 3)
    body.pop("timings_ms")
    expected.pop("timings_ms")
    assert body == expected
    assert len(body["passages"]) == 3


def test_answer_abstains_when_the_documents_do_not_answer(client: FlaskClient) -> None:
    body = post_answer(client, {"question": UNANSWERABLE}).get_json()
    assert_valid(body, "AnswerResponse")
    assert body["answer"]["abstained"] is True
    assert body["answer"]["reason"]
    assert body["citations"] == []
    assert body["passages"]


def test_answer_document_filter(client: FlaskClient) -> None:
    body = post_answer(client, {"question": JWC, "doc_ids": ["silk-road-rail"]}).get_json()
    assert body["passages"]
    assert {p["doc_id"] for p in body["passages"]} == {"silk-road-rail"}


@pytest.mark.parametrize("payload, fragment", [
    ({}, "question"),
    ({"question": 5}, "question"),
    ({"question": JWC, "top_k": "5"}, "top_k"),
    ({"question": JWC, "top_k": 0}, "top_k"),
    ({"question": JWC, "top_k": 21}, "top_k"),
    ({"question": JWC, "top_k": True}, "top_k"),
    ({"question": JWC, "doc_ids": "lake-baikal-accord"}, "doc_ids"),
    ({"question": JWC, "doc_ids": [1]}, "doc_ids"),
    ({"question": JWC, "extra": 1}, "extra"),
    ([JWC], "body"),
])
def test_answer_rejects_bad_bodies(client: FlaskClient, payload: Any, fragment: str) -> None:
    body = assert_json_error(post_answer(client, payload), 400, "bad_request")
    assert fragment in body["error"]["message"]


def test_answer_rejects_malformed_json(client: FlaskClient) -> None:
    for raw in (b"{", b"{'question': 'x'}", b"\xff\xfe", b""):
        response = client.post("/api/v1/answer", data=raw, content_type="application/json")
        assert_json_error(response, 400, "bad_request")


def test_answer_requires_json_content_type(client: FlaskClient) -> None:
    response = client.post("/api/v1/answer", data=json.dumps({"question": JWC}),
                           content_type="text/plain")
    assert_json_error(response, 415, "unsupported_media_type")
    form = client.post("/api/v1/answer", data={"question": JWC})
    assert_json_error(form, 415, "unsupported_media_type")


def test_answer_rejects_large_bodies(client: FlaskClient) -> None:
    big = {"question": "x" * (JSON_BODY_LIMIT + 10)}
    assert_json_error(post_answer(client, big), 413, "too_large")


@pytest.mark.parametrize("question", ["", "   \n\t ", "x" * 1001])
def test_answer_invalid_questions_are_422(client: FlaskClient, question: str) -> None:
    assert_json_error(post_answer(client, {"question": question}), 422, "invalid_question")


def test_answer_unknown_document_filter_is_404(client: FlaskClient) -> None:
    body = assert_json_error(post_answer(client, {"question": JWC, "doc_ids": ["nope"]}), 404,
                             "not_found")
    assert "nope" in body["error"]["message"]


def test_wrong_method_and_unknown_routes_are_json(client: FlaskClient) -> None:
    response = client.get("/api/v1/answer")
    assert_json_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]
    assert_json_error(client.get("/api/v1/nope"), 404, "not_found")
    assert_json_error(client.get("/api/nope"), 404, "not_found")
    assert_json_error(client.post("/healthz"), 405, "method_not_allowed")
    assert_json_error(client.put("/api/v1/documents/lake-baikal-accord"), 405,
                      "method_not_allowed")


# -- search and documents ----------------------------------------------------------------------
def test_search(client: FlaskClient) -> None:
    response = client.get("/api/v1/search", query_string={"q": "omul whitefish", "k": 2})
    assert response.status_code == 200
    body = response.get_json()
    assert_valid(body, "SearchResponse")
    assert len(body["passages"]) == 2
    assert body["passages"][0]["doc_id"] == "lake-baikal-accord"
    lexical = client.get("/api/v1/search", query_string={"q": "Duisburg", "mode": "lexical",
                                                         "doc": "silk-road-rail"}).get_json()
    assert {p["doc_id"] for p in lexical["passages"]} == {"silk-road-rail"}


@pytest.mark.parametrize("query, status, code", [
    ({"q": "omul", "k": "0"}, 400, "bad_request"),
    ({"q": "omul", "k": "21"}, 400, "bad_request"),
    ({"q": "omul", "k": "two"}, 400, "bad_request"),
    ({"q": "omul", "mode": "magic"}, 400, "bad_request"),
    ({"k": "3"}, 422, "invalid_question"),
    ({"q": ""}, 422, "invalid_question"),
    ({"q": "omul", "doc": "nope"}, 404, "not_found"),
])
def test_search_errors(client: FlaskClient, query: dict[str, str], status: int,
                       code: str) -> None:
    assert_json_error(client.get("/api/v1/search", query_string=query), status, code)


def test_documents_api(client: FlaskClient, tiny_service: QAService) -> None:
    body = client.get("/api/v1/documents").get_json()
    assert_valid(body, "DocumentList")
    assert body["index_version"] == tiny_service.reader().version
    ids = {d["doc_id"] for d in body["documents"]}
    assert ids == {"lake-baikal-accord", "silk-road-rail", "desert-observatory"}


def test_document_api(client: FlaskClient) -> None:
    response = client.get("/api/v1/documents/lake-baikal-accord")
    assert response.status_code == 200
    doc = response.get_json()
    assert_valid(doc, "Document")
    assert "raw" not in doc and "raw_offsets" not in doc
    assert doc["title"] == "The Lake Baikal Accord on Water Security"
    assert doc["authors"] == ["Test Author"]
    assert "nine members" in doc["text"]
    for span in doc["chunk_spans"]:
        assert 0 <= span["start"] < span["end"] <= len(doc["text"])
    assert_json_error(client.get("/api/v1/documents/nope"), 404, "not_found")


# -- OpenAPI -------------------------------------------------------------------------------------
def test_openapi_document_covers_every_api_route(client: FlaskClient, app: Flask) -> None:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["openapi"].startswith("3.1")
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    documented = {(path, method.upper()) for path, item in doc["paths"].items()
                  for method in item}
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/") or rule.rule in ("/healthz", "/readyz", "/metrics"):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            routed |= {(path, m) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    assert routed == documented
    for item in doc["paths"].values():
        for operation in item.values():
            for status, resp in operation["responses"].items():
                if int(status) >= 400:
                    ref = resp["content"]["application/json"]["schema"]["$ref"]
                    assert ref == "#/components/schemas/Error"


def test_openapi_request_schema_matches_the_validation(client: FlaskClient) -> None:
    doc = client.get("/api/v1/openapi.json").get_json()
    ref = doc["paths"]["/api/v1/answer"]["post"]["requestBody"]["content"]["application/json"]
    name = ref["schema"]["$ref"].rsplit("/", 1)[1]
    schema = {**doc["components"]["schemas"][name], "components": doc["components"]}
    validator = Draft202012Validator(schema)
    assert validator.is_valid({"question": JWC, "top_k": 3, "doc_ids": ["a"]})
    assert not validator.is_valid({"question": JWC, "unknown": 1})


# -- rate limiting -----------------------------------------------------------------------------
def test_rate_limit_answers_429_with_retry_after(tiny_service: QAService) -> None:
    app = create_app(tiny_service.settings.replace(rate_limit=2), tiny_service)
    client = app.test_client()
    assert client.get("/api/v1/documents").status_code == 200
    assert client.get("/api/v1/documents").status_code == 200
    response = client.get("/api/v1/documents")
    assert_json_error(response, 429, "rate_limited")
    assert int(response.headers["Retry-After"]) >= 1
    assert client.get("/healthz").status_code == 200
    assert client.get("/documents").status_code == 200
    other = client.get("/api/v1/documents", environ_base={"REMOTE_ADDR": "10.0.0.2"})
    assert other.status_code == 200


# -- security headers and errors -----------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/documents", "/api/v1/documents", "/healthz",
                                  "/static/style.css", "/nope", "/api/v1/nope"])
def test_security_headers_on_every_response(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    response.close()  # static files are streamed from an open file
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    assert "script-src 'none'" in response.headers["Content-Security-Policy"]


class _BrokenService:
    """Stands in for QAService to exercise the last-resort error handler."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def load(self) -> _BrokenService:
        return self

    def ask(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internal detail")

    documents = ask


def test_unexpected_errors_are_500_without_details(tiny_service: QAService) -> None:
    client = create_app(tiny_service.settings, _BrokenService(tiny_service.settings)).test_client()  # type: ignore[arg-type]
    body = assert_json_error(post_answer(client, {"question": JWC}), 500, "internal_error")
    assert "secret" not in json.dumps(body)
    page = client.get("/")
    assert page.status_code == 500
    assert "secret" not in page.get_data(as_text=True)
    assert "Traceback" not in page.get_data(as_text=True)


# -- HTML pages ----------------------------------------------------------------------------------
def test_form_page_is_accessible_and_script_free(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    page = soup(response)
    assert page.html["lang"] == "en"
    assert page.find("meta", attrs={"name": "viewport"})
    skip = page.find("a", class_="skip-link")
    assert skip["href"] == "#main" and page.find(id="main")
    assert not page.find_all("script")
    form = page.find("form")
    assert form["method"] == "get"
    for field in form.find_all(["input", "select"]):
        assert page.find("label", attrs={"for": field["id"]}), field
    options = [o["value"] for o in page.find("select", id="k").find_all("option")]
    assert options == [str(n) for n in range(1, 21)]
    assert page.find("option", selected=True)["value"] == "5"
    docs = {i["value"] for i in form.find_all("input", attrs={"name": "doc"})}
    assert docs == {"lake-baikal-accord", "silk-road-rail", "desert-observatory"}
    examples = page.select(".examples a")
    assert examples and all(parse_qs(urlsplit(a["href"]).query)["q"] for a in examples)
    stylesheet = page.find("link", rel="stylesheet")["href"]
    css = client.get(stylesheet)
    css.close()
    assert css.status_code == 200


def test_answer_page(client: FlaskClient) -> None:
    response = client.get("/", query_string={"q": JWC, "k": "3"})
    assert response.status_code == 200
    page = soup(response)
    assert page.find("input", id="q")["value"] == JWC
    assert page.find("option", selected=True)["value"] == "3"
    cards = page.select("li.card")
    assert len(cards) == 3
    cites = page.select(".answer a.cite")
    assert cites
    for cite in cites:
        card = page.find(id=cite["href"].lstrip("#"))
        assert card is not None and "card" in card["class"]
        assert "Lake Baikal" in card.h3.get_text()
        marks = [m.get_text() for m in card.find_all("mark")]
        assert marks and all(m in page.select_one(".answer-text").get_text() for m in marks)
        assert "Test Author" in card.select_one(".meta").get_text()
        source = card.select_one(".source a")["href"]
        parts = urlsplit(source)
        assert parts.path == "/documents/lake-baikal-accord"
        assert re.fullmatch(r"\d+-\d+", parse_qs(parts.query)["highlight"][0])
        assert parts.fragment.startswith("chunk-lake-baikal-accord-c")


def test_source_link_highlights_the_cited_sentence(client: FlaskClient) -> None:
    page = soup(client.get("/", query_string={"q": JWC}))
    cite = page.select_one(".answer a.cite")
    card = page.find(id=cite["href"].lstrip("#"))
    source = card.select_one(".source a")["href"]
    doc_page = soup(client.get(source))
    mark = doc_page.find("mark", id="highlight")
    assert mark is not None
    assert mark.get_text() in page.select_one(".answer-text").get_text()
    assert doc_page.find(id=urlsplit(source).fragment) is not None


def test_abstained_answer_page(client: FlaskClient) -> None:
    page = soup(client.get("/", query_string={"q": UNANSWERABLE}))
    answer = page.select_one("section.answer")
    assert "The documents do not answer this." in answer.get_text()
    assert answer.select_one(".reason").get_text().strip()
    assert not answer.select("a.cite")
    assert page.select("li.card")
    assert "Nearest passages" in page.get_text()


@pytest.mark.parametrize("q, message", [("", "empty"), ("   ", "empty"), ("x" * 1001, "limit")])
def test_bad_question_on_the_page_is_a_friendly_422(client: FlaskClient, q: str,
                                                    message: str) -> None:
    response = client.get("/", query_string={"q": q})
    assert response.status_code == 422
    page = soup(response)
    assert page.find("form") is not None
    error = page.select_one("#q-error")
    assert message in error.get_text()
    assert page.find("input", id="q")["aria-invalid"] == "true"
    assert not page.select("li.card")


def test_bad_k_on_the_page_falls_back_to_the_default(client: FlaskClient) -> None:
    page = soup(client.get("/", query_string={"q": JWC, "k": "99"}))
    assert len(page.select("li.card")) == 5


def test_document_filter_on_the_page(client: FlaskClient) -> None:
    page = soup(client.get("/", query_string={"q": JWC, "doc": "silk-road-rail"}))
    assert {a["href"].split("?")[0] for a in page.select(".card .source a")} == {
        "/documents/silk-road-rail"}
    checked = page.find_all("input", attrs={"name": "doc", "checked": True})
    assert [c["value"] for c in checked] == ["silk-road-rail"]


def test_question_is_escaped(client: FlaskClient) -> None:
    attack = "<script>alert(1)</script>"
    response = client.get("/", query_string={"q": attack})
    raw = response.get_data(as_text=True)
    assert "<script>" not in raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    page = soup(response)
    assert not page.find_all("script")
    assert page.find("input", id="q")["value"] == attack


def test_documents_page(client: FlaskClient, tiny_service: QAService) -> None:
    page = soup(client.get("/documents"))
    rows = page.select("table.documents tbody tr")
    assert len(rows) == 3
    links = {a.get_text(): a["href"] for a in page.select("table.documents a")}
    assert links["The Lake Baikal Accord on Water Security"] == "/documents/lake-baikal-accord"
    text = page.get_text()
    assert tiny_service.reader().version in text
    assert "Test Author" in text and "2031-05" in text
    assert "older version of the text handling" not in text


def test_documents_page_says_when_the_index_needs_a_rebuild(
        client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("qa.service.PIPELINE_VERSION", "next")
    text = soup(client.get("/documents")).get_text()
    assert "older version of the text handling" in text and "qa index" in text


def test_document_page_anchors_every_chunk(client: FlaskClient, tiny_service: QAService) -> None:
    doc = tiny_service.document("lake-baikal-accord")
    page = soup(client.get("/documents/lake-baikal-accord"))
    body = page.select_one(".doc-text")
    assert body.get_text() == doc["text"]
    for span in doc["chunk_spans"]:
        anchor = page.find(id=f"chunk-{span['id']}")
        assert anchor is not None
        assert anchor.get_text() and doc["text"][span["start"]:].startswith(anchor.get_text())
    assert page.find("mark") is None
    assert "Test Fixtures Press" in page.select_one(".doc-meta").get_text()


def test_document_page_highlight(client: FlaskClient, tiny_service: QAService) -> None:
    text = tiny_service.document("lake-baikal-accord")["text"]
    start = text.index("The commission has nine members")
    end = text.index(".", start) + 1
    page = soup(client.get(f"/documents/lake-baikal-accord?highlight={start}-{end}"))
    assert page.find("mark", id="highlight").get_text() == text[start:end]
    for bad in ("9-3", "a-b", f"0-{len(text) + 1}", "-1-5", "5", "3-3", "１-２"):
        page = soup(client.get("/documents/lake-baikal-accord", query_string={"highlight": bad}))
        assert page.find("mark") is None, bad


def test_html_errors_are_small_pages(client: FlaskClient) -> None:
    missing = client.get("/documents/nope")
    assert missing.status_code == 404
    assert "nope" in soup(missing).select_one(".error-message").get_text()
    assert client.get("/nope").status_code == 404
    wrong = client.post("/")
    assert wrong.status_code == 405
    assert soup(wrong).find("h1")


# -- pure helpers ------------------------------------------------------------------------------
def test_split_marked() -> None:
    assert split_marked("abcdefgh", 10, [(12, 14)]) == [
        Segment("ab"), Segment("cd", True), Segment("efgh")]
    assert split_marked("abcdefgh", 10, [(5, 11), (17, 30)]) == [
        Segment("a", True), Segment("bcdefg"), Segment("h", True)]
    assert split_marked("abcdefgh", 10, [(11, 13), (12, 15)]) == [
        Segment("a"), Segment("bcde", True), Segment("fgh")]
    assert split_marked("abc", 0, []) == [Segment("abc")]
    assert split_marked("abc", 0, [(5, 9)]) == [Segment("abc")]


def test_document_pieces() -> None:
    text = "0123456789"
    spans = [{"id": "c0", "start": 0, "end": 6}, {"id": "c1", "start": 4, "end": 10}]
    pieces = document_pieces(text, spans, (3, 6))
    assert [p.anchors for p in pieces] == [["c0"], ["c1"]]
    assert "".join(s.text for p in pieces for s in p.segments) == text
    marked = [s for p in pieces for s in p.segments if s.marked]
    assert [s.text for s in marked] == ["3", "45"]
    assert [s.mark_id for s in marked] == ["highlight", None]
    assert document_pieces("", [], None) == []


def test_parse_highlight() -> None:
    assert parse_highlight("2-5", 10) == (2, 5)
    assert parse_highlight("0-10", 10) == (0, 10)
    for bad in (None, "", "5-2", "0-11", "2-2", "x-5", "2-5-7", " 2-5"):
        assert parse_highlight(bad, 10) is None


def test_describe_age() -> None:
    now = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)
    assert describe_age("2031-05-01T11:59:30Z", now) == "just now"
    assert describe_age("2031-05-01T11:00:00Z", now) == "1 hour ago"
    assert describe_age("2031-04-28T12:00:00Z", now) == "3 days ago"
    assert describe_age(None, now) == ""
    assert describe_age("yesterday", now) == ""
