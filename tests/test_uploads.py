"""Upload names: non-ASCII names are kept (made safe, not emptied), reserved names are compared
without regard to case, and a name that cannot be kept is refused with a message saying why."""

from __future__ import annotations

import io
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from qa.config import Settings
from qa.corpus import discover
from qa.errors import BadRequestError
from qa.service import QAService
from qa.uploads import clean_upload_name
from qa.web import create_app

TOKEN = "s3cret-token"


@pytest.mark.parametrize(("name", "kept"), [
    ("报告.pdf", "报告.pdf"),
    ("Отчёт 2031.txt", "Отчёт_2031.txt"),
    ("re\u0301sume\u0301.md", "résumé.md"),  # decomposed accents, stored composed (NFC)
    ("तालिका.html", "तालिका.html"),  # combining vowel signs are kept
    ("\u202egpj.txt", "gpj.txt"),  # a right-to-left override is dropped
    ("My Report (2031).PDF", "My_Report_2031.PDF"),
    ("dir/inner.txt", "dir_inner.txt"),
])
def test_non_ascii_names_are_kept_safely(name: str, kept: str) -> None:
    cleaned = clean_upload_name(name)
    assert cleaned == kept
    assert unicodedata.is_normalized("NFC", cleaned)
    assert "/" not in cleaned and "\\" not in cleaned


@pytest.mark.parametrize("name", ["Readme.md", "README.MD", "readme.md", "notes.META.json",
                                  ".DS_STORE"])
def test_reserved_names_are_refused_whatever_their_case(name: str) -> None:
    with pytest.raises(BadRequestError, match="reserved"):
        clean_upload_name(name)


def test_a_name_with_nothing_to_keep_is_refused_saying_why() -> None:
    with pytest.raises(BadRequestError, match="no letters or digits"):
        clean_upload_name("★★.pdf")


def test_a_long_non_ascii_name_fits_a_file_system_name(tmp_path: Path) -> None:
    cleaned = clean_upload_name("报" * 300 + ".txt")
    assert cleaned.endswith(".txt") and len(cleaned.encode()) <= 255
    (tmp_path / cleaned).write_text("fits")


def test_a_non_ascii_upload_is_stored_under_its_name(tiny_settings: Settings,
                                                     embedder: Any) -> None:
    settings = tiny_settings.replace(admin_token=TOKEN, max_upload_bytes=4096)
    client = create_app(settings, QAService(settings, embedder=embedder)).test_client()
    response = client.post("/api/v1/documents", headers={"Authorization": f"Bearer {TOKEN}"},
                           data={"file": (io.BytesIO("报告正文。\n".encode()), "报告.txt")},
                           content_type="multipart/form-data")
    assert response.status_code == 201, response.data
    assert response.get_json()["doc_path"] == "报告.txt"
    assert (settings.corpus_dir / "报告.txt").read_text() == "报告正文。\n"


def test_the_corpus_skips_reserved_names_whatever_their_case(tmp_path: Path) -> None:
    (tmp_path / "Readme.md").write_text("# How this corpus is kept\n")
    (tmp_path / "report.md").write_text("# A report\n")
    found, _ = discover(tmp_path)
    assert [f.path.name for f in found] == ["report.md"]
