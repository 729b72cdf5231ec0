"""The corpus: discovering files, reading text and metadata, hashing content."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pdfmaker import write_pdf

from qa.corpus import (
    SourceFile,
    UnreadableDocument,
    discover,
    load_document,
    page_at,
)
from qa.errors import CorpusError


def _by_id(corpus: Path) -> dict[str, SourceFile]:
    sources, _ = discover(corpus)
    return {s.doc_id: s for s in sources}


def test_discover_tiny_corpus(tiny_corpus: Path) -> None:
    sources, warnings = discover(tiny_corpus)
    assert [s.doc_id for s in sources] == [
        "desert-observatory", "lake-baikal-accord", "silk-road-rail"]
    assert warnings == []
    baikal = next(s for s in sources if s.doc_id == "lake-baikal-accord")
    assert baikal.meta_path == tiny_corpus / "lake-baikal-accord.meta.json"
    assert all(s.meta_path is None for s in sources if s.doc_id != "lake-baikal-accord")
    assert all(len(s.content_hash) == 64 for s in sources)


def test_discover_finds_supported_and_ignores_the_rest(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Alpha text.")
    (tmp_path / "b.md").write_text("# Beta\n\nBeta text.")
    (tmp_path / "c.html").write_text("<p>Gamma text.</p>")
    write_pdf(tmp_path / "d.pdf", [["Delta text."]])
    (tmp_path / "README.md").write_text("About this corpus.")
    (tmp_path / "a.meta.json").write_text('{"title": "Alpha"}')
    (tmp_path / "orphan.meta.json").write_text('{"title": "Orphan"}')
    (tmp_path / ".hidden.txt").write_text("Hidden text.")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "notes.txt").write_text("Version control.")
    (tmp_path / "sheet.xlsx").write_bytes(b"PK\x03\x04")
    (tmp_path / "Makefile").write_text("all:")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "e.txt").write_text("Epsilon text.")

    sources, warnings = discover(tmp_path)
    assert sorted(s.path.name for s in sources) == ["a.txt", "b.md", "c.html", "d.pdf", "e.txt"]
    assert {s.doc_id for s in sources} == {"a", "b", "c", "d", "sub-e"}
    assert sorted(warnings) == [
        "skipped Makefile: unsupported file type '(none)'",
        "skipped sheet.xlsx: unsupported file type '.xlsx'",
    ]
    assert all("\n" not in w for w in warnings)


def test_discover_gives_distinct_ids_to_same_stem(tmp_path: Path) -> None:
    (tmp_path / "report.txt").write_text("Text version.")
    (tmp_path / "report.md").write_text("Markdown version.")
    ids = sorted(s.doc_id for s in discover(tmp_path)[0])
    assert len(set(ids)) == 2
    assert "report" in ids


def test_discover_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        discover(tmp_path / "nowhere")


def test_discover_on_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(CorpusError):
        discover(f)


def test_content_hash_changes_with_sidecar(tiny_corpus: Path) -> None:
    before = _by_id(tiny_corpus)
    meta = tiny_corpus / "lake-baikal-accord.meta.json"
    data = json.loads(meta.read_text())
    meta.write_text(json.dumps({**data, "title": "A New Title"}))
    after = _by_id(tiny_corpus)
    assert after["lake-baikal-accord"].content_hash != before["lake-baikal-accord"].content_hash
    assert after["silk-road-rail"].content_hash == before["silk-road-rail"].content_hash


def test_content_hash_changes_with_text_and_is_stable(tiny_corpus: Path) -> None:
    before = _by_id(tiny_corpus)
    assert _by_id(tiny_corpus) == before
    path = tiny_corpus / "silk-road-rail.md"
    path.write_text(path.read_text() + "\nOne more sentence.\n")
    assert _by_id(tiny_corpus)["silk-road-rail"].content_hash != before[
        "silk-road-rail"].content_hash


def test_load_document_reads_sidecar(tiny_corpus: Path) -> None:
    doc = load_document(_by_id(tiny_corpus)["lake-baikal-accord"], tiny_corpus)
    assert doc.title == "The Lake Baikal Accord on Water Security"
    assert doc.authors == ("Test Author",)
    assert doc.publisher == "Test Fixtures Press"
    assert doc.date == "2031-05"
    assert doc.source is None
    assert doc.path == "lake-baikal-accord.txt"
    assert doc.page_starts == ()
    assert "The commission has nine members" in doc.raw
    assert doc.metadata()["title"] == doc.title


def test_load_document_guesses_title_without_sidecar(tiny_corpus: Path) -> None:
    doc = load_document(_by_id(tiny_corpus)["silk-road-rail"], tiny_corpus)
    assert doc.title == "Silk Road Rail Corridor"
    assert doc.authors == ()
    assert doc.publisher is None


def test_author_string_becomes_tuple(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("Some text here.")
    (tmp_path / "x.meta.json").write_text('{"authors": "Solo Writer"}')
    doc = load_document(_by_id(tmp_path)["x"], tmp_path)
    assert doc.authors == ("Solo Writer",)
    assert doc.title == "Some text here."


def test_broken_sidecar_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("Heading line\n\nBody.")
    (tmp_path / "x.meta.json").write_text("{not json")
    doc = load_document(_by_id(tmp_path)["x"], tmp_path)
    assert doc.title == "Heading line"


def test_html_text_without_script(tiny_corpus: Path) -> None:
    doc = load_document(_by_id(tiny_corpus)["desert-observatory"], tiny_corpus)
    assert "var x" not in doc.raw
    assert doc.raw.startswith("# The Gobi Desert Observatory\n\n")
    assert "## Research" in doc.raw
    assert "Its main telescope has a mirror 3.6 metres wide and was installed in 2029" in doc.raw
    assert "The observatory studies dust storms" in doc.raw
    assert doc.title == "The Gobi Desert Observatory"


def test_html_style_and_noscript_removed(tmp_path: Path) -> None:
    (tmp_path / "p.html").write_text(
        "<html><head><style>p {color: red}</style></head><body>"
        "<noscript>Enable JavaScript</noscript><p>Visible words.</p>"
        "<script>alert('x')</script></body></html>")
    doc = load_document(_by_id(tmp_path)["p"], tmp_path)
    assert doc.raw == "Visible words."


def test_pdf_text_and_page_starts(tmp_path: Path) -> None:
    write_pdf(tmp_path / "two.pdf", [["First page line one.", "Second line here."],
                                     ["Page two says hello."]])
    doc = load_document(_by_id(tmp_path)["two"], tmp_path)
    assert len(doc.page_starts) == 2
    assert doc.page_starts[0] == 0
    second = doc.page_starts[1]
    assert doc.raw[second:].startswith("Page two says hello.")
    assert "First page line one." in doc.raw[:second]
    assert page_at(doc.page_starts, 0) == 1
    assert page_at(doc.page_starts, second - 1) == 1
    assert page_at(doc.page_starts, second) == 2
    assert page_at((), 5) is None


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("empty.txt", b"", "no text"),
    ("blank.md", b"  \n\n\t\n", "no text"),
    ("binary.txt", b"abc\x00\x01\x02def", "binary"),
    ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf", "not a readable PDF"),
    ("blank.html", b"<html><body><script>x()</script></body></html>", "no text"),
])
def test_unreadable_documents(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    (tmp_path / name).write_bytes(content)
    (source,) = discover(tmp_path)[0]
    with pytest.raises(UnreadableDocument, match=reason):
        load_document(source, tmp_path)


def test_cp1252_text_is_decoded(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_bytes("Caf\u00e9 society \u2013 a note.".encode("cp1252"))
    doc = load_document(_by_id(tmp_path)["old"], tmp_path)
    assert doc.raw == "Caf\u00e9 society \u2013 a note."


def test_crlf_is_normalized(tmp_path: Path) -> None:
    (tmp_path / "win.txt").write_bytes(b"Line one.\r\nLine two.\rLine three.")
    doc = load_document(_by_id(tmp_path)["win"], tmp_path)
    assert doc.raw == "Line one.\nLine two.\nLine three."


def test_html_text_outside_paragraphs_is_kept(tmp_path: Path) -> None:
    (tmp_path / "mixed.html").write_text(
        "<html><body><h1>Treaty</h1>"
        "<div>The treaty was signed by twelve states in 1999.</div>"
        "<p>A paragraph.</p>Loose body text here.</body></html>")
    doc = load_document(_by_id(tmp_path)["mixed"], tmp_path)
    assert "# Treaty" in doc.raw
    assert "A paragraph." in doc.raw
    assert "The treaty was signed by twelve states in 1999." in doc.raw
    assert "Loose body text here." in doc.raw
