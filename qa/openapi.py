"""The OpenAPI 3.1 description of the JSON API, built as a plain dict.

Owns the request and response schemas. The web layer validates request bodies against the same
schemas it publishes at ``/api/v1/openapi.json``, and the tests validate real responses against
them, so the document cannot drift from the behaviour.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator

MAX_K = 20
API_VERSION = "1.0.0"

_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"]}
_NUMBER_OR_NULL = {"type": ["number", "null"]}


def _obj(properties: dict[str, Any], required: list[str] | None = None,
         closed: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties,
                              "required": sorted(properties) if required is None else required}
    if closed:
        schema["additionalProperties"] = False
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": _obj(
        {"code": {"type": "string"}, "message": {"type": "string"},
         "error_id": {"type": "string", "description": "Server-side failures (5xx) only: the id "
                      "under which the details are logged."},
         "request_id": {"type": "string", "description": "The request's id (also in the "
                        "X-Request-ID header and the request log)."}},
        required=["code", "message", "request_id"])}),
    "AnswerRequest": _obj({
        "question": {"type": "string", "description": "The question (1-max_question_chars "
                     "characters after whitespace is collapsed; else 422)."},
        "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_K,
                  "description": "Passages to retrieve (default: the top_k setting)."},
        "doc_ids": {"type": "array", "items": {"type": "string"}, "maxItems": 1000,
                    "description": "Only use these documents (unknown ids: 404)."},
    }, required=["question"]),
    "IndexRequest": _obj({
        "full": {"type": "boolean", "description": "Re-chunk and re-embed everything."},
    }, required=[]),
    "Passage": _obj({
        "id": {"type": "string"}, "doc_id": {"type": "string"}, "title": {"type": "string"},
        "text": {"type": "string"}, "score": {"type": "number"}, "dense": _NUMBER_OR_NULL,
        "lexical": _NUMBER_OR_NULL, "start": {"type": "integer", "minimum": 0},
        "end": {"type": "integer", "minimum": 0}, "section": _NULLABLE_STR,
        "page": _NULLABLE_INT,
    }),
    "AnswerSentence": _obj({
        "text": {"type": "string"}, "citation": {"type": "integer", "minimum": 1},
        "doc_id": {"type": "string"}, "start": {"type": "integer", "minimum": 0},
        "end": {"type": "integer", "minimum": 0}, "score": {"type": "number"},
    }),
    "Answer": _obj({
        "text": {"type": "string"}, "abstained": {"type": "boolean"}, "reason": _NULLABLE_STR,
        "confidence": {"type": "number"},
        "sentences": {"type": "array", "items": _ref("AnswerSentence")},
    }),
    "Citation": _obj({
        "n": {"type": "integer", "minimum": 1}, "passage_id": {"type": "string"},
        "doc_id": {"type": "string"}, "title": {"type": "string"},
    }),
    "Timings": {"type": "object", "description": "Milliseconds per stage; `cached: true` when "
                "the answer came from the cache.",
                "additionalProperties": {"type": ["number", "boolean"]}},
    "AnswerResponse": _obj({
        "question": {"type": "string"}, "answer": _ref("Answer"),
        "citations": {"type": "array", "items": _ref("Citation")},
        "passages": {"type": "array", "items": _ref("Passage")},
        "index_version": {"type": "string"}, "timings_ms": _ref("Timings"),
    }),
    "SearchResponse": _obj({
        "question": {"type": "string"},
        "passages": {"type": "array", "items": _ref("Passage")},
        "index_version": {"type": "string"}, "timings_ms": _ref("Timings"),
    }),
    "DocumentSummary": _obj({
        "doc_id": {"type": "string"}, "path": {"type": "string"}, "title": {"type": "string"},
        "authors": {"type": "array", "items": {"type": "string"}}, "publisher": _NULLABLE_STR,
        "date": _NULLABLE_STR, "source": _NULLABLE_STR, "content_hash": {"type": "string"},
        "chunks": {"type": "integer", "minimum": 0}, "chars": {"type": "integer", "minimum": 0},
    }, closed=False),
    "DocumentList": _obj({
        "documents": {"type": "array", "items": _ref("DocumentSummary")},
        "index_version": {"type": "string"},
    }),
    "ChunkSpan": _obj({
        "id": {"type": "string"}, "start": {"type": "integer", "minimum": 0},
        "end": {"type": "integer", "minimum": 0}, "section": _NULLABLE_STR,
        "page": _NULLABLE_INT,
    }),
    "Document": {
        "allOf": [_ref("DocumentSummary")],
        "type": "object",
        "required": ["text", "chunk_spans", "page_starts", "sections"],
        "properties": {
            "text": {"type": "string", "description": "The normalized text; offsets refer to it."},
            "chunk_spans": {"type": "array", "items": _ref("ChunkSpan")},
            "page_starts": {"type": "array", "items": {"type": "integer"}},
            "sections": {"type": "array", "items": {
                "type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}],
                "minItems": 2, "maxItems": 2}},
        },
    },
    "Health": _obj({"status": {"const": "ok"}}),
    "Ready": _obj({
        "status": {"const": "ready"}, "version": {"type": "string"},
        "documents": {"type": "integer", "minimum": 0}, "chunks": {"type": "integer", "minimum": 0},
        "reload_error": _NULLABLE_STR,
    }),
    "Upload": _obj({
        "doc_path": {"type": "string", "description": "Path relative to the corpus directory."},
        "bytes": {"type": "integer", "minimum": 1}, "replaced": {"type": "boolean"},
    }),
    "BuildResult": _obj({
        "documents": {"type": "integer"}, "chunks": {"type": "integer"},
        "embedded": {"type": "integer"}, "removed": {"type": "integer"},
        "version": {"type": "string"}, "seconds": {"type": "number"},
        "changed": {"type": "boolean"}, "full": {"type": "boolean"},
        "warnings": {"type": "array", "items": {"type": "string"}},
    }),
    "Job": _obj({
        "id": {"type": "string"},
        "state": {"enum": ["queued", "running", "succeeded", "failed"]},
        "full": {"type": "boolean"},
        "progress": {"oneOf": [{"type": "null"}, _obj({
            "stage": {"type": "string"}, "done": {"type": "integer"},
            "total": {"type": "integer"}})]},
        "result": {"oneOf": [{"type": "null"}, _ref("BuildResult")]},
        "error": _NULLABLE_STR,
        "created": {"type": "number", "description": "Unix time."},
        "started": _NUMBER_OR_NULL, "finished": _NUMBER_OR_NULL,
    }),
    "JobResponse": _obj({"job": _ref("Job")}),
    "Deleted": _obj({
        "doc_id": {"type": "string"},
        "removed": {"type": "array", "items": {"type": "string"},
                    "description": "Paths removed from the corpus directory (the document and "
                    "its own sidecar)."},
    }),
    "FeedbackRequest": _obj({
        "rating": {"enum": ["helpful", "not_helpful"]},
        "question": {"type": "string", "minLength": 1, "maxLength": 2000},
        "answer": {"type": "string", "maxLength": 4000,
                   "description": "The answer text that was judged."},
        "comment": {"type": "string", "maxLength": 1000},
        "index_version": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,100}$"},
        "citations": {"type": "array", "items": _ref("Citation"), "maxItems": 10},
    }, required=["rating", "question", "index_version"]),
    "FeedbackResponse": _obj({"feedback": _obj({
        "id": {"type": "integer"}, "rating": {"enum": ["helpful", "not_helpful"]},
        "question": {"type": "string"}, "index_version": {"type": "string"},
        "comment": _NULLABLE_STR})}),
}


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(schema)}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json("Error")}


_COMMON_ERRORS = {
    "429": {**_error("Rate limited; retry after `Retry-After` seconds."),
            "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
    "500": _error("Internal error (no details are returned)."),
}
_ADMIN_ERRORS = {
    "401": {**_error("Missing or wrong bearer token."),
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
    "404": _error("Admin endpoints are disabled (no admin_token is set), or unknown id."),
}
_JSON_BODY_ERRORS = {
    "400": _error("Malformed JSON, wrong types, out-of-range values or unknown fields."),
    "413": _error("Body larger than 64 KB."),
    "415": _error("Content-Type is not application/json."),
}
FEEDBACK_BODY_LIMIT = 8 * 1024
_NO_INDEX = {"503": _error("No index has been built, or the published one is damaged.")}


def _op(summary: str, ok: dict[str, Any], *errors: dict[str, Any], **extra: Any) -> dict[str, Any]:
    responses: dict[str, Any] = dict(ok)
    for group in (*errors, _COMMON_ERRORS):
        responses.update(group)
    return {"summary": summary, "responses": dict(sorted(responses.items())), **extra}


def _ok(status: str, description: str, schema: str, **extra: Any) -> dict[str, Any]:
    return {status: {"description": description, "content": _json(schema), **extra}}


# A question the service accepts: at least one visible character (whitespace, control characters
# and lone surrogates are blanked before the emptiness check, which answers 422).
QUESTION_PATTERN = "[^\\s\\x00-\\x1f\\x7f-\\x9f\\ud800-\\udfff]"


def question_schema(max_chars: int) -> dict[str, Any]:
    """The published form of a question; requests outside it are answered 422, not 400."""
    return {"type": "string", "minLength": 1, "maxLength": max_chars,
            "pattern": QUESTION_PATTERN}


def openapi_document(max_question_chars: int = 1000) -> dict[str, Any]:
    """The OpenAPI document served at ``/api/v1/openapi.json``."""
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    schemas = copy.deepcopy(SCHEMAS)
    schemas["AnswerRequest"]["properties"]["question"].update(question_schema(max_question_chars))
    return {
        "openapi": "3.1.0",
        "info": {"title": "CICA QA API", "version": API_VERSION,
                 "description": "Cited question answering over a document collection. Every "
                 "error is `{\"error\": {\"code\", \"message\"}}`."},
        "servers": [{"url": "/"}],
        "paths": {
            "/api/v1/answer": {"post": _op(
                "Answer a question with cited sentences",
                _ok("200", "The answer, citations and passages.", "AnswerResponse"),
                _JSON_BODY_ERRORS, _NO_INDEX,
                {"404": _error("Unknown document id in doc_ids."),
                 "422": _error("Empty or over-long question.")},
                requestBody={"required": True, "content": _json("AnswerRequest")})},
            "/api/v1/search": {"get": _op(
                "Passages only",
                _ok("200", "The best passages.", "SearchResponse"),
                {"400": _error("Bad k or mode."), "404": _error("Unknown document id."),
                 "422": _error("Empty or over-long question.")}, _NO_INDEX,
                parameters=[
                    {"name": "q", "in": "query", "required": True,
                     "schema": question_schema(max_question_chars)},
                    {"name": "k", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                            "maximum": MAX_K}},
                    {"name": "mode", "in": "query",
                     "schema": {"enum": ["hybrid", "dense", "lexical"], "default": "hybrid"}},
                    {"name": "doc", "in": "query", "explode": True,
                     "schema": {"type": "array", "items": {"type": "string"}}},
                ])},
            "/api/v1/documents": {
                "get": _op("List the indexed documents",
                           _ok("200", "Documents of the served index.", "DocumentList"),
                           _NO_INDEX),
                "post": _op(
                    "Upload a document into the corpus (admin)",
                    _ok("201", "Saved; run POST /api/v1/index to make it answerable.", "Upload"),
                    _ADMIN_ERRORS,
                    {"400": _error("No file, empty file, bad name, bad PDF or non-UTF-8 text."),
                     "409": _error("A file with this name exists; pass replace=true."),
                     "413": _error("Larger than max_upload_bytes."),
                     "415": _error("Unsupported file type.")},
                    security=bearer,
                    parameters=[{"name": "replace", "in": "query",
                                 "schema": {"type": "boolean", "default": False}}],
                    requestBody={"required": True, "content": {"multipart/form-data": {
                        "schema": {"type": "object", "required": ["file"], "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "title": {"type": "string", "description": "Sidecar title."},
                            "authors": {"type": "string", "description": "Sidecar authors, "
                                        "separated by commas, semicolons or new lines."},
                            "date": {"type": "string", "description": "Sidecar date: YYYY, "
                                     "YYYY-MM or YYYY-MM-DD."}}}}}}),
            },
            "/api/v1/documents/{doc_id}": {
                "get": _op(
                    "One document: metadata, normalized text and chunk spans",
                    _ok("200", "The document.", "Document"),
                    {"404": _error("Unknown document.")}, _NO_INDEX,
                    parameters=[{"name": "doc_id", "in": "path", "required": True,
                                 "schema": {"type": "string"}}]),
                "delete": _op(
                    "Remove a document of the served index from the corpus (admin); it stays "
                    "answerable until the next rebuild",
                    _ok("200", "Removed from the corpus directory.", "Deleted"),
                    _ADMIN_ERRORS, _NO_INDEX,
                    security=bearer,
                    parameters=[{"name": "doc_id", "in": "path", "required": True,
                                 "schema": {"type": "string"}}]),
            },
            "/api/v1/feedback": {"post": _op(
                "Say whether an answer helped",
                _ok("201", "Stored.", "FeedbackResponse"),
                {**_JSON_BODY_ERRORS,
                 "413": _error(f"Body larger than {FEEDBACK_BODY_LIMIT // 1024} KB.")},
                requestBody={"required": True, "content": _json("FeedbackRequest")})},
            "/api/v1/index": {"post": _op(
                "Start an incremental rebuild in the background (admin)",
                _ok("202", "The job was started.", "JobResponse",
                    headers={"Location": {"schema": {"type": "string"}}}),
                _ADMIN_ERRORS, _JSON_BODY_ERRORS,
                {"409": _error("A rebuild is already running.")},
                security=bearer,
                requestBody={"required": False, "content": _json("IndexRequest")})},
            "/api/v1/index/jobs/{job_id}": {"get": _op(
                "State of a rebuild job (admin)",
                _ok("200", "The job.", "JobResponse"), _ADMIN_ERRORS,
                security=bearer,
                parameters=[{"name": "job_id", "in": "path", "required": True,
                             "schema": {"type": "string"}}])},
            "/api/v1/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1",
                                      "content": {"application/json": {}}}}}},
            "/metrics": {"get": {
                "summary": "Prometheus metrics of every worker (bearer token when "
                           "metrics_token is set)",
                "security": [{}, {"bearer": []}],
                "responses": {
                    "200": {"description": "Prometheus text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "401": _error("metrics_token is set and the bearer token is missing or "
                                  "wrong.")}}},
            "/healthz": {"get": {
                "summary": "Liveness: the process answers",
                "responses": {"200": {"description": "Alive.", "content": _json("Health")}}}},
            "/readyz": {"get": {
                "summary": "Readiness: an index is loaded",
                "responses": {"200": {"description": "Ready.", "content": _json("Ready")},
                              **_NO_INDEX}}},
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@cache
def validator(name: str) -> Draft202012Validator:
    """A validator for one component schema, with ``#/components/schemas/...`` refs resolvable.
    Built once per schema: validators are immutable and safe to share between threads."""
    schema = {**SCHEMAS[name], "components": {"schemas": SCHEMAS}}
    return Draft202012Validator(schema)


def as_openapi_30(document: dict[str, Any]) -> dict[str, Any]:
    """The same description in OpenAPI 3.0 terms, for the bundled Swagger UI (4.x), which does
    not render 3.1: type lists with "null" become ``nullable``, ``const`` a one-value ``enum``,
    ``prefixItems`` an ``items`` union, a ``oneOf`` with a null branch a nullable schema."""
    converted = _schema_30(copy.deepcopy(document))
    converted["openapi"] = "3.0.3"
    return converted


def _schema_30(node: Any) -> Any:
    if isinstance(node, list):
        return [_schema_30(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _schema_30(value) for key, value in node.items()}
    kind = node.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        if "null" in kind:
            node["nullable"] = True
        if len(kinds) == 1:
            node["type"] = kinds[0]
        else:
            del node["type"]
            node["anyOf"] = [{"type": k} for k in kinds]
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "prefixItems" in node:
        node["items"] = {"anyOf": node.pop("prefixItems")}
    branches = node.get("oneOf")
    if isinstance(branches, list) and {"type": "null"} in branches:
        rest = [b for b in branches if b != {"type": "null"}]
        del node["oneOf"]
        node["nullable"] = True
        if len(rest) == 1 and "$ref" in rest[0]:
            node["allOf"] = rest
        elif len(rest) == 1:
            node.update(rest[0])
        else:
            node["oneOf"] = rest
    return node
