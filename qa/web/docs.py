"""``/api/docs``: Swagger UI over the OpenAPI document, served from the assets of the
``swagger-ui-bundle`` package (never from a CDN), with "Try it out" sending requests to this
server.

The bundled Swagger UI (4.x) renders OpenAPI 3.0, so the page reads the same document converted
by ``openapi.as_openapi_30``. The page needs scripts, which every other page forbids: its own,
stricter-than-default Content-Security-Policy allows scripts and styles from this origin only
(no inline script, no eval) and images from ``data:`` URIs (the bundle's icons).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, render_template, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from qa import openapi
from qa.errors import NotFoundError
from qa.web.state import current

# The only bundle files the page loads.
ASSETS = ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css",
          "favicon-32x32.png", "favicon-16x16.png")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")

docs = Blueprint("docs", __name__, url_prefix="/api/docs")


@docs.get("")
def page() -> Any:
    g.content_security_policy = CSP
    return render_template("api_docs.html")


@docs.get("/openapi-3.0.json")
def document_30() -> Any:
    document = openapi.openapi_document(current().settings.max_question_chars)
    return jsonify(openapi.as_openapi_30(document))


@docs.get("/assets/<name>")
def asset(name: str) -> Any:
    if name not in ASSETS:
        raise NotFoundError(f"no asset {name!r}")
    g.content_security_policy = CSP
    return send_from_directory(str(swagger_ui_path), name, max_age=3600)
