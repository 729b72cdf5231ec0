"""/api/docs: Swagger UI from the swagger-ui-bundle package's files (no CDN), under its own CSP
while every other page keeps forbidding scripts, over the OpenAPI document converted to 3.0.
(Rendering and "Try it out" in a real browser are in test_browser.py.)"""

from __future__ import annotations

import json
from typing import Any

from bs4 import BeautifulSoup
from swagger_ui_bundle import swagger_ui_path

from qa import openapi
from qa.service import QAService
from qa.web import SECURITY_HEADERS, create_app
from qa.web.docs import CSP


def _walk(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_docs_page_loads_only_local_assets_under_its_own_csp(tiny_service: QAService) -> None:
    client = create_app(tiny_service.settings, tiny_service).test_client()
    response = client.get("/api/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert csp == CSP
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert "'unsafe-eval'" not in csp and "frame-ancestors 'none'" in csp
    page = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    sources = [s["src"] for s in page.find_all("script")]
    assert sources == ["/api/docs/assets/swagger-ui-bundle.js",
                       "/api/docs/assets/swagger-ui-standalone-preset.js",
                       "/static/api-docs.js"]
    assert all(not s.string for s in page.find_all("script"))  # no inline script
    for src in sources:
        asset = client.get(src)
        assert asset.status_code == 200, src
        asset.close()
    bundle = client.get("/api/docs/assets/swagger-ui-bundle.js")
    assert bundle.get_data() == (swagger_ui_path / "swagger-ui-bundle.js").read_bytes()
    bundle.close()
    assert "http" not in "".join(sources) + "".join(
        link["href"] for link in page.find_all("link"))
    assert page.find(id="swagger-ui")["data-openapi"] == "/api/docs/openapi-3.0.json"
    assert client.get("/api/docs/assets/index.html").status_code == 404
    assert client.get("/api/docs/assets/..%2fswagger-ui.css").status_code == 404
    # The header of every page links to it; the other pages still allow no script at all.
    home = client.get("/")
    assert BeautifulSoup(home.get_data(as_text=True), "html.parser").find(
        "a", href="/api/docs").get_text() == "API docs"
    assert home.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    assert "script-src 'none'" in home.headers["Content-Security-Policy"]


def test_the_30_document_has_no_31_constructs(tiny_service: QAService) -> None:
    client = create_app(tiny_service.settings, tiny_service).test_client()
    doc = client.get("/api/docs/openapi-3.0.json").get_json()
    assert doc["openapi"] == "3.0.3"
    original = openapi.openapi_document()
    assert set(doc["paths"]) == set(original["paths"])
    assert set(doc["components"]["schemas"]) == set(original["components"]["schemas"])
    for node in _walk(doc):
        assert not isinstance(node.get("type"), list), node
        assert node.get("type") != "null" and "const" not in node and "prefixItems" not in node
    ready = doc["components"]["schemas"]["Ready"]["properties"]
    assert ready["status"] == {"enum": ["ready"]}
    assert ready["reload_error"] == {"type": "string", "nullable": True}
    job = doc["components"]["schemas"]["Job"]["properties"]
    assert job["result"] == {"allOf": [{"$ref": "#/components/schemas/BuildResult"}],
                             "nullable": True}
    assert json.dumps(original).count('"null"') > 0  # the source really is 3.1
