"""Adding documents to the corpus directory safely, and removing them: clean file names, size and
type checks, and atomic writes (a hidden temp file renamed into place), so an interrupted or
invalid upload never leaves half a document, or half a sidecar, where the indexer would read it."""

from __future__ import annotations

import codecs
import json
import os
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import IO

from qa.corpus import IGNORED_NAMES, META_SUFFIX, SUPPORTED_SUFFIXES
from qa.errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    TooLargeError,
    UnsupportedMediaError,
)

MAX_NAME_CHARS = 100
MAX_NAME_BYTES = 200  # UTF-8 bytes; file systems allow 255
# Windows device names: harmless here, but a corpus directory may be copied to Windows.
_DEVICE_NAMES = {"con", "prn", "aux", "nul", *(f"com{n}" for n in range(1, 10)),
                 *(f"lpt{n}" for n in range(1, 10))}
RESERVED_NAMES = {name.casefold() for name in IGNORED_NAMES}


def clean_upload_name(filename: str) -> str:
    """A safe file name for the corpus directory, or BadRequestError / UnsupportedMediaError.

    Letters, marks and digits of any script are kept (normalized to NFC), whitespace becomes
    ``_``, path separators become ``_``, and everything else (punctuation, control and
    direction-override characters) is dropped. Reserved names are compared without regard to
    case.
    """
    if "\x00" in filename:
        raise BadRequestError("file name contains a NUL byte")
    if filename.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", filename):
        raise BadRequestError("file name must not be an absolute path")
    if ".." in re.split(r"[/\\]", filename):
        raise BadRequestError("file name must not contain '..'")
    shown = filename[:120]
    stem, suffix = os.path.splitext(
        unicodedata.normalize("NFC", re.sub(r"[/\\]", " ", filename)).strip())
    stem, suffix = _keep(stem).strip("._"), _keep(suffix)
    _check_reserved(filename, stem + suffix)
    if not stem or not any(unicodedata.category(c)[0] in "LN" for c in stem):
        raise BadRequestError(
            f"file name {shown!r} has no letters or digits before its extension once "
            "punctuation and symbols are removed: rename the file")
    if suffix.lower() not in SUPPORTED_SUFFIXES:
        raise UnsupportedMediaError(
            f"unsupported file type {suffix or '(none)'!r}; use {', '.join(SUPPORTED_SUFFIXES)}")
    if stem.casefold() in _DEVICE_NAMES:
        stem = f"_{stem}"
    while len(stem) + len(suffix) > MAX_NAME_CHARS or len(
            (stem + suffix).encode()) > MAX_NAME_BYTES:
        stem = stem[:-1]
    name = stem.rstrip("._-") + suffix
    _check_reserved(filename, name)
    return name


def _keep(text: str) -> str:
    """Letters, marks and digits of any script, ``.``, ``-`` and ``_``; whitespace runs as ``_``."""
    return "".join(c for c in "_".join(text.split())
                   if c in "._-" or unicodedata.category(c)[0] in "LMN")


def _check_reserved(filename: str, name: str) -> None:
    folded = name.casefold()
    if folded in RESERVED_NAMES or folded.endswith(META_SUFFIX) or (
            filename.lstrip().startswith(".")):
        raise BadRequestError(f"{name or filename[:120]!r} is reserved in the corpus directory "
                              "(README files, metadata sidecars and hidden files are not "
                              "documents)")


def save_upload(stream: IO[bytes], corpus_dir: Path, name: str, max_bytes: int,
                replace: bool) -> tuple[int, bool]:
    """Copy ``stream`` to ``corpus_dir/name`` through a hidden temp file (the corpus scanner
    skips dot files) so an interrupted upload never leaves half a document. Returns the size and
    whether an existing file was replaced."""
    target = corpus_dir / name
    if target.exists() and not replace:
        raise ConflictError(f"{name} already exists in the corpus; pass replace=true")
    corpus_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=corpus_dir, prefix=".upload-", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            size = _copy_checked(stream, out, Path(name).suffix.lower(), max_bytes)
            out.flush()
            os.fsync(out.fileno())
        existed = target.exists()
        if replace:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)  # fails if the name appeared meanwhile: never clobber
            except FileExistsError as e:
                raise ConflictError(f"{name} already exists in the corpus; pass "
                                    "replace=true") from e
        return size, existed and replace
    finally:
        tmp.unlink(missing_ok=True)


