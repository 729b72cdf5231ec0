"""No internal path reaches a client: 5xx responses carry a generic message and an error id that
is also in the log; 4xx messages and public pages show no filesystem path."""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from qa import openapi, store
from qa.config import Settings
from qa.embedding import Embedder
from qa.errors import IndexCorruptError, IndexLockedError
from qa.service import QAService
from qa.web import create_app

JWC = "How many members does the Joint Water Commission have?"


def post_answer(client: Any, body: Any) -> Any:
    return client.post("/api/v1/answer", json=body)


def assert_json_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.data
    body = response.get_json()
    assert not list(openapi.validator("Error").iter_errors(body))
    assert body["error"]["code"] == code and body["error"]["message"]
    return dict(body)


def _error_ids(caplog: pytest.LogCaptureFixture, error_id: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if error_id in r.getMessage()]


def test_5xx_errors_are_generic_with_an_error_id_that_is_logged(
        tiny_service: QAService, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    secret = tiny_service.settings.index_dir / "builds" / "x" / "vectors.faiss"

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise IndexCorruptError(f"{secret} is damaged (checksum mismatch): run `qa index --full`")

    client = create_app(tiny_service.settings, tiny_service).test_client()
    monkeypatch.setattr(tiny_service, "ask", broken)
    with caplog.at_level(logging.ERROR):
        body = assert_json_error(post_answer(client, {"question": JWC}), 503, "index_corrupt")
        page = client.get("/", query_string={"q": JWC})
    message = body["error"]["message"]
    assert str(secret) not in message and "/" not in message.replace("qa index", "")
    error_id = body["error"]["error_id"]
    assert re.fullmatch(r"[0-9a-f]{12}", error_id) and error_id in message
    logged = _error_ids(caplog, error_id)
    assert logged and str(secret) in logged[0]
    assert page.status_code == 503
    html = page.get_data(as_text=True)
    assert str(secret) not in html and str(tiny_service.settings.index_dir) not in html


def test_4xx_messages_show_no_filesystem_path(tiny_service: QAService,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    root = tiny_service.settings.index_dir

    def locked(*args: Any, **kwargs: Any) -> Any:
        raise IndexLockedError(f"another `qa index` is running on {root} (lock {root}/.lock); "
                               "wait for it to finish")

    client = create_app(tiny_service.settings, tiny_service).test_client()
    monkeypatch.setattr(tiny_service, "ask", locked)
    body = assert_json_error(post_answer(client, {"question": JWC}), 409, "index_locked")
    assert str(root) not in body["error"]["message"]
    assert "wait for it to finish" in body["error"]["message"]


def _damage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_failed_reload_shows_no_path_on_readyz_or_the_documents_page(
        tiny_settings: Settings, embedder: Embedder, caplog: pytest.LogCaptureFixture) -> None:
    service = QAService(tiny_settings.replace(reload_interval=0.05), embedder=embedder)
    service.index()
    old = service.reader().version
    layout = store.Layout(tiny_settings.index_dir)
    bad = "29990101T000000000000-bad000"
    shutil.copytree(layout.build_dir(old), layout.build_dir(bad))
    _damage(layout.build_dir(bad) / store.FAISS_FILE)
    store.publish(layout, bad)
    time.sleep(0.1)
    client = create_app(service.settings, service).test_client()
    with caplog.at_level(logging.ERROR):
        ready = client.get("/readyz").get_json()
    assert ready["version"] == old
    reload_error = ready["reload_error"]
    assert reload_error and bad in reload_error
    assert str(tiny_settings.index_dir) not in reload_error and "/" not in reload_error
    error_id = re.search(r"error id ([0-9a-f]{12})", reload_error)
    assert error_id is not None
    logged = _error_ids(caplog, error_id[1])
    assert logged and str(layout.build_dir(bad)) in logged[0]
    page = client.get("/documents").get_data(as_text=True)
    assert "could not be loaded" in page and str(tiny_settings.index_dir) not in page


def test_a_failed_rebuild_job_reports_no_path(tmp_path: Path) -> None:
    from qa.errors import IndexWriteError
    from qa.jobs import JobRegistry

    jobs = JobRegistry(tmp_path / "jobs")

    def fail(progress: Any) -> dict[str, Any]:
        raise IndexWriteError(f"index directory {tmp_path}/index is not writable: disk full")

    job = jobs.start(fail)
    deadline = time.monotonic() + 30
    while (found := jobs.get(job.id)) is not None and found.state != "failed":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert found is not None and found.error is not None
    assert str(tmp_path) not in found.error and "disk full" in found.error
