"""The web door: a Flask app serving HTML pages, the JSON API, the admin pages, the API docs
and the metrics over one QAService.

Modules, each owning one thing:

- ``app``: the factory, wiring everything below, and the security headers
- ``state``: what the views of one app share (settings, service, jobs, metrics, feedback)
- ``errors``: the one translation of errors into JSON bodies or small HTML pages
- ``requestlog``: request ids and the one log line per request (plain or JSON)
- ``metrics``: the Prometheus metrics and ``GET /metrics``
- ``parsing``: query arguments and JSON bodies validated against the OpenAPI schemas
- ``presentation``: pure helpers shaping what the templates show
- ``pages``: the question, answer (with feedback), documents and document pages
- ``api``: the JSON API under ``/api/v1``, admin endpoints included
- ``auth``: the admin bearer token, the admin session cookie and CSRF tokens
- ``admin``: the admin pages under ``/admin``
- ``rebuilds``: starting a rebuild job, for the API and the admin pages
- ``docs``: Swagger UI at ``/api/docs`` from the swagger-ui-bundle package

What it must not touch: it never imports faiss, torch or sqlite3, never builds SQL and never
ranks; pages and API render the dicts QAService returns.
"""

from __future__ import annotations

from qa.web.api import MODES
from qa.web.app import SECURITY_HEADERS, create_app
from qa.web.parsing import JSON_BODY_LIMIT
from qa.web.presentation import (
    Piece,
    Segment,
    answer_view,
    describe_age,
    document_pieces,
    parse_highlight,
    split_marked,
)
from qa.web.state import EXAMPLES

__all__ = [
    "EXAMPLES",
    "JSON_BODY_LIMIT",
    "MODES",
    "SECURITY_HEADERS",
    "Piece",
    "Segment",
    "answer_view",
    "create_app",
    "describe_age",
    "document_pieces",
    "parse_highlight",
    "split_marked",
]
