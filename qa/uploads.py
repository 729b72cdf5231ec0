"""Adding documents to the corpus directory safely: clean file names, size and type checks, and
an atomic write (a hidden temp file renamed into place), so an interrupted or invalid upload never
leaves half a document where the indexer would read it."""

from __future__ import annotations

import codecs
import os
import re
import tempfile
from pathlib import Path
from typing import IO

from werkzeug.utils import secure_filename

from qa.corpus import IGNORED_NAMES, META_SUFFIX, SUPPORTED_SUFFIXES
from qa.errors import BadRequestError, ConflictError, TooLargeError, UnsupportedMediaError

MAX_NAME_CHARS = 100


def clean_upload_name(filename: str) -> str:
    """A safe file name for the corpus directory, or BadRequestError / UnsupportedMediaError."""
    if "\x00" in filename:
        raise BadRequestError("file name contains a NUL byte")
    if filename.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", filename):
        raise BadRequestError("file name must not be an absolute path")
    if ".." in re.split(r"[/\\]", filename):
        raise BadRequestError("file name must not contain '..'")
    name = secure_filename(filename)
    suffix = Path(name).suffix.lower()
    if not name or name.startswith(".") or not Path(name).stem:
        raise BadRequestError(f"file name {filename[:120]!r} is empty once made safe")
    if suffix not in SUPPORTED_SUFFIXES:
        raise UnsupportedMediaError(
            f"unsupported file type {suffix or '(none)'!r}; use {', '.join(SUPPORTED_SUFFIXES)}")
    if len(name) > MAX_NAME_CHARS:
        name = name[:MAX_NAME_CHARS - len(suffix)].rstrip("._-") + suffix
    if name in IGNORED_NAMES or name.endswith(META_SUFFIX):
        raise BadRequestError(f"{name!r} is reserved in the corpus directory")
    return name


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
