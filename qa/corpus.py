"""The corpus: finding document files, reading their text and metadata, hashing their content.

Owns file formats (.txt, .md, .html, .pdf) and the ``<stem>.meta.json`` sidecars. Knows nothing of
normalization, chunking, embeddings or the index.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qa.errors import CorpusError

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".txt", ".md", ".html", ".htm", ".pdf")
META_SUFFIX = ".meta.json"
IGNORED_NAMES = {"README.md", "readme.md", ".gitkeep", ".DS_Store"}
_IGNORED_FOLDED = {name.casefold() for name in IGNORED_NAMES}  # "Readme.md" too


class UnreadableDocument(Exception):
    """A single file that cannot be turned into text; the build skips it with a warning."""


@dataclass(frozen=True)
class SourceFile:
    """A document file found in the corpus, identified and hashed but not yet read."""

    doc_id: str
    path: Path
    meta_path: Path | None
    content_hash: str


@dataclass(frozen=True)
class Document:
    """A document's extracted (raw) text and its metadata."""

    doc_id: str
    path: str
    raw: str
    content_hash: str
    title: str
    authors: tuple[str, ...] = ()
    publisher: str | None = None
    date: str | None = None
    source: str | None = None
    page_starts: tuple[int, ...] = field(default=())

    def metadata(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id,
            "path": self.path,
            "title": self.title,
            "authors": list(self.authors),
            "publisher": self.publisher,
            "date": self.date,
            "source": self.source,
        }


def discover(corpus_dir: Path, known_ids: Mapping[str, str] | None = None
             ) -> tuple[list[SourceFile], list[str]]:
    """All document files under ``corpus_dir`` with content hashes, plus warnings for skipped files.

    ``known_ids`` (relative path -> id, from the index being updated) keeps every document that
    was indexed before under the id it had: an id never changes because another file was added,
    removed or renamed. A new file gets the slug of its path, or that slug with its extension
    (then a number) when an indexed document already has it.
    """
    check_corpus_dir(corpus_dir)
    known = dict(known_ids or {})
    candidates: list[tuple[Path, str, Path | None, str]] = []
    warnings: list[str] = []
    try:
        paths = sorted(p for p in corpus_dir.rglob("*") if p.is_file())
    except OSError as e:
        raise CorpusError(f"cannot read corpus directory {corpus_dir}: {e}") from e
    shared: dict[Path, list[str]] = {}
    for path in paths:
        rel = path.relative_to(corpus_dir)
        if path.name.casefold() in _IGNORED_FOLDED or path.name.casefold().endswith(
                META_SUFFIX) or any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            warnings.append(f"skipped {rel}: unsupported file type {path.suffix or '(none)'!r}")
            continue
        meta_path = sidecar(path)
        if meta_path is not None and meta_path.name == path.stem + META_SUFFIX:
            shared.setdefault(meta_path, []).append(path.name)
        try:
            digest = hashlib.sha256(path.read_bytes())
            if meta_path is not None:
                digest.update(b"\0meta\0" + meta_path.read_bytes())
        except OSError as e:
            warnings.append(f"skipped {rel}: cannot read file ({e.strerror or e})")
            continue
        candidates.append((path, str(rel), meta_path, digest.hexdigest()))
    for meta_path, names in shared.items():
        if len(names) > 1:
            warnings.append(
                f"{meta_path.relative_to(corpus_dir)} describes {' and '.join(names)}: give "
                f"each file its own ({', '.join(n + META_SUFFIX for n in names)})")
    # Ids of files indexed before and since removed stay taken: an old link never leads to a
    # different document, and the file, put back, gets its id again.
    used = set(known.values())
    found: list[SourceFile] = []
    for path, rel_path, meta_path, digest_hex in candidates:
        doc_id = known.get(rel_path)
        if doc_id is None:
            doc_id = _unique_id(_slug(str(Path(rel_path).with_suffix(""))), path.suffix, used)
        found.append(SourceFile(doc_id, path, meta_path, digest_hex))
    return found, warnings


def check_corpus_dir(corpus_dir: Path) -> None:
    if not corpus_dir.is_dir():
        raise CorpusError(f"corpus directory {corpus_dir} does not exist or is not a directory: "
                          f"create it with documents in it, or set QA_CORPUS_DIR (--corpus-dir)")


def sidecar(path: Path) -> Path | None:
    """The metadata file of document ``path``: its own ``<name>.meta.json`` when there is one,
    else ``<stem>.meta.json`` (which every file of that stem shares)."""
    for candidate in (path.with_name(path.name + META_SUFFIX),
                      path.with_name(path.stem + META_SUFFIX)):
        if candidate.is_file():
            return candidate
    return None


