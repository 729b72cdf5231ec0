"""The admin pages with Flask's test client: 404 without a token, sign-in with the token into an
HttpOnly SameSite=Strict session cookie (Secure over HTTPS), CSRF tokens on every form, uploads
with their sidecar, deletion, a rebuild followed on its job page, the versions kept, and
sign-out. (The whole flow in a real browser is in test_browser.py.)"""

from __future__ import annotations

import io
import json
import re
import time
from typing import Any

import pytest
from bs4 import BeautifulSoup
from flask.testing import FlaskClient

from qa.service import QAService
from qa.web import create_app

TOKEN = "adm1n-t0ken"
ARAL = b"The Aral Sea Bridge\n\nThe Aral Sea Bridge is 42 kilometres long. It opened in 2033.\n"


@pytest.fixture
def client(fresh_service: QAService) -> FlaskClient:
    settings = fresh_service.settings.replace(admin_token=TOKEN)
    return create_app(settings, fresh_service).test_client()


def page(response: Any) -> BeautifulSoup:
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


def csrf_of(response: Any) -> str:
    field = page(response).find("input", attrs={"name": "csrf_token"})
    assert field is not None
    return str(field["value"])


def sign_in(client: FlaskClient) -> str:
    token = csrf_of(client.get("/admin"))
    response = client.post("/admin/login", data={"csrf_token": token, "token": TOKEN})
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin")
    home = client.get("/admin")
    assert home.status_code == 200 and page(home).find(id="sign-out")
    return csrf_of(home)


def test_admin_pages_are_404_without_a_token(tiny_service: QAService) -> None:
    client = create_app(tiny_service.settings, tiny_service).test_client()
    for path in ("/admin", "/admin/jobs/" + "0" * 32):
        assert client.get(path).status_code == 404
    assert client.post("/admin/login", data={"token": "x"}).status_code == 404
    assert "Set-Cookie" not in client.get("/admin").headers


def test_sign_in_sets_a_strict_http_only_cookie_and_needs_csrf(client: FlaskClient) -> None:
    login = client.get("/admin")
    assert login.status_code == 200
    assert page(login).find("input", attrs={"name": "token", "type": "password"})
    no_csrf = client.post("/admin/login", data={"token": TOKEN})
    assert no_csrf.status_code == 400
    assert "did not come from this site" in no_csrf.get_data(as_text=True)
    wrong = client.post("/admin/login", data={"csrf_token": csrf_of(login), "token": "nope"})
    assert wrong.status_code == 401
    assert "not the admin token" in wrong.get_data(as_text=True)
    response = client.post("/admin/login", data={"csrf_token": csrf_of(login), "token": TOKEN})
    assert response.status_code == 303
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie
    assert TOKEN not in cookie
    home = client.get("/admin")
    forms = page(home).find_all("form", method="post")
    assert len(forms) >= 4  # sign out, rebuild, upload, one delete per document
    for form in forms:
        assert form.find("input", attrs={"name": "csrf_token"}) is not None, form
    # The CSRF token changed at sign-in: the one shown before no longer works.
    stale = client.post("/admin/logout", data={"csrf_token": csrf_of(login)})
    assert stale.status_code == 400


def _sign_in_cookie(client: FlaskClient, **environ: str) -> str:
    login = client.get("/admin", environ_overrides=environ)
    response = client.post("/admin/login", data={"csrf_token": csrf_of(login), "token": TOKEN},
                           environ_overrides=environ)
    assert response.status_code == 303
    return str(response.headers["Set-Cookie"])


def test_the_cookie_is_secure_when_the_client_used_https(fresh_service: QAService) -> None:
    settings = fresh_service.settings.replace(admin_token=TOKEN)
    app = create_app(settings, fresh_service)
    assert "Secure" not in _sign_in_cookie(app.test_client())  # plain HTTP, on 127.0.0.1
    assert "Secure" in _sign_in_cookie(app.test_client(), **{"wsgi.url_scheme": "https"})
    # A client cannot claim HTTPS by sending the proxy's header itself...
    claimed = {"HTTP_X_FORWARDED_PROTO": "https", "REMOTE_ADDR": "192.0.2.7"}
    assert "Secure" not in _sign_in_cookie(app.test_client(), **claimed)
    # ...but a trusted proxy that terminated TLS can.
    proxied = create_app(settings.replace(trusted_proxies="127.0.0.1"), fresh_service)
    assert "Secure" in _sign_in_cookie(proxied.test_client(), HTTP_X_FORWARDED_PROTO="https")
    assert "Secure" not in _sign_in_cookie(proxied.test_client())