def _copy_checked(stream: IO[bytes], out: IO[bytes], suffix: str, max_bytes: int) -> int:
    decoder = codecs.getincrementaldecoder("utf-8")() if suffix != ".pdf" else None
    size, head = 0, b""
    while chunk := stream.read(1 << 16):
        size += len(chunk)
        if size > max_bytes:
            raise TooLargeError(f"uploads are limited to {max_bytes} bytes")
        if len(head) < 5:
            head += chunk[:5]
        if decoder is not None:
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                raise BadRequestError("text file is not valid UTF-8") from e
        out.write(chunk)
    if size == 0:
        raise BadRequestError("the uploaded file is empty")
    if decoder is not None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as e:
            raise BadRequestError("text file is not valid UTF-8 (truncated sequence)") from e
    if suffix == ".pdf" and not head.startswith(b"%PDF-"):
        raise BadRequestError("not a PDF file: it does not start with %PDF-")
    return size


DATE_PATTERN = re.compile(r"\d{4}(-\d{2}(-\d{2})?)?")
MAX_META_CHARS = 500
MAX_AUTHORS = 50


def sidecar_metadata(title: str | None, authors: str | list[str] | None,
                     date: str | None) -> dict[str, object]:
    """The sidecar of an uploaded document from form or API fields: title, authors (a list, or
    one string separated by commas, semicolons or new lines) and date (YYYY, YYYY-MM or
    YYYY-MM-DD). Empty fields are left out; an empty result means no sidecar."""
    meta: dict[str, object] = {}
    title = " ".join((title or "").split())
    if len(title) > MAX_META_CHARS:
        raise BadRequestError(f"title is longer than {MAX_META_CHARS} characters")
    if title:
        meta["title"] = title
    names = authors if isinstance(authors, list) else re.split(r"[;,\n]", authors or "")
    cleaned = [" ".join(str(n).split()) for n in names if str(n).strip()]
    if len(cleaned) > MAX_AUTHORS or any(len(n) > MAX_META_CHARS for n in cleaned):
        raise BadRequestError(f"at most {MAX_AUTHORS} authors of {MAX_META_CHARS} characters each")
    if cleaned:
        meta["authors"] = cleaned
    date = (date or "").strip()
    if date:
        if not DATE_PATTERN.fullmatch(date):
            raise BadRequestError(f"date must look like 2024, 2024-05 or 2024-05-31; got {date!r}")
        meta["date"] = date
    return meta


def save_sidecar(corpus_dir: Path, name: str, meta: dict[str, object]) -> None:
    """Write ``<name>.meta.json`` (the sidecar of this file alone) atomically."""
    target = corpus_dir / f"{name}{META_SUFFIX}"
    fd, tmp_name = tempfile.mkstemp(dir=corpus_dir, prefix=".upload-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(meta, out, ensure_ascii=False, indent=2)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_name, target)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def delete_document(corpus_dir: Path, rel_path: str) -> list[str]:
    """Remove a document file (a path relative to the corpus directory, as the index records
    it) and the sidecar that belongs to it alone. Returns the removed paths. The document stays
    answerable until the next rebuild."""
    root = corpus_dir.resolve()
    target = (corpus_dir / rel_path).resolve()
    if root not in target.parents or target.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise BadRequestError(f"{rel_path!r} is not a document of the corpus")
    if not target.is_file():
        raise NotFoundError(f"{rel_path} is no longer in the corpus (rebuild the index to "
                            "remove it from answers)")
    removed = []
    own = target.with_name(target.name + META_SUFFIX)
    shared = target.with_name(target.stem + META_SUFFIX)
    target.unlink()
    removed.append(rel_path)
    siblings = [p for p in target.parent.glob(f"{target.stem}.*")
                if p.suffix.lower() in SUPPORTED_SUFFIXES and p != target]
    for meta in (own, *([shared] if not siblings else [])):
        if meta.is_file():
            meta.unlink()
            removed.append(str(meta.relative_to(root)))
    return removed
