"""The web door: a Flask app factory serving HTML pages and the JSON API over one QAService.

Owns HTTP only: parsing and validating requests, status codes, the one translation of errors into
JSON or small HTML pages, templates, security headers, rate limiting and the admin upload and
rebuild endpoints. Pages and API render the same dicts that QAService returns. Never imports
faiss, torch or sqlite3, never builds SQL and never ranks.
"""

from __future__ import annotations

import hmac
import itertools
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    jsonify,
    render_template,
    request,
    url_for,
)
from werkzeug.exceptions import HTTPException

from qa import openapi, ratelimit
from qa.config import STATIC_DIR, TEMPLATES_DIR, Settings
from qa.errors import (
    BadRequestError,
    NotFoundError,
    QAError,
    TooLargeError,
    UnauthorizedError,
    UnsupportedMediaError,
    new_error_id,
    public_message,
)
from qa.jobs import JobRegistry
from qa.service import QAService
from qa.uploads import clean_upload_name, save_upload

log = logging.getLogger(__name__)

JSON_BODY_LIMIT = 64 * 1024
MULTIPART_OVERHEAD = 64 * 1024  # headers and boundaries around an uploaded file
MODES = ("hybrid", "dense", "lexical")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'none'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
EXAMPLES = (  # questions about the bundled CICA corpus, shown as links under the form
    "What does OSCA stand for?",
    "When did the eighth round table of the think tank forum take place?",
    "Which countries do the United States and its allies regard as their main security threats?",
    "When did the SCO sign its convention against extremism?",
)
HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
    422: "unprocessable", 429: "rate_limited", 500: "internal_error", 503: "unavailable",
}


@dataclass
class WebState:
    """What the views need, kept in ``app.extensions["qa"]`` (no module globals)."""

    settings: Settings
    service: QAService
    jobs: JobRegistry
    examples: tuple[str, ...] = EXAMPLES


def _state() -> WebState:
    state: WebState = current_app.extensions["qa"]
    return state


# -- the factory -----------------------------------------------------------------------------
def create_app(settings: Settings | None = None, service: QAService | None = None) -> Flask:
    """Build the app. Tests pass their own settings and service; nothing is read from globals."""
    if settings is None:
        settings = service.settings if service is not None else Settings.load()
    if service is None:
        service = QAService(settings)
    app = Flask(__name__, template_folder=str(TEMPLATES_DIR), static_folder=str(STATIC_DIR))
    # The largest body any route accepts; JSON routes lower it per request.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + MULTIPART_OVERHEAD
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["qa"] = WebState(
        settings=settings, service=service, jobs=JobRegistry(settings.index_dir / "jobs"))
    try:
        service.load()
    except QAError as e:  # no or damaged index: the app still starts and /readyz says 503
        log.warning("serving without an index for now: %s", e)
    app.register_blueprint(pages)
    app.register_blueprint(api)
    app.add_url_rule("/healthz", "healthz", healthz)
    app.add_url_rule("/readyz", "readyz", readyz)
    ratelimit.install(app, settings)
    app.after_request(_security_headers)
    app.register_error_handler(QAError, _qa_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _internal_error)
    return app


def _security_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


# -- the one translation of errors -------------------------------------------------------------
def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.path in ("/healthz", "/readyz")


def _error_response(status: int, code: str, message: str,
                    headers: dict[str, str] | None = None, error_id: str | None = None) -> Any:
    if _wants_json():
        error = {"code": code, "message": message}
        if error_id is not None:
            error["error_id"] = error_id
        response = jsonify(error=error)
        response.status_code = status
    else:
        page = g.get("page")
        if page is not None:  # a form page shows its own input errors inline
            template, context = page
            body = render_template(template, **context, error=message)
        else:
            body = render_template("error.html", status=status, message=message)
        response = Response(body, status=status, mimetype="text/html")
    response.headers.update(headers or {})
    return response