def test_forms_without_the_session_csrf_token_change_nothing(client: FlaskClient,
                                                             fresh_service: QAService) -> None:
    sign_in(client)
    corpus = fresh_service.settings.corpus_dir
    before = sorted(p.name for p in corpus.iterdir())
    upload = client.post("/admin/documents", data={"csrf_token": "forged", "file": (
        io.BytesIO(ARAL), "aral.txt")}, content_type="multipart/form-data")
    assert upload.status_code == 400
    assert client.post("/admin/documents/lake-baikal-accord/delete",
                       data={"csrf_token": "forged"}).status_code == 400
    assert client.post("/admin/rebuild", data={}).status_code == 400
    assert sorted(p.name for p in corpus.iterdir()) == before


def test_signed_out_forms_lead_back_to_sign_in(client: FlaskClient,
                                               fresh_service: QAService) -> None:
    corpus = fresh_service.settings.corpus_dir
    before = sorted(p.name for p in corpus.iterdir())
    token = csrf_of(client.get("/admin"))  # a valid CSRF token, but nobody signed in
    response = client.post("/admin/documents/lake-baikal-accord/delete",
                           data={"csrf_token": token})
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin")
    assert sorted(p.name for p in corpus.iterdir()) == before


def test_upload_with_sidecar_delete_rebuild_and_versions(client: FlaskClient,
                                                         fresh_service: QAService) -> None:
    csrf = sign_in(client)
    corpus = fresh_service.settings.corpus_dir
    response = client.post("/admin/documents", data={
        "csrf_token": csrf,
        "file": [(io.BytesIO(ARAL), "aral.txt"), (io.BytesIO(b""), "")],
        "title": ["The Aral Sea Bridge", ""], "authors": ["A. Karimov, B. Lee", ""],
        "date": ["2033-05", ""]}, content_type="multipart/form-data")
    assert response.status_code == 303
    assert (corpus / "aral.txt").read_bytes() == ARAL
    assert json.loads((corpus / "aral.txt.meta.json").read_text()) == {
        "title": "The Aral Sea Bridge", "authors": ["A. Karimov", "B. Lee"], "date": "2033-05"}
    home = client.get("/admin")
    assert "Uploaded aral.txt" in home.get_data(as_text=True)
    bad = client.post("/admin/documents", data={
        "csrf_token": csrf, "file": (io.BytesIO(ARAL), "other.txt"), "title": "x",
        "authors": "", "date": "May 2033"}, content_type="multipart/form-data")
    assert bad.status_code == 303
    assert "date must look like" in client.get("/admin").get_data(as_text=True)
    assert not (corpus / "other.txt").exists()

    version_before = fresh_service.status()["version"]
    started = client.post("/admin/rebuild", data={"csrf_token": csrf})
    assert started.status_code == 303
    job_url = started.headers["Location"]
    assert re.search(r"/admin/jobs/[0-9a-f]{32}$", job_url)
    deadline = time.monotonic() + 300
    job_page = client.get(job_url)
    while page(job_page).find(id="job")["data-done"] != "true" and time.monotonic() < deadline:
        assert page(job_page).find("meta", attrs={"http-equiv": "refresh"}) is not None
        time.sleep(0.3)
        job_page = client.get(job_url)
    job = page(job_page)
    assert job.find(id="job")["data-state"] == "succeeded"
    assert job.find("meta", attrs={"http-equiv": "refresh"}) is None  # done: it stops reloading
    served = fresh_service.status()["version"]
    assert served != version_before and served in job.find(id="job-result").get_text()
    assert job.find(id="job-stage") is not None
    assert re.fullmatch(r"\d+ / \d+", job.find(id="job-progress").get_text())

    home = page(client.get("/admin"))
    rows = home.select("table.versions tbody tr")
    assert [r.find("code").get_text() for r in rows][:2] == [served, version_before]
    assert "served" in rows[0].get_text() and "served" not in rows[1].get_text()
    titles = [a.get_text() for a in home.select("table.documents td a")]
    assert "The Aral Sea Bridge" in titles
    aral_id = next(d["doc_id"] for d in fresh_service.documents() if d["path"] == "aral.txt")

    deleted = client.post(f"/admin/documents/{aral_id}/delete", data={"csrf_token": csrf})
    assert deleted.status_code == 303
    assert not (corpus / "aral.txt").exists() and not (corpus / "aral.txt.meta.json").exists()
    assert "Removed aral.txt" in client.get("/admin").get_data(as_text=True)

    out = client.post("/admin/logout", data={"csrf_token": csrf})
    assert out.status_code == 303
    assert page(client.get("/admin")).find("input", attrs={"name": "token"}) is not None
    assert client.get(job_url).status_code == 303  # signed out: back to sign-in
