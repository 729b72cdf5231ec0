"""Admin endpoints: token checks, safe uploads into the corpus, background rebuild jobs."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from qa import openapi
from qa.config import Settings
from qa.jobs import JobRegistry, JobRunningError
from qa.service import QAService
from qa.uploads import clean_upload_name
from qa.web import create_app

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ARAL = ("The Aral Sea Bridge\n\nThe Aral Sea Bridge is 42 kilometres long. It was opened in 2033 "
        "and joins Muynak with the island of Vozrozhdeniya.\n")


@pytest.fixture
def admin_app(fresh_service: QAService) -> Flask:
    """Admin enabled over a built, writable index (for rebuilds)."""
    settings = fresh_service.settings.replace(admin_token=TOKEN, max_upload_bytes=4096)
    return create_app(settings, fresh_service)


@pytest.fixture
def corpus(tiny_settings: Settings) -> Path:
    return tiny_settings.corpus_dir


@pytest.fixture
def client(tiny_settings: Settings, embedder: Any) -> FlaskClient:
    """Admin enabled over a writable corpus whose index is not built (uploads need none)."""
    settings = tiny_settings.replace(admin_token=TOKEN, max_upload_bytes=4096)
    return create_app(settings, QAService(settings, embedder=embedder)).test_client()


def assert_json_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.data
    body = response.get_json()
    assert not list(openapi.validator("Error").iter_errors(body))
    assert body["error"]["code"] == code
    return body


def upload(client: FlaskClient, name: str, data: bytes, query: str = "",
           headers: dict[str, str] | None = None) -> Any:
    return client.post(f"/api/v1/documents{query}", headers=AUTH if headers is None else headers,
                       data={"file": (io.BytesIO(data), name)},
                       content_type="multipart/form-data")


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# -- access ------------------------------------------------------------------------------------
def test_admin_endpoints_are_404_without_a_token(tiny_service: QAService) -> None:
    client = create_app(tiny_service.settings, tiny_service).test_client()
    assert tiny_service.settings.admin_token == ""
    assert_json_error(upload(client, "a.txt", b"x"), 404, "not_found")
    assert_json_error(client.post("/api/v1/index", headers=AUTH), 404, "not_found")
    assert_json_error(client.get("/api/v1/index/jobs/" + "0" * 32, headers=AUTH), 404,
                      "not_found")


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN}, {"Authorization": "Bearer "},
])
def test_admin_endpoints_need_the_token(client: FlaskClient, headers: dict[str, str],
                                        corpus: Path) -> None:
    before = tree(corpus)
    for response in (upload(client, "a.txt", b"hello", headers=headers),
                     client.post("/api/v1/index", headers=headers),
                     client.get("/api/v1/index/jobs/" + "0" * 32, headers=headers)):
        assert_json_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert tree(corpus) == before


# -- uploads -----------------------------------------------------------------------------------
def test_upload_writes_the_file_and_refuses_to_clobber(client: FlaskClient,
                                                       corpus: Path) -> None:
    response = upload(client, "aral-sea-bridge.txt", ARAL.encode())
    assert response.status_code == 201
    body = response.get_json()
    assert not list(openapi.validator("Upload").iter_errors(body))
    assert body == {"doc_path": "aral-sea-bridge.txt", "bytes": len(ARAL.encode()),
                    "replaced": False}
    assert (corpus / "aral-sea-bridge.txt").read_text() == ARAL
    assert_json_error(upload(client, "aral-sea-bridge.txt", b"other"), 409, "conflict")
    assert (corpus / "aral-sea-bridge.txt").read_text() == ARAL
    replaced = upload(client, "aral-sea-bridge.txt", b"new text", query="?replace=true")
    assert replaced.status_code == 201 and replaced.get_json()["replaced"] is True
    assert (corpus / "aral-sea-bridge.txt").read_bytes() == b"new text"
    assert not [p for p in corpus.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("name", ["../../etc/passwd.txt", "../../etc/passwd", "/etc/passwd",
                                  "/tmp/evil.txt", "a\x00b.txt", "..", "....txt",
                                  "C:\\evil.txt", "sub/../../x.txt", ".hidden.txt"])
def test_upload_path_tricks_never_escape_the_corpus(client: FlaskClient, tmp_path: Path,
                                                    name: str) -> None:
    before = tree(tmp_path)
    response = upload(client, name, b"owned")
    assert response.status_code in (201, 400, 415), response.data
    created = tree(tmp_path) - before
    assert all(p.startswith("corpus/") and "/" not in p[len("corpus/"):] for p in created)
    assert not any(p.endswith("passwd") for p in created)
    if response.status_code == 201:
        assert response.get_json()["doc_path"] in {p[len("corpus/"):] for p in created}
    else:
        assert created == set()


def test_upload_cuts_long_names_keeping_the_suffix(client: FlaskClient,
                                                   corpus: Path) -> None:
    response = upload(client, "n" * 296 + ".txt", b"long name")
    assert response.status_code == 201
    name = response.get_json()["doc_path"]
    assert len(name) == 100 and name.endswith(".txt")
    assert (corpus / name).read_bytes() == b"long name"


@pytest.mark.parametrize("name, data, status, code", [
    ("evil.exe", b"MZ", 415, "unsupported_media_type"),
    ("noext", b"text", 415, "unsupported_media_type"),
    ("notes.json", b"{}", 415, "unsupported_media_type"),
    ("empty.txt", b"", 400, "bad_request"),
    ("fake.pdf", b"hello, not a pdf", 400, "bad_request"),
    ("latin1.txt", "caf\u00e9".encode("latin-1"), 400, "bad_request"),
    ("README.md", b"# hi", 400, "bad_request"),
    ("big.txt", b"x" * 5000, 413, "too_large"),
])
def test_upload_rejects_bad_files(client: FlaskClient, corpus: Path, name: str,
                                  data: bytes, status: int, code: str) -> None:
    before = tree(corpus)
    assert_json_error(upload(client, name, data), status, code)
    assert tree(corpus) == before


def test_upload_rejects_bodies_beyond_the_limit_early(client: FlaskClient) -> None:
    assert_json_error(upload(client, "huge.txt", b"x" * 200_000), 413, "too_large")


def test_upload_accepts_a_pdf_header(client: FlaskClient, corpus: Path) -> None:
    response = upload(client, "tiny.pdf", b"%PDF-1.4\n%%EOF\n")
    assert response.status_code == 201
    assert (corpus / "tiny.pdf").read_bytes().startswith(b"%PDF-")


def test_upload_needs_multipart_with_a_file(client: FlaskClient) -> None:
    assert_json_error(client.post("/api/v1/documents", headers=AUTH, json={"file": "x"}), 415,
                      "unsupported_media_type")
    assert_json_error(client.post("/api/v1/documents", headers=AUTH, data={"other": "x"},
                                  content_type="multipart/form-data"), 400, "bad_request")


def test_clean_upload_name() -> None:
    assert clean_upload_name("My Report (2031).PDF") == "My_Report_2031.PDF"
    assert clean_upload_name("notes.md") == "notes.md"
    assert clean_upload_name("page.htm") == "page.htm"


# -- rebuild jobs ------------------------------------------------------------------------------
def wait_for_job(client: FlaskClient, location: str, deadline_s: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        response = client.get(location, headers=AUTH)
        assert response.status_code == 200
        job = response.get_json()["job"]
        assert not list(openapi.validator("Job").iter_errors(job))
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {location} did not finish in {deadline_s} s")


def test_upload_then_rebuild_makes_the_document_answerable(admin_app: Flask) -> None:
    client = admin_app.test_client()
    assert upload(client, "aral-sea-bridge.txt", ARAL.encode()).status_code == 201
    response = client.post("/api/v1/index", headers=AUTH)
    assert response.status_code == 202
    body = response.get_json()
    assert not list(openapi.validator("JobResponse").iter_errors(body))
    assert body["job"]["state"] in ("queued", "running", "succeeded")
    location = response.headers["Location"]
    assert location == f"/api/v1/index/jobs/{body['job']['id']}"
    job = wait_for_job(client, location)
    assert job["state"] == "succeeded", job["error"]
    assert job["result"]["documents"] == 4
    assert job["result"]["changed"] is True
    assert job["started"] <= job["finished"]
    assert job["progress"] is not None
    answer = client.post("/api/v1/answer", json={"question": "How long is the Aral Sea Bridge?"})
    assert answer.status_code == 200
    data = answer.get_json()
    assert data["index_version"] == job["result"]["version"]
    assert data["passages"][0]["doc_id"] == "aral-sea-bridge"
    assert not data["answer"]["abstained"]
    assert {c["doc_id"] for c in data["citations"]} == {"aral-sea-bridge"}
    assert "42 kilometres" in data["answer"]["text"]


def test_index_body_is_validated(admin_app: Flask) -> None:
    client = admin_app.test_client()
    for payload in ({"full": "yes"}, {"fast": True}, [True]):
        assert_json_error(client.post("/api/v1/index", headers=AUTH, json=payload), 400,
                          "bad_request")
    assert_json_error(client.post("/api/v1/index", headers=AUTH, data="full",
                                  content_type="text/plain"), 415, "unsupported_media_type")


def test_only_one_rebuild_at_a_time(admin_app: Flask) -> None:
    release = threading.Event()
    jobs: JobRegistry = admin_app.extensions["qa"].jobs
    blocking = jobs.start(lambda progress: {"waited": release.wait(30)})
    try:
        client = admin_app.test_client()
        assert_json_error(client.post("/api/v1/index", headers=AUTH, json={"full": True}), 409,
                          "job_running")
    finally:
        release.set()
    deadline = time.monotonic() + 30
    while jobs.get(blocking.id).state != "succeeded" and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.01)
    assert jobs.get(blocking.id).result == {"waited": True}  # type: ignore[union-attr]


def test_unknown_jobs_are_404(client: FlaskClient) -> None:
    for job_id in ("0" * 32, "nope", "..%2F..%2Fetc"):
        assert_json_error(client.get(f"/api/v1/index/jobs/{job_id}", headers=AUTH), 404,
                          "not_found")


def test_job_registry_records_failures_and_is_shared_through_its_directory(
        tmp_path: Path) -> None:
    jobs = JobRegistry(tmp_path / "jobs")

    def fail(progress: Any) -> dict[str, Any]:
        progress("embed", 1, 2)
        raise RuntimeError("disk full")

    job = jobs.start(fail)
    deadline = time.monotonic() + 30
    while jobs.get(job.id).state in ("queued", "running") and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.01)
    failed = jobs.get(job.id)
    assert failed is not None and failed.state == "failed" and failed.error == "disk full"
    assert failed.progress == {"stage": "embed", "done": 1, "total": 2}
    other_worker = JobRegistry(tmp_path / "jobs")
    assert other_worker.get(job.id) == failed


def test_job_registry_refuses_while_another_worker_runs(tmp_path: Path) -> None:
    release = threading.Event()
    first = JobRegistry(tmp_path / "jobs")
    first.start(lambda progress: {"ok": release.wait(30)})
    try:
        with pytest.raises(JobRunningError):
            JobRegistry(tmp_path / "jobs").start(lambda progress: {})
    finally:
        release.set()


# -- sidecars and deletion over the API ---------------------------------------------------------
def test_upload_with_sidecar_fields(client: FlaskClient, corpus: Path) -> None:
    response = client.post("/api/v1/documents", headers=AUTH, data={
        "file": (io.BytesIO(ARAL.encode()), "aral.txt"), "title": " The  Aral Sea Bridge ",
        "authors": "A. Karimov; B. Lee\nC. Ode", "date": "2033"},
        content_type="multipart/form-data")
    assert response.status_code == 201, response.data
    assert json.loads((corpus / "aral.txt.meta.json").read_text()) == {
        "title": "The Aral Sea Bridge", "authors": ["A. Karimov", "B. Lee", "C. Ode"],
        "date": "2033"}
    bad = client.post("/api/v1/documents", headers=AUTH, data={
        "file": (io.BytesIO(ARAL.encode()), "other.txt"), "date": "yesterday"},
        content_type="multipart/form-data")
    assert_json_error(bad, 400, "bad_request")
    assert not (corpus / "other.txt").exists()


def test_delete_a_document_over_the_api(admin_app: Flask) -> None:
    client = admin_app.test_client()
    settings = admin_app.extensions["qa"].settings
    target = settings.corpus_dir / "lake-baikal-accord.txt"
    assert target.exists() and (settings.corpus_dir / "lake-baikal-accord.meta.json").exists()
    assert_json_error(client.delete("/api/v1/documents/lake-baikal-accord"), 401,
                      "unauthorized")
    assert_json_error(client.delete("/api/v1/documents/nope", headers=AUTH), 404, "not_found")
    response = client.delete("/api/v1/documents/lake-baikal-accord", headers=AUTH)
    assert response.status_code == 200
    body = response.get_json()
    assert not list(openapi.validator("Deleted").iter_errors(body))
    assert body["removed"] == ["lake-baikal-accord.txt", "lake-baikal-accord.meta.json"]
    assert not target.exists()
    assert not (settings.corpus_dir / "lake-baikal-accord.meta.json").exists()
    # Still in the served index until a rebuild; deleting again says the file is gone.
    assert_json_error(client.delete("/api/v1/documents/lake-baikal-accord", headers=AUTH), 404,
                      "not_found")