def _qa_error(e: QAError) -> Any:
    headers = {}
    if isinstance(e, UnauthorizedError):
        headers["WWW-Authenticate"] = 'Bearer realm="qa-admin"'
    error_id = None
    if e.http_status >= 500:  # the details (paths included) only in the log, under an id
        error_id = new_error_id()
        log.error("%s (error id %s): %s", e.code, error_id, e)
    return _error_response(e.http_status, e.code, public_message(e, error_id or ""), headers,
                           error_id)


def _http_error(e: HTTPException) -> Any:
    if e.code is None or e.code < 400:  # routing redirects pass through
        return e
    headers = {k: v for k, v in e.get_headers() if k.lower() != "content-type"}
    message = e.description or e.name
    if e.code == 429:  # Flask-Limiter's refusal; it adds Retry-After to the response
        message = f"too many requests (at most {message} per client): retry later"
    return _error_response(e.code, HTTP_CODES.get(e.code, "http_error"), message, headers)


def _internal_error(e: Exception) -> Any:
    error_id = new_error_id()
    log.exception("unhandled error on %s %s (error id %s)", request.method, request.path,
                  error_id)
    return _error_response(500, "internal_error", public_message(e, error_id),
                           error_id=error_id)


# -- pure helpers for the templates ----------------------------------------------------------
class Segment(NamedTuple):
    text: str
    marked: bool = False
    mark_id: str | None = None


class Piece(NamedTuple):
    anchors: list[str]
    segments: list[Segment]


def split_marked(text: str, offset: int, spans: Iterable[tuple[int, int]]) -> list[Segment]:
    """Split ``text`` (starting at document offset ``offset``) into runs, marking the ``spans``
    (document offsets; clipped to the text, overlaps merged)."""
    n = len(text)
    ranges = sorted((max(0, a - offset), min(n, b - offset)) for a, b in spans)
    merged: list[list[int]] = []
    for a, b in ranges:
        if a >= b:
            continue
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    out, pos = [], 0
    for a, b in merged:
        if a > pos:
            out.append(Segment(text[pos:a]))
        out.append(Segment(text[a:b], marked=True))
        pos = b
    if pos < n:
        out.append(Segment(text[pos:]))
    return out


def document_pieces(text: str, chunk_spans: Iterable[dict[str, Any]],
                    highlight: tuple[int, int] | None) -> list[Piece]:
    """Cut the document text at chunk starts (chunks overlap, so each is anchored where it
    begins) and mark the highlight range; the first marked run gets ``id="highlight"``."""
    starts: dict[int, list[str]] = {}
    for span in chunk_spans:
        if 0 <= span["start"] < len(text):
            starts.setdefault(span["start"], []).append(span["id"])
    cuts = sorted({0, *starts, len(text)})
    pieces, first_mark = [], True
    for a, b in itertools.pairwise(cuts):
        segments = []
        for seg in split_marked(text[a:b], a, [highlight] if highlight else []):
            if seg.marked and first_mark:
                seg, first_mark = seg._replace(mark_id="highlight"), False
            segments.append(seg)
        pieces.append(Piece(starts.get(a, []), segments))
    return pieces


def parse_highlight(value: str | None, length: int) -> tuple[int, int] | None:
    """``"start-end"`` as a valid range of a text of ``length`` characters, else None."""
    match = re.fullmatch(r"(\d{1,9})-(\d{1,9})", value or "", flags=re.ASCII)
    if match is None:
        return None
    start, end = int(match[1]), int(match[2])
    return (start, end) if 0 <= start < end <= length else None