def load_document(source: SourceFile, corpus_dir: Path) -> Document:
    """Extract text and metadata; raises ``UnreadableDocument`` for empty, binary or broken files."""
    rel = str(source.path.relative_to(corpus_dir))
    suffix = source.path.suffix.lower()
    try:
        page_starts: list[int] = []
        if suffix == ".pdf":
            raw, page_starts = _read_pdf(source.path)
        elif suffix in (".html", ".htm"):
            raw = _read_html(source.path)
        else:
            raw = _read_text(source.path)
    except UnreadableDocument:
        raise
    except OSError as e:
        raise UnreadableDocument(f"cannot read file ({e.strerror or e})") from e
    if not raw.strip():
        raise UnreadableDocument("no text in file (empty or image-only)")
    meta = _read_meta(source.meta_path) if source.meta_path else {}
    title = str(meta.get("title") or _guess_title(raw) or source.path.stem)
    authors = meta.get("authors") or []
    if isinstance(authors, str):
        authors = [authors]
    return Document(
        doc_id=source.doc_id,
        path=rel,
        raw=raw,
        content_hash=source.content_hash,
        title=title,
        authors=tuple(str(a) for a in authors),
        publisher=_opt_str(meta.get("publisher")),
        date=_opt_str(meta.get("date")),
        source=_opt_str(meta.get("source")),
        page_starts=tuple(page_starts),
    )


def page_at(page_starts: Iterable[int], raw_offset: int) -> int | None:
    """1-based page number holding ``raw_offset``, or None for documents without pages."""
    page = None
    for number, start in enumerate(page_starts, 1):
        if start <= raw_offset:
            page = number
        else:
            break
    return page


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        raise UnreadableDocument("binary content (NUL bytes) in a text file")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding).replace("\r\n", "\n").replace("\r", "\n")
        except UnicodeDecodeError:
            continue
    raise UnreadableDocument("text is neither UTF-8 nor Windows-1252")


_BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "body", "caption", "dd", "div", "dl", "dt",
    "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "li", "main",
    "nav", "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul", "html",
})


def _read_html(path: Path) -> str:
    """Visible text in document order, one paragraph per block element, headings as ``#``."""
    from bs4 import BeautifulSoup, NavigableString

    soup = BeautifulSoup(_read_text(path), "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    blocks: list[tuple[Any, list[str]]] = []
    for string in soup.find_all(string=True):
        if type(string) is not NavigableString:  # comments, doctype, CDATA, declarations
            continue
        text = " ".join(string.split())
        if not text:
            continue
        block = next((p for p in string.parents if p.name in _BLOCKS), None)
        if blocks and blocks[-1][0] is block:
            blocks[-1][1].append(text)
        else:
            blocks.append((block, [text]))
    out = []
    for block, parts in blocks:
        name = getattr(block, "name", "") or ""
        prefix = "#" * int(name[1]) + " " if re.fullmatch(r"h[1-6]", name) else ""
        out.append(prefix + " ".join(parts))
    return "\n\n".join(out)


def _read_pdf(path: Path) -> tuple[str, list[int]]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(str(path))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, TypeError) as e:
        raise UnreadableDocument(f"not a readable PDF ({e})") from e
    starts, parts, offset = [], [], 0
    for text in pages:
        starts.append(offset)
        parts.append(text)
        offset += len(text) + 2
    return "\n\n".join(parts), starts


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("ignoring metadata %s: %s", path.name, e)
        return {}
    if not isinstance(meta, dict):
        log.warning("ignoring metadata %s: not a JSON object", path.name)
        return {}
    return meta


def _guess_title(raw: str) -> str | None:
    for line in raw.splitlines():
        text = line.strip().strip("#*_ ").strip()
        if len(text) >= 3:
            return text[:200]
    return None


def _opt_str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _slug(text: str) -> str:
    """Letters, marks and digits of any script, lower-cased; every other run becomes ``-``."""
    kept = "".join(c if unicodedata.category(c)[0] in "LMN" else "-"
                   for c in unicodedata.normalize("NFC", text.lower()))
    slug = re.sub(r"-+", "-", kept).strip("-")
    return slug[:80].strip("-") or "document"


def _unique_id(base: str, suffix: str, used: set[str]) -> str:
    candidate = base
    if candidate in used:
        candidate = f"{base}-{suffix.lstrip('.').lower()}"
    n = 2
    while candidate in used:
        candidate = f"{base}-{n}"
        n += 1
    used.add(candidate)
    return candidate
