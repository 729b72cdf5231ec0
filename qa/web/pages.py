"""The HTML pages for people: the question form and answer page (with its feedback form), the
document list and one document with its chunks anchored and the cited sentence highlighted."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, g, render_template, request

from qa import openapi
from qa.errors import BadRequestError
from qa.web import parsing, requestlog
from qa.web.presentation import (
    answer_view,
    describe_age,
    document_pieces,
    feedback_fields,
    parse_highlight,
)
from qa.web.state import current

pages = Blueprint("pages", __name__)


@pages.get("/")
def ask() -> Any:
    state = current()
    documents = state.service.documents()
    k = parsing.int_arg("k", state.settings.top_k, strict=False)
    selected = request.args.getlist("doc")
    q = request.args.get("q")
    context: dict[str, Any] = {"q": q, "k": k, "max_k": openapi.MAX_K, "selected": selected,
                               "documents": documents, "examples": state.examples,
                               "max_chars": state.settings.max_question_chars}
    g.page = ("index.html", context)
    if q is None:
        return render_template("index.html", **context)
    requestlog.note(question=q)
    response = state.service.ask(q, k, selected or None)
    state.metrics.observe_answer(response)
    state.metrics.observe_index(state.service, response["index_version"])
    requestlog.note(index_version=response["index_version"],
                    abstained=response["answer"]["abstained"])
    view = answer_view(response, {d["doc_id"]: d for d in documents})
    return render_template("index.html", **context, response=response, view=view,
                           feedback=feedback_fields(response))


@pages.post("/feedback")
def feedback() -> Any:
    """The answer page's "Helpful / Not helpful" form: the same record as the API's."""
    state = current()
    parsing.limit_body(openapi.FEEDBACK_BODY_LIMIT)
    form = request.form
    try:
        citations = json.loads(form.get("citations") or "[]")
    except ValueError as e:
        raise BadRequestError("the form's citations are not valid JSON") from e
    body: dict[str, Any] = {"rating": form.get("rating", ""), "question": form.get("question", ""),
                            "index_version": form.get("index_version", ""),
                            "citations": citations}
    for name in ("answer", "comment"):
        if form.get(name):
            body[name] = form[name]
    stored = state.feedback.record(parsing.validated(body, "FeedbackRequest"))
    state.metrics.feedback.labels(stored["rating"]).inc()
    return render_template("feedback.html", stored=stored), 201


@pages.get("/documents")
def documents() -> Any:
    service = current().service
    docs = service.documents()
    status = service.status()
    return render_template("documents.html", documents=docs, status=status,
                           age=describe_age(status.get("created")))


@pages.get("/documents/<doc_id>")
def document(doc_id: str) -> Any:
    doc = current().service.document(doc_id)
    highlight = parse_highlight(request.args.get("highlight"), len(doc["text"]))
    source = doc.get("source") or ""
    return render_template(
        "document.html", doc=doc, pieces=document_pieces(doc["text"], doc["chunk_spans"],
                                                         highlight),
        highlight=highlight, source_url=source if source.startswith(("http://", "https://"))
        else None)
