"""The app factory: one Flask app over one QAService, with its blueprints (pages, API, admin
pages, API docs), request ids and the request log, metrics, rate limits, security headers and
the one error translation wired in. Nothing is read from globals: tests pass their own settings
and service."""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask, Response, g

from qa import ratelimit
from qa.config import STATIC_DIR, TEMPLATES_DIR, Settings
from qa.errors import QAError
from qa.feedback import FeedbackBook
from qa.jobs import JobRegistry
from qa.service import QAService
from qa.web import auth, errors, metrics, requestlog
from qa.web.admin import admin
from qa.web.api import MULTIPART_OVERHEAD, api, healthz, readyz
from qa.web.docs import docs
from qa.web.metrics import Metrics
from qa.web.pages import pages
from qa.web.state import WebState

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'none'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def create_app(settings: Settings | None = None, service: QAService | None = None,
               metrics_dir: Path | None = None) -> Flask:
    """Build the app. ``metrics_dir``: the directory where the workers of ``qa serve`` keep
    their metrics (see ``qa.metrics_dir``); without it the app counts for itself."""
    if settings is None:
        settings = service.settings if service is not None else Settings.load()
    if service is None:
        service = QAService(settings)
    app = Flask("qa.web", template_folder=str(TEMPLATES_DIR), static_folder=str(STATIC_DIR))
    # The largest body any route accepts; JSON routes lower it per request.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + MULTIPART_OVERHEAD
    app.json.sort_keys = False  # type: ignore[attr-defined]
    state = WebState(settings=settings, service=service,
                     jobs=JobRegistry(settings.index_dir / "jobs"),
                     metrics=Metrics(metrics_dir), feedback=FeedbackBook(settings))
    app.extensions["qa"] = state
    try:
        service.load()
    except QAError as e:  # no or damaged index: the app still starts and /readyz says 503
        log.warning("serving without an index for now: %s", e)
    auth.configure_sessions(app, settings)
    app.register_blueprint(pages)
    app.register_blueprint(api)
    app.register_blueprint(admin)
    app.register_blueprint(docs)
    app.add_url_rule("/healthz", "healthz", healthz)
    app.add_url_rule("/readyz", "readyz", readyz)
    # First, so that a request the rate limiter refuses still gets its id and its log line.
    # (after_request hooks run last-registered first: the headers are set before the request
    # is counted and logged.)
    requestlog.install(app, settings)
    ratelimit.install(app, settings)
    metrics.install(app, state.metrics, settings.metrics_token)
    app.after_request(_security_headers)
    errors.install(app)
    return app


def _security_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    csp = g.get("content_security_policy")
    if csp is not None:  # a page that needs more (or less) than the default says so itself
        response.headers["Content-Security-Policy"] = csp
    return response
