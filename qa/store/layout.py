"""Where builds live and how one becomes current: ``index/builds/<version>/``, the ``index/CURRENT``
pointer (replaced atomically by ``publish``), the build lock, leases that serving processes hold on
builds, and ``clean_leftovers``, which removes old builds nobody holds. Also the names of a build's
files and the reading of its manifest. Never opens a build's vectors or its database.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qa.errors import IndexCorruptError, IndexLockedError, IndexWriteError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
FAISS_FILE = "vectors.faiss"
SENTENCE_FILE = "sentences.npy"
DB_FILE = "chunks.sqlite"
# Late interaction: every chunk's content word-piece vectors, int8 (unit vectors times
# tokens.TOKEN_SCALE), one flat matrix with each chunk's first row in TOKEN_OFFSETS_FILE (chunk
# FAISS id order, n + 1 entries), and where each piece starts in its chunk's text
# (TOKEN_STARTS_FILE, int32; negative for the header line the encoder also saw). About 45 KB a
# chunk with a 384-dimension model; optional (`late_interaction`).
TOKEN_FILE = "tokens.npy"
TOKEN_OFFSETS_FILE = "token_offsets.npy"
TOKEN_STARTS_FILE = "token_starts.npy"
# A large build keeps its token vectors product-quantized instead (``compression``): uint8 codes
# in TOKEN_CODES_FILE (one row of the codec's code size a piece, rows as in TOKEN_FILE) and the
# trained quantizer in TOKEN_CODEC_FILE; the manifest's "token_store" says which ("int8", "pq").
TOKEN_CODES_FILE = "token_codes.npy"
TOKEN_CODEC_FILE = "token_codec.faiss"
MANIFEST_FILE = "manifest.json"
KEEP_BUILDS = 3


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def builds(self) -> Path:
        return self.root / "builds"

    @property
    def current(self) -> Path:
        return self.root / "CURRENT"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def leases(self) -> Path:
        return self.root / "leases"

    def build_dir(self, version: str) -> Path:
        return self.builds / version

    def current_version(self) -> str | None:
        try:
            version = self.current.read_text().strip()
        except FileNotFoundError:
            return None
        return version or None

    def ensure_writable(self) -> None:
        try:
            self.builds.mkdir(parents=True, exist_ok=True)
            self.cache.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise IndexWriteError(f"index directory {self.root} is not writable: {e}") from e


_last_version_us = 0


def new_version() -> str:
    """A build name that sorts by creation time (strictly increasing microseconds)."""
    global _last_version_us
    micros = max(time.time_ns() // 1000, _last_version_us + 1)
    _last_version_us = micros
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(micros / 1e6))
    return f"{stamp}{micros % 1_000_000:06d}-{uuid.uuid4().hex[:6]}"


@contextlib.contextmanager
def build_lock(layout: Layout, wait: float = 0.0) -> Iterator[None]:
    """Exclusive build lock (flock: released by the kernel if the holder dies)."""
    layout.ensure_writable()
    with open(layout.lock, "a+") as fh:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as e:
                if time.monotonic() >= deadline:
                    raise IndexLockedError(
                        f"another `qa index` is running on {layout.root} (lock {layout.lock}); "
                        "wait for it to finish"
                    ) from e
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Lease:
    """A serving process's hold on one build: a shared flock on ``leases/<version>``. Any number
    of processes (and readers) hold a build at once; cleanup removes a build only after taking
    the exclusive lock, which it cannot while a lease is held. The kernel releases the lock when
    its process dies, so a killed server never pins a build for good."""

    def __init__(self, layout: Layout, version: str) -> None:
        layout.leases.mkdir(parents=True, exist_ok=True)
        self.version = version
        self._fd: int | None = os.open(layout.leases / version, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH)  # waits while cleanup is removing this build
        except OSError:
            self.release()
            raise

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the lock


def _remove_unleased(layout: Layout, name: str) -> bool:
    """Remove build ``name`` unless a process holds a lease on it. True when removed."""
    lease_path = layout.leases / name
    try:
        layout.leases.mkdir(parents=True, exist_ok=True)
        fd = os.open(lease_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        log.warning("not removing build %s: cannot check its leases: %s", name, e)
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("keeping build %s: a serving process holds it", name)
            return False
        build = layout.build_dir(name)
        if build.is_dir():
            # Renamed first, so that an interrupted removal leaves no half build under its name.
            trash = layout.builds / f".trash-{name}"
            os.replace(build, trash)
            shutil.rmtree(trash, ignore_errors=True)
        lease_path.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def clean_leftovers(layout: Layout, keep: int = KEEP_BUILDS) -> list[str]:
    """Remove unfinished builds and all but the ``keep`` newest published ones, except the
    current build and any build a serving process holds a lease on. Call under lock."""
    removed: list[str] = []
    if not layout.builds.is_dir():
        return removed
    current = layout.current_version()
    finished = sorted(p.name for p in layout.builds.iterdir() if not p.name.startswith("."))
    for path in layout.builds.iterdir():
        if path.name.startswith((".tmp-", ".trash-")):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    stale = [v for v in finished[:-keep] if v != current] if keep else []
    for name in stale:
        if _remove_unleased(layout, name):
            removed.append(name)
    if layout.leases.is_dir():  # leases of builds that are gone (their holders are too)
        for path in layout.leases.iterdir():
            if path.name not in finished and not path.name.startswith("."):
                _remove_unleased(layout, path.name)
    for tmp in layout.root.glob("CURRENT.tmp*"):
        tmp.unlink(missing_ok=True)
    return removed


def read_manifest(build_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((build_dir / MANIFEST_FILE).read_text())
    except FileNotFoundError as e:
        raise IndexCorruptError(f"{build_dir / MANIFEST_FILE} is missing: run `qa index --full`") from e
    except ValueError as e:
        raise IndexCorruptError(
            f"{build_dir / MANIFEST_FILE} is not valid JSON: run `qa index --full`") from e


def publish(layout: Layout, version: str) -> None:
    tmp = layout.root / f"CURRENT.tmp{os.getpid()}"
    tmp.write_text(version + "\n")
    fsync_file(tmp)
    os.replace(tmp, layout.current)
    fsync_dir(layout.root)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` durable. File systems that cannot fsync a
    directory (EINVAL) are skipped; any other failure (EIO ...) is raised."""
    try:
        fsync_file(path)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