def describe_age(created: str | None, now: datetime | None = None) -> str:
    """``"2031-05-01T10:00:00Z"`` -> ``"3 hours ago"`` (empty when unknown)."""
    if not created:
        return ""
    try:
        then = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return ""
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def answer_view(response: dict[str, Any], documents: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the answer page shows, built from the ``ask`` response: answer sentences with the
    number of the card they cite, and one card per passage with its cited sentences marked."""
    passages = response["passages"]
    card_of = {p["id"]: n for n, p in enumerate(passages, 1)}
    citations = {c["n"]: c for c in response["citations"]}
    sentences = response["answer"]["sentences"]
    cards = []
    for n, p in enumerate(passages, 1):
        cited_as = sorted(c["n"] for c in citations.values() if c["passage_id"] == p["id"])
        spans = [(s["start"], s["end"]) for s in sentences
                 if s["citation"] in cited_as and s["doc_id"] == p["doc_id"]]
        start, end = spans[0] if spans else (p["start"], p["end"])
        cards.append({
            **p, "n": n, "cited_as": cited_as,
            "segments": split_marked(p["text"], p["start"], spans),
            "document": documents.get(p["doc_id"], {}),
            "source_url": url_for("pages.document", doc_id=p["doc_id"],
                                  highlight=f"{start}-{end}", _anchor=f"chunk-{p['id']}"),
        })
    parts = [{**s, "card": card_of.get(citations[s["citation"]]["passage_id"])
              if s["citation"] in citations else None} for s in sentences]
    return {"sentences": parts, "cards": cards}


# -- HTML pages --------------------------------------------------------------------------------
pages = Blueprint("pages", __name__)


@pages.get("/")
def ask() -> Any:
    state = _state()
    documents = state.service.documents()
    k = _int_arg("k", state.settings.top_k, strict=False)
    selected = request.args.getlist("doc")
    q = request.args.get("q")
    context: dict[str, Any] = {"q": q, "k": k, "max_k": openapi.MAX_K, "selected": selected,
                               "documents": documents, "examples": state.examples,
                               "max_chars": state.settings.max_question_chars}
    g.page = ("index.html", context)
    if q is None:
        return render_template("index.html", **context)
    response = state.service.ask(q, k, selected or None)
    view = answer_view(response, {d["doc_id"]: d for d in documents})
    return render_template("index.html", **context, response=response, view=view)


@pages.get("/documents")
def documents() -> Any:
    service = _state().service
    docs = service.documents()
    status = service.status()
    return render_template("documents.html", documents=docs, status=status,
                           age=describe_age(status.get("created")))


@pages.get("/documents/<doc_id>")
def document(doc_id: str) -> Any:
    doc = _state().service.document(doc_id)
    highlight = parse_highlight(request.args.get("highlight"), len(doc["text"]))
    source = doc.get("source") or ""
    return render_template(
        "document.html", doc=doc, pieces=document_pieces(doc["text"], doc["chunk_spans"],
                                                         highlight),
        highlight=highlight, source_url=source if source.startswith(("http://", "https://"))
        else None)


# -- JSON API ----------------------------------------------------------------------------------
api = Blueprint("api", __name__, url_prefix="/api/v1")


@api.post("/answer")
def answer() -> Any:
    body = _json_body("AnswerRequest")
    state = _state()
    top_k = int(body.get("top_k", state.settings.top_k))
    return jsonify(state.service.ask(body["question"], top_k, body.get("doc_ids") or None))


@api.get("/search")
def search() -> Any:
    state = _state()
    k = _int_arg("k", state.settings.top_k)
    mode = request.args.get("mode", "hybrid")
    if mode not in MODES:
        raise BadRequestError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    return jsonify(state.service.search(request.args.get("q", ""), k,
                                        request.args.getlist("doc") or None, mode))


@api.get("/documents")
def list_documents() -> Any:
    service = _state().service
    version = service.reader().version
    return jsonify(documents=service.documents(), index_version=version)


@api.get("/documents/<doc_id>")
def get_document(doc_id: str) -> Any:
    doc = _state().service.document(doc_id)
    doc.pop("raw", None)
    doc.pop("raw_offsets", None)
    return jsonify(doc)


@api.get("/openapi.json")
def openapi_json() -> Any:
    return jsonify(openapi.openapi_document(_state().settings.max_question_chars))


@api.post("/documents")
def upload_document() -> Any:
    settings = _require_admin()
    replace = request.args.get("replace", "false").lower() in ("1", "true", "yes")
    request.max_content_length = settings.max_upload_bytes + MULTIPART_OVERHEAD
    if (request.content_length or 0) > request.max_content_length:
        raise TooLargeError(f"uploads are limited to {settings.max_upload_bytes} bytes")
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaError("send the document as multipart/form-data field 'file'")
    upload = request.files.get("file")
    if upload is None:
        raise BadRequestError("multipart field 'file' is required")
    name = clean_upload_name(upload.filename or "")
    size, replaced = save_upload(upload.stream, settings.corpus_dir, name,
                                 settings.max_upload_bytes, replace)
    log.info("uploaded %s (%d bytes)", name, size)
    return jsonify(doc_path=name, bytes=size, replaced=replaced), 201


@api.post("/index")
def start_index() -> Any:
    _require_admin()
    full = bool(_json_body("IndexRequest", required=False).get("full", False))
    state = _state()
    service = state.service

    def rebuild(progress: Any) -> dict[str, Any]:
        return service.index(full=full, progress=progress).to_dict()

    job = state.jobs.start(rebuild, full=full)
    location = url_for("api.index_job", job_id=job.id)
    return _job_response(job.id), 202, {"Location": location}


@api.get("/index/jobs/<job_id>")
def index_job(job_id: str) -> Any:
    _require_admin()
    return _job_response(job_id)


def _job_response(job_id: str) -> Response:
    job = _state().jobs.get(job_id)
    if job is None:
        raise NotFoundError(f"no rebuild job with id {job_id!r}")
    return jsonify(job=job.to_dict())


def healthz() -> Any:
    return jsonify(status="ok")


def readyz() -> Any:
    status = _state().service.status()
    return jsonify(status="ready", version=status["version"], documents=status["documents"],
                   chunks=status["chunks"], reload_error=status["reload_error"])


# -- request parsing -----------------------------------------------------------------------------
def _int_arg(name: str, default: int, strict: bool = True) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    value = int(raw) if re.fullmatch(r"\d{1,3}", raw, flags=re.ASCII) else 0
    if 1 <= value <= openapi.MAX_K:
        return value
    if strict:
        raise BadRequestError(f"{name} must be an integer from 1 to {openapi.MAX_K}; got {raw!r}")
    return default


def _json_body(schema: str, required: bool = True) -> dict[str, Any]:
    """The request's JSON object, validated against an OpenAPI component schema."""
    if (request.content_length or 0) > JSON_BODY_LIMIT:
        raise TooLargeError(f"JSON bodies are limited to {JSON_BODY_LIMIT} bytes")
    request.max_content_length = JSON_BODY_LIMIT  # also bounds bodies sent without a length
    raw = request.get_data(cache=False)
    if not raw and not required:
        return {}
    if not request.is_json:
        raise UnsupportedMediaError(
            f"expected Content-Type: application/json, got {request.mimetype or 'none'!r}")
    try:
        body = json.loads(raw)
    except ValueError as e:  # includes UnicodeDecodeError
        raise BadRequestError(f"request body is not valid JSON: {e}") from e
    except RecursionError as e:
        raise BadRequestError("request body is nested too deeply") from e
    errors = sorted(openapi.validator(schema).iter_errors(body), key=lambda err: list(err.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "body"
        raise BadRequestError(f"{where}: {errors[0].message}")
    result: dict[str, Any] = body
    return result


def _require_admin() -> Settings:
    settings = _state().settings
    if not settings.admin_token:
        raise NotFoundError("admin endpoints are disabled (set QA_ADMIN_TOKEN to enable them)")
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), settings.admin_token.encode()):
        raise UnauthorizedError("a valid 'Authorization: Bearer <token>' header is required")
    return settings
