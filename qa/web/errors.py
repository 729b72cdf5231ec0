"""The one translation of errors into responses: JSON ``{"error": {...}}`` for the API, a small
HTML page (or the form page itself, with its input error shown inline) for the pages.

Every error body names the request's id (``request_id``), so a user's report can be matched
with the log line of the request; a server-side failure also carries the ``error_id`` under
which its details are logged.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from qa.errors import QAError, UnauthorizedError, new_error_id, public_message
from qa.web import requestlog

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
    422: "unprocessable", 429: "rate_limited", 500: "internal_error", 503: "unavailable",
}
# Paths under /api/ that are pages for people, not JSON.
HTML_UNDER_API = ("/api/docs",)


def install(app: Flask) -> None:
    app.register_error_handler(QAError, _qa_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _internal_error)


def wants_json() -> bool:
    path = request.path
    if path.startswith(HTML_UNDER_API):
        return False
    return path.startswith("/api/") or path in ("/healthz", "/readyz", "/metrics")


def _error_response(status: int, code: str, message: str,
                    headers: dict[str, str] | None = None, error_id: str | None = None) -> Any:
    request_id = requestlog.request_id()
    if wants_json():
        error = {"code": code, "message": message}
        if error_id is not None:
            error["error_id"] = error_id
        error["request_id"] = request_id
        response = jsonify(error=error)
        response.status_code = status
    else:
        page = g.get("page")
        if page is not None:  # a form page shows its own input errors inline
            template, context = page
            body = render_template(template, **context, error=message)
        else:
            body = render_template("error.html", status=status, message=message,
                                   request_id=request_id)
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
        log.error("%s (error id %s, request %s): %s", e.code, error_id,
                  requestlog.request_id(), e)
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
    log.exception("unhandled error on %s %s (error id %s, request %s)", request.method,
                  request.path, error_id, requestlog.request_id())
    return _error_response(500, "internal_error", public_message(e, error_id),
                           error_id=error_id)
