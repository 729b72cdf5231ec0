"""The admin pages at ``/admin``: sign in with the admin token, upload documents with their
sidecar (title, authors, date), delete a document, start a rebuild and follow it until the new
version is served, and see the index versions kept on disk.

A thin layer over the same core as the admin API (``api.save_document``, ``api.remove_document``,
``rebuilds.start_rebuild``, the job registry). No JavaScript: forms post and redirect, and a
running job's page reloads itself every second. Disabled (404) without an admin token.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from qa.errors import NotFoundError, QAError
from qa.versions import kept_versions
from qa.web import auth
from qa.web.api import check_multipart, remove_document, save_document
from qa.web.presentation import describe_age
from qa.web.rebuilds import start_rebuild
from qa.web.state import current

admin = Blueprint("admin", __name__, url_prefix="/admin")

MAX_ROWS = 10
REFRESH_SECONDS = 1


def _see_other(endpoint: str, **values: Any) -> Response:
    return redirect(url_for(endpoint, **values), code=303)


def _signed_in_or_login() -> Response | None:
    if auth.signed_in():
        return None
    return _see_other("admin.home")


@admin.get("")
def home() -> Any:
    auth.admin_enabled()
    if not auth.signed_in():
        return render_template("admin_login.html", csrf=auth.csrf_token())
    state = current()
    rows = max(1, min(MAX_ROWS, request.args.get("rows", 1, type=int) or 1))
    try:
        status: dict[str, Any] | None = state.service.status()
        documents = state.service.documents()
    except QAError:  # no index yet: uploads and a first rebuild still work
        status, documents = None, []
    return render_template(
        "admin.html", csrf=auth.csrf_token(), status=status, documents=documents, rows=rows,
        max_rows=MAX_ROWS, versions=kept_versions(state.service.layout),
        age=describe_age(status.get("created")) if status else "")


@admin.post("/login")
def login() -> Any:
    auth.admin_enabled()
    auth.check_csrf()
    if not auth.sign_in(request.form.get("token", "")):
        return render_template("admin_login.html", csrf=auth.csrf_token(),
                               error="That is not the admin token."), 401
    return _see_other("admin.home")


@admin.post("/logout")
def logout() -> Any:
    auth.admin_enabled()
    auth.check_csrf()
    auth.sign_out()
    return _see_other("admin.home")


@admin.post("/documents")
def upload() -> Any:
    if (refused := _signed_in_or_login()) is not None:
        return refused
    check_multipart()
    auth.check_csrf()
    form = request.form
    files = request.files.getlist("file")
    titles, authors, dates = form.getlist("title"), form.getlist("authors"), form.getlist("date")
    replace = form.get("replace") == "1"
    saved, problems = [], []
    for n, upload in enumerate(files):
        if not upload.filename:
            continue
        fields = {"title": _nth(titles, n), "authors": _nth(authors, n), "date": _nth(dates, n)}
        try:
            saved.append(save_document(upload, replace, fields)["doc_path"])
        except QAError as e:
            problems.append(f"{upload.filename}: {e}")
    if not saved and not problems:
        problems.append("choose a file to upload")
    if saved:
        flash(f"Uploaded {', '.join(saved)}. Rebuild the index to make "
              f"{'it' if len(saved) == 1 else 'them'} answerable.", "ok")
    for problem in problems:
        flash(problem, "error")
    return _see_other("admin.home")


def _nth(values: list[str], n: int) -> str:
    return values[n] if n < len(values) else ""


@admin.post("/documents/<doc_id>/delete")
def delete(doc_id: str) -> Any:
    if (refused := _signed_in_or_login()) is not None:
        return refused
    auth.check_csrf()
    try:
        removed = remove_document(doc_id)
    except QAError as e:
        flash(str(e), "error")
    else:
        flash(f"Removed {', '.join(removed['removed'])}. Rebuild the index to stop answering "
              "from it.", "ok")
    return _see_other("admin.home")


@admin.post("/rebuild")
def rebuild() -> Any:
    if (refused := _signed_in_or_login()) is not None:
        return refused
    auth.check_csrf()
    try:
        job = start_rebuild(current(), full=request.form.get("full") == "1")
    except QAError as e:
        flash(str(e), "error")
        return _see_other("admin.home")
    return _see_other("admin.job", job_id=job.id)


@admin.get("/jobs/<job_id>")
def job(job_id: str) -> Any:
    if not auth.signed_in():
        return _see_other("admin.home")
    state = current()
    found = state.jobs.get(job_id)
    if found is None:
        raise NotFoundError(f"no rebuild job with id {job_id!r}")
    data = found.to_dict()
    try:
        served = state.service.reader().version
    except QAError:
        served = None
    target = (data.get("result") or {}).get("version")
    done = data["state"] == "failed" or (data["state"] == "succeeded" and served == target)
    return render_template("admin_job.html", job=data, served=served, target=target, done=done,
                           refresh=None if done else REFRESH_SECONDS, csrf=auth.csrf_token())
