"""The JSON API under ``/api/v1``: answers, search, documents, the OpenAPI document, feedback,
and the admin endpoints (upload, delete, rebuild jobs) behind the bearer token."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for

from qa import openapi
from qa.errors import BadRequestError, NotFoundError, TooLargeError, UnsupportedMediaError
from qa.uploads import (
    clean_upload_name,
    delete_document,
    save_sidecar,
    save_upload,
    sidecar_metadata,
)
from qa.web import auth, parsing, requestlog
from qa.web.rebuilds import start_rebuild
from qa.web.state import current

log = logging.getLogger(__name__)

MODES = ("hybrid", "dense", "lexical")
MULTIPART_OVERHEAD = 64 * 1024  # headers and boundaries around an uploaded file

api = Blueprint("api", __name__, url_prefix="/api/v1")


@api.post("/answer")
def answer() -> Any:
    body = parsing.json_body("AnswerRequest")
    state = current()
    requestlog.note(question=body["question"])
    top_k = int(body.get("top_k", state.settings.top_k))
    response = state.service.ask(body["question"], top_k, body.get("doc_ids") or None)
    state.metrics.observe_answer(response)
    state.metrics.observe_index(state.service, response["index_version"])
    requestlog.note(index_version=response["index_version"],
                    abstained=response["answer"]["abstained"])
    return jsonify(response)


@api.get("/search")
def search() -> Any:
    state = current()
    k = parsing.int_arg("k", state.settings.top_k)
    mode = request.args.get("mode", "hybrid")
    if mode not in MODES:
        raise BadRequestError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    requestlog.note(question=request.args.get("q", ""))
    response = state.service.search(request.args.get("q", ""), k,
                                    request.args.getlist("doc") or None, mode)
    requestlog.note(index_version=response["index_version"])
    return jsonify(response)


@api.get("/documents")
def list_documents() -> Any:
    service = current().service
    version = service.reader().version
    return jsonify(documents=service.documents(), index_version=version)


@api.get("/documents/<doc_id>")
def get_document(doc_id: str) -> Any:
    doc = current().service.document(doc_id)
    doc.pop("raw", None)
    doc.pop("raw_offsets", None)
    return jsonify(doc)


@api.get("/openapi.json")
def openapi_json() -> Any:
    return jsonify(openapi.openapi_document(current().settings.max_question_chars))


@api.post("/feedback")
def feedback() -> Any:
    state = current()
    body = parsing.json_body("FeedbackRequest", limit=openapi.FEEDBACK_BODY_LIMIT)
    stored = state.feedback.record(body)
    state.metrics.feedback.labels(stored["rating"]).inc()
    return jsonify(feedback=stored), 201


# -- admin ---------------------------------------------------------------------------------------
def receive_upload(replace: bool, fields: dict[str, Any]) -> dict[str, Any]:
    """Save the request's multipart ``file`` (and a sidecar from ``fields``) into the corpus:
    the admin API's and the admin page's one path for uploads."""
    upload = request.files.get("file")
    if upload is None:
        raise BadRequestError("multipart field 'file' is required")
    return save_document(upload, replace, fields)


def check_multipart() -> None:
    settings = current().settings
    request.max_content_length = settings.max_upload_bytes + MULTIPART_OVERHEAD
    if (request.content_length or 0) > request.max_content_length:
        raise TooLargeError(f"uploads are limited to {settings.max_upload_bytes} bytes")
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaError("send the document as multipart/form-data field 'file'")


def save_document(upload: Any, replace: bool, fields: dict[str, Any]) -> dict[str, Any]:
    settings = current().settings
    name = clean_upload_name(upload.filename or "")
    meta = sidecar_metadata(fields.get("title"), fields.get("authors"), fields.get("date"))
    size, replaced = save_upload(upload.stream, settings.corpus_dir, name,
                                 settings.max_upload_bytes, replace)
    if meta:
        save_sidecar(settings.corpus_dir, name, meta)
    log.info("uploaded %s (%d bytes)", name, size)
    return {"doc_path": name, "bytes": size, "replaced": replaced}


def remove_document(doc_id: str) -> dict[str, Any]:
    """Remove a document of the served index from the corpus directory."""
    state = current()
    doc = next((d for d in state.service.documents() if d["doc_id"] == doc_id), None)
    if doc is None:
        raise NotFoundError(f"no document with id {doc_id!r} in the served index")
    removed = delete_document(state.settings.corpus_dir, doc["path"])
    log.info("removed %s from the corpus", ", ".join(removed))
    return {"doc_id": doc_id, "removed": removed}


@api.post("/documents")
def upload_document() -> Any:
    auth.require_bearer()
    replace = request.args.get("replace", "false").lower() in ("1", "true", "yes")
    check_multipart()
    saved = receive_upload(replace, request.form.to_dict())
    return jsonify(saved), 201


@api.delete("/documents/<doc_id>")
def delete_document_route(doc_id: str) -> Any:
    auth.require_bearer()
    return jsonify(remove_document(doc_id))


@api.post("/index")
def start_index() -> Any:
    auth.require_bearer()
    full = bool(parsing.json_body("IndexRequest", required=False).get("full", False))
    job = start_rebuild(current(), full)
    location = url_for("api.index_job", job_id=job.id)
    return job_response(job.id), 202, {"Location": location}


@api.get("/index/jobs/<job_id>")
def index_job(job_id: str) -> Any:
    auth.require_bearer()
    return job_response(job_id)


def job_response(job_id: str) -> Response:
    job = current().jobs.get(job_id)
    if job is None:
        raise NotFoundError(f"no rebuild job with id {job_id!r}")
    return jsonify(job=job.to_dict())


def healthz() -> Any:
    return jsonify(status="ok")


def readyz() -> Any:
    status = current().service.status()
    return jsonify(status="ready", version=status["version"], documents=status["documents"],
                   chunks=status["chunks"], reload_error=status["reload_error"])
