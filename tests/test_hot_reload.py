"""A running server picks up a rebuilt index by itself, without a restart or a failed request."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from qa.config import Settings
from qa.service import QAService
from qa.web import create_app

pytestmark = pytest.mark.slow

KNOWN = "How many members does the Joint Water Commission have?"
NEW_FACT = "How long is the Aral Sea Bridge?"
NEW_DOC = ("The Aral Sea Bridge\n\nThe Aral Sea Bridge is 42 kilometres long. It was opened in "
           "2033 and joins Muynak with the island of Vozrozhdeniya.\n")


def post_answer(base: str, question: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        base + "/api/v1/answer", data=json.dumps({"question": question}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read() or b"{}")


@pytest.fixture
def served(fresh_service: QAService) -> Iterator[tuple[str, QAService]]:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, create_app(fresh_service.settings, fresh_service),
                         threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="reload-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", fresh_service
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class Poller(threading.Thread):
    """Asks a known question again and again (at most ``limit_s``) and records every status."""

    def __init__(self, base: str, limit_s: float = 60.0) -> None:
        super().__init__(name="poller", daemon=True)
        self.base, self.limit_s = base, limit_s
        self.statuses: list[int] = []
        self.versions: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.limit_s
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                status, body = post_answer(self.base, KNOWN)
            except OSError:
                status, body = -1, {}
            self.statuses.append(status)
            self.versions.add(body.get("index_version", ""))
            self.stop.wait(0.02)


def test_new_document_is_answered_without_restart(served: tuple[str, QAService],
                                                  embedder: Any) -> None:
    base, service = served
    settings: Settings = service.settings
    old_version = service.reader().version
    poller = Poller(base)
    poller.start()
    try:
        (settings.corpus_dir / "aral-sea-bridge.txt").write_text(NEW_DOC)
        result = QAService(settings, embedder=embedder).index()
        assert result.changed and result.version != old_version

        deadline = time.monotonic() + 30
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status, body = post_answer(base, NEW_FACT)
            assert status == 200, body
            if body["index_version"] == result.version:
                break
            time.sleep(0.05)
        assert body["index_version"] == result.version
        assert {c["doc_id"] for c in body["citations"]} == {"aral-sea-bridge"}
        assert "42 kilometres" in body["answer"]["text"]
        # keep polling briefly on the new version so the poller sees both sides of the swap
        seen = len(poller.statuses)
        while len(poller.statuses) < seen + 5 and poller.is_alive():
            time.sleep(0.02)
    finally:
        poller.stop.set()
        poller.join(timeout=60)
    assert not poller.is_alive()
    assert poller.statuses and set(poller.statuses) == {200}
    assert {old_version, result.version} <= poller.versions
