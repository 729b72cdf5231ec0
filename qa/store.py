"""The index on disk: the only module that imports faiss or sqlite3, and the home of every SQL statement.

A build is a directory ``index/builds/<version>/`` holding ``vectors.faiss`` (chunk vectors, inner
product on unit vectors), ``sentences.npy`` (sentence vectors for answer selection), ``chunks.sqlite``
(documents, chunks, an FTS5 table over chunk text, sentences, acronyms) and ``manifest.json``. It is
written completely in a temporary directory, fsynced and verified, then published by replacing the
small pointer file ``index/CURRENT``. Never embeds, never ranks.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
import uuid
import weakref
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qa.errors import IndexCorruptError, IndexLockedError, IndexWriteError, NoIndexError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
FAISS_FILE = "vectors.faiss"
SENTENCE_FILE = "sentences.npy"
DB_FILE = "chunks.sqlite"
# Late interaction: every chunk's content word-piece vectors, int8 (unit vectors times
# TOKEN_SCALE), one flat matrix with each chunk's first row in TOKEN_OFFSETS_FILE (chunk FAISS id
# order, n + 1 entries), and where each piece starts in its chunk's text (TOKEN_STARTS_FILE,
# int32; negative for the header line the encoder also saw). About 45 KB a chunk with a
# 384-dimension model; optional (`late_interaction`).
TOKEN_FILE = "tokens.npy"
TOKEN_OFFSETS_FILE = "token_offsets.npy"
TOKEN_STARTS_FILE = "token_starts.npy"
TOKEN_SCALE = 127.0
MANIFEST_FILE = "manifest.json"
KEEP_BUILDS = 3
HNSW_THRESHOLD = 200_000
# Sentence-level search is an exact scan of the memory-mapped sentence vectors, which grows with
# the corpus; past this many sentences it is skipped and the first stage uses chunk vectors and
# BM25 alone (sentence evidence for reranking still reads only the candidates' sentences).
SENTENCE_SEARCH_LIMIT = 200_000
# Chunks whose rows and sentences a reader keeps in memory, least recently asked dropped first:
# every question reads those of its ~35 candidates, mostly the same few hundred of a corpus.
CHUNK_CACHE_SIZE = 4096
# Loading a build checks every file against the manifest. Files up to this size are hashed
# whole; larger ones (the vectors of a big index) are checked by size and a sampled digest so
# that loading stays fast, and are hashed whole at publish time and by `qa verify`.
FULL_CHECK_BYTES = 64 << 20
SAMPLE_BLOCKS = 256
SAMPLE_BLOCK_BYTES = 4096
SAMPLE_EDGE_BYTES = 1 << 20
CONTEXT_WEIGHT = 0.5  # BM25 weight of the title/authors/section column against the chunk text

SCHEMA = """
CREATE TABLE documents (
    doc_id TEXT PRIMARY KEY, path TEXT NOT NULL, title TEXT NOT NULL, authors TEXT NOT NULL,
    publisher TEXT, date TEXT, source TEXT, content_hash TEXT NOT NULL, text TEXT NOT NULL,
    raw TEXT NOT NULL, raw_offsets BLOB NOT NULL, page_starts TEXT NOT NULL,
    sections TEXT NOT NULL, n_chunks INTEGER NOT NULL
);
CREATE TABLE chunks (
    rowid INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL UNIQUE, doc_id TEXT NOT NULL,
    ordinal INTEGER NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL, text TEXT NOT NULL,
    section TEXT, page INTEGER, n_tokens INTEGER NOT NULL, content_key TEXT NOT NULL,
    header TEXT NOT NULL, context TEXT NOT NULL
);
CREATE INDEX chunks_doc ON chunks(doc_id, start);
CREATE VIRTUAL TABLE chunks_fts USING fts5(
    text, context, content='chunks', content_rowid='rowid', tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TABLE sentences (
    rowid INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, start INTEGER NOT NULL,
    "end" INTEGER NOT NULL, content_key TEXT NOT NULL, chunk_rowid INTEGER NOT NULL,
    terms TEXT NOT NULL
);
CREATE INDEX sentences_doc ON sentences(doc_id, start);
CREATE TABLE acronyms (short TEXT NOT NULL, long TEXT NOT NULL, doc_id TEXT NOT NULL);
CREATE TABLE term_df (term TEXT PRIMARY KEY, df INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE piece_df (piece INTEGER PRIMARY KEY, df INTEGER NOT NULL);
"""

# Word-piece ids (int32), their start offsets (int32), their vectors (int8, n x dim).
StoredTokens = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class TokenMatch:
    """A question's token vectors against some chunks' stored ones: ``sims`` holds the cosines
    (question pieces x stored pieces); chunk ``rowids[i]``'s pieces are the columns
    ``bounds[i]:bounds[i + 1]``, starting at ``starts`` in its text."""

    rowids: np.ndarray
    bounds: np.ndarray
    sims: np.ndarray
    starts: np.ndarray


def quantize_tokens(vectors: np.ndarray) -> np.ndarray:
    """Unit-length float token vectors as int8 (cosines keep about two decimal places)."""
    return np.clip(np.rint(np.asarray(vectors) * TOKEN_SCALE), -127, 127).astype(np.int8)


# --------------------------------------------------------------------------------------------
# Layout, lock and leftovers
# --------------------------------------------------------------------------------------------
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


def open_leased(layout: Layout, version: str, verify: bool | str = True) -> IndexReader:
    """Open a published build while holding a lease on it, for as long as the reader lives."""
    lease: Lease | None
    try:
        lease = Lease(layout, version)
    except OSError as e:  # a read-only index directory (a replica): nothing cleans it up here
        log.warning("serving index build %s without a lease (%s): a build in another process "
                    "could remove it while in use", version, e.strerror or e)
        lease = None
    try:
        # Checked only now that the lease is held: cleanup may have removed the build between
        # the reading of CURRENT and the lease, never after it.
        if not layout.build_dir(version).is_dir():
            raise IndexCorruptError(f"index build {version} is missing: run `qa index --full`")
        return IndexReader(layout.build_dir(version), verify=verify, lease=lease)
    except BaseException:
        if lease is not None:
            lease.release()
        raise


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


# --------------------------------------------------------------------------------------------
# Embedding cache
# --------------------------------------------------------------------------------------------
class EmbeddingCache:
    """Vectors keyed by (model, content hash) in SQLite; survives crashes and failed builds."""

    def __init__(self, path: Path, model_key: str, dimension: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.model_key = model_key
        self.dimension = dimension
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS vectors (model TEXT, key TEXT, vector BLOB, "
            "PRIMARY KEY (model, key))"
        )
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS token_vectors (model TEXT, key TEXT, ids BLOB, "
            "starts BLOB, vectors BLOB, PRIMARY KEY (model, key))"
        )

    def _rows(self, columns: str, table: str, keys: Sequence[str]) -> Iterator[Any]:
        """``SELECT key, <columns> FROM <table>`` for this model's ``keys``, 500 keys a query."""
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), 500):
            batch = unique[i:i + 500]
            marks = ",".join("?" * len(batch))
            yield from self.db.execute(
                f"SELECT key, {columns} FROM {table} WHERE model = ? AND key IN ({marks})",
                [self.model_key, *batch])

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for key, blob in self._rows("vector", "vectors", keys):
            vec = np.frombuffer(blob, dtype=np.float32)
            if vec.shape[0] == self.dimension:
                found[key] = vec
        return found

    def put_many(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO vectors (model, key, vector) VALUES (?, ?, ?)",
                [(self.model_key, k, np.asarray(v, dtype=np.float32).tobytes())
                 for k, v in zip(keys, vectors, strict=True)],
            )

    def get_tokens(self, keys: Sequence[str]) -> dict[str, StoredTokens]:
        found: dict[str, StoredTokens] = {}
        for key, ids_blob, starts_blob, vectors_blob in self._rows(
                "ids, starts, vectors", "token_vectors", keys):
            ids = np.frombuffer(ids_blob, dtype=np.int32)
            starts = np.frombuffer(starts_blob, dtype=np.int32)
            vectors = np.frombuffer(vectors_blob, dtype=np.int8)
            if vectors.size == ids.size * self.dimension and starts.size == ids.size:
                found[key] = (ids, starts, vectors.reshape(ids.size, self.dimension))
        return found

    def put_tokens(self, items: Sequence[tuple[str, StoredTokens]]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO token_vectors (model, key, ids, starts, vectors) "
                "VALUES (?, ?, ?, ?, ?)",
                [(self.model_key, k, np.asarray(ids, dtype=np.int32).tobytes(),
                  np.asarray(starts, dtype=np.int32).tobytes(),
                  np.asarray(vectors, dtype=np.int8).tobytes())
                 for k, (ids, starts, vectors) in items],
            )

    def close(self) -> None:
        self.db.close()


def content_key(model_key: str, text: str) -> str:
    return hashlib.sha256(f"{model_key}\0{text}".encode()).hexdigest()[:32]


# --------------------------------------------------------------------------------------------
# Rate-limit counters shared by every worker process
# --------------------------------------------------------------------------------------------
class RateCounters:
    """Fixed-window counters (key -> count until an expiry time) in one SQLite file, so that
    every worker process of a server counts the same requests. Each change is one short
    IMMEDIATE transaction; expired rows are dropped as they are met and every so often."""

    PRUNE_EVERY = 1000
    ERRORS: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._writes = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(self._connect()) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, "
                             "count INTEGER NOT NULL, expires REAL NOT NULL)")
        except (OSError, sqlite3.Error) as e:
            raise IndexWriteError(
                f"rate-limit counts cannot be kept in {path}: {e}; make the index directory "
                "writable or set QA_RATE_LIMIT_STORAGE to a redis:// URI") from e

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10, isolation_level=None,
                               check_same_thread=False)

    @property
    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "db", None)
        if conn is None:
            conn = self._local.db = self._connect()
        return conn

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Add ``amount`` to ``key`` (a fresh window of ``expiry`` seconds when it has none)."""
        now = time.time()
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT count, expires FROM counters WHERE key = ?",
                             (key,)).fetchone()
            if row is None or row[1] <= now:
                count, expires = amount, now + expiry
            else:
                count, expires = int(row[0]) + amount, float(row[1])
            db.execute("INSERT OR REPLACE INTO counters (key, count, expires) VALUES (?, ?, ?)",
                       (key, count, expires))
            self._writes += 1
            if self._writes % self.PRUNE_EVERY == 0:
                db.execute("DELETE FROM counters WHERE expires <= ?", (now,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return count

    def get(self, key: str) -> int:
        row = self.db.execute("SELECT count FROM counters WHERE key = ? AND expires > ?",
                              (key, time.time())).fetchone()
        return 0 if row is None else int(row[0])

    def expiry(self, key: str) -> float:
        """When ``key``'s window ends (now when it has none)."""
        row = self.db.execute("SELECT expires FROM counters WHERE key = ? AND expires > ?",
                              (key, time.time())).fetchone()
        return time.time() if row is None else float(row[0])

    def clear(self, key: str) -> None:
        self.db.execute("DELETE FROM counters WHERE key = ?", (key,))

    def reset(self) -> int:
        return int(self.db.execute("DELETE FROM counters").rowcount)

    def check(self) -> bool:
        try:
            self.db.execute("SELECT 1 FROM counters LIMIT 1")
        except sqlite3.Error:
            return False
        return True


# --------------------------------------------------------------------------------------------
# Writing a build
# --------------------------------------------------------------------------------------------
class BuildWriter:
    """Writes one build into ``builds/.tmp-<version>`` and publishes it atomically."""

    def __init__(self, layout: Layout, version: str) -> None:
        self.layout = layout
        self.version = version
        self.tmp = layout.builds / f".tmp-{version}"
        self.tmp.mkdir(parents=True)
        self.db = sqlite3.connect(self.tmp / DB_FILE)
        self.db.executescript(SCHEMA)
        self._next_chunk = 0
        self._next_sentence = 0

    def add_document(self, meta: dict[str, Any], text: str, raw: str,
                     raw_offsets: Sequence[int], page_starts: Sequence[int],
                     sections: Sequence[tuple[int, str]], n_chunks: int) -> None:
        self.db.execute(
            "INSERT INTO documents VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (meta["doc_id"], meta["path"], meta["title"], json.dumps(meta["authors"]),
             meta.get("publisher"), meta.get("date"), meta.get("source"), meta["content_hash"],
             text, raw, array("i", raw_offsets).tobytes(), json.dumps(list(page_starts)),
             json.dumps([list(s) for s in sections]), n_chunks),
        )

    def add_chunks(self, rows: Iterable[dict[str, Any]]) -> int:
        """Insert chunks; FAISS ids are assigned in insertion order. Returns the first id."""
        first = self._next_chunk
        for row in rows:
            self.db.execute(
                'INSERT INTO chunks (rowid, chunk_id, doc_id, ordinal, start, "end", text, '
                "section, page, n_tokens, content_key, header, context) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (self._next_chunk, row["chunk_id"], row["doc_id"], row["ordinal"], row["start"],
                 row["end"], row["text"], row["section"], row["page"], row["n_tokens"],
                 row["content_key"], row["header"], row["context"]),
            )
            self._next_chunk += 1
        return first

    def add_sentences(self, doc_id: str,
                      spans: Iterable[tuple[int, int, str, int, str]]) -> None:
        """Insert sentences: start, end, content key, FAISS id of the first chunk holding it,
        and its stemmed terms in order (``terms.term_sequence``: evidence scoring without
        re-tokenizing)."""
        for start, end, key, chunk_rowid, terms in spans:
            self.db.execute(
                'INSERT INTO sentences (rowid, doc_id, start, "end", content_key, chunk_rowid, '
                "terms) VALUES (?,?,?,?,?,?,?)",
                (self._next_sentence, doc_id, start, end, key, chunk_rowid, terms))
            self._next_sentence += 1

    def add_acronyms(self, doc_id: str, pairs: Iterable[tuple[str, str]]) -> None:
        self.db.executemany("INSERT INTO acronyms VALUES (?,?,?)",
                            [(s, lf, doc_id) for s, lf in pairs])

    def add_term_counts(self, counts: dict[str, int]) -> None:
        """Document frequencies (in chunks) of the stemmed terms, for evidence scoring."""
        self.db.executemany("INSERT INTO term_df VALUES (?, ?)", sorted(counts.items()))

    def content_keys(self, table: str) -> list[str]:
        assert table in ("chunks", "sentences")
        return [k for (k,) in self.db.execute(f"SELECT content_key FROM {table} ORDER BY rowid")]

    def finish(self, chunk_vectors: np.ndarray, sentence_vectors: np.ndarray,
               manifest: dict[str, Any], chunk_tokens: Sequence[StoredTokens] | None = None
               ) -> Path:
        """Write vectors (and each chunk's token vectors, when given) and the manifest, fsync,
        verify, publish. Returns the published directory."""
        if chunk_vectors.shape[0] != self._next_chunk:
            raise IndexCorruptError("vector count does not match chunk count (bug)")
        names = [FAISS_FILE, SENTENCE_FILE, DB_FILE]
        if chunk_tokens is not None:
            if len(chunk_tokens) != self._next_chunk:
                raise IndexCorruptError("token vector count does not match chunk count (bug)")
            self._write_tokens(chunk_tokens, int(chunk_vectors.shape[1]))
            names[2:2] = [TOKEN_FILE, TOKEN_OFFSETS_FILE, TOKEN_STARTS_FILE]
        self.db.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')")
        self.db.commit()
        self.db.execute("PRAGMA journal_mode=DELETE")
        self.db.close()
        index_type = write_faiss(self.tmp / FAISS_FILE, chunk_vectors)
        np.save(self.tmp / SENTENCE_FILE, sentence_vectors.astype(np.float32))
        manifest = {
            **manifest,
            "format": FORMAT_VERSION,
            "version": self.version,
            "index_type": index_type,
            "counts": {**manifest.get("counts", {}), "chunks": int(chunk_vectors.shape[0]),
                       "sentences": int(sentence_vectors.shape[0])},
            "files": {name: _sha256(self.tmp / name) for name in names},
            "samples": {name: {"size": (self.tmp / name).stat().st_size,
                               "sha256": _sampled_sha256(self.tmp / name)}
                        for name in names},
        }
        (self.tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        for name in (*names, MANIFEST_FILE):
            _fsync(self.tmp / name)
        fsync_dir(self.tmp)  # the entries naming those files, before anything points at them
        # Counts, dimensions and the load-time file checks (the digests were computed just above
        # from these very files, so hashing large ones whole again would only double the I/O).
        IndexReader(self.tmp).close()
        final = self.layout.build_dir(self.version)
        os.replace(self.tmp, final)
        fsync_dir(self.layout.builds)
        publish(self.layout, self.version)
        return final

    def _write_tokens(self, chunk_tokens: Sequence[StoredTokens], dim: int) -> None:
        """The flat token matrix, each chunk's offset into it, and every word piece's chunk
        frequency (for weighting a question's pieces)."""
        lengths = np.fromiter((ids.size for ids, _, _ in chunk_tokens), dtype=np.int64,
                              count=len(chunk_tokens))
        offsets = np.zeros(len(chunk_tokens) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        matrix = np.lib.format.open_memmap(self.tmp / TOKEN_FILE, mode="w+", dtype=np.int8,
                                           shape=(int(offsets[-1]), dim))
        starts = np.zeros(int(offsets[-1]), dtype=np.int32)
        df: dict[int, int] = {}
        for (ids, piece_starts, vectors), start in zip(chunk_tokens, offsets[:-1].tolist(),
                                                       strict=True):
            matrix[start:start + ids.size] = vectors
            starts[start:start + ids.size] = piece_starts
            for piece in np.unique(ids).tolist():
                df[piece] = df.get(piece, 0) + 1
        matrix.flush()
        del matrix
        np.save(self.tmp / TOKEN_OFFSETS_FILE, offsets)
        np.save(self.tmp / TOKEN_STARTS_FILE, starts)
        self.db.executemany("INSERT INTO piece_df VALUES (?, ?)", sorted(df.items()))

    def abort(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def publish(layout: Layout, version: str) -> None:
    tmp = layout.root / f"CURRENT.tmp{os.getpid()}"
    tmp.write_text(version + "\n")
    _fsync(tmp)
    os.replace(tmp, layout.current)
    fsync_dir(layout.root)


def write_faiss(path: Path, vectors: np.ndarray) -> str:
    import faiss

    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    if vectors.shape[0] >= HNSW_THRESHOLD:
        index: Any = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        kind = "hnsw32"
    else:
        index = faiss.IndexFlatIP(dim)
        kind = "flat"
    if vectors.shape[0]:
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    faiss.write_index(index, str(path))
    return kind


# --------------------------------------------------------------------------------------------
# Reading a published build
# --------------------------------------------------------------------------------------------
def verify_build(build_dir: Path, manifest: dict[str, Any], full: bool = False) -> None:
    """Check a build's files against its manifest; raise IndexCorruptError naming the first bad one.

    With ``full`` every file is hashed whole. Otherwise files up to FULL_CHECK_BYTES are hashed
    whole and larger ones are checked by exact size and a digest of sampled blocks (first and last
    MiB plus evenly spaced 4 KiB blocks): that catches truncation, a damaged header and most
    overwrites in milliseconds; `qa verify` does the full check.
    """
    samples = manifest.get("samples", {})
    for name, digest in manifest.get("files", {}).items():
        path = build_dir / name
        if not path.is_file():
            raise IndexCorruptError(f"{path} is missing: run `qa index --full`")
        sample = samples.get(name)
        size = path.stat().st_size
        if sample and size != sample.get("size"):
            raise IndexCorruptError(
                f"{path} is damaged ({size} bytes, manifest says {sample.get('size')}): "
                "run `qa index --full`")
        if full or not sample or size <= FULL_CHECK_BYTES:
            ok = _sha256(path) == digest
        else:
            ok = _sampled_sha256(path) == sample.get("sha256")
        if not ok:
            raise IndexCorruptError(f"{path} is damaged (checksum mismatch): run `qa index --full`")


class _LRU:
    """A bounded, thread-safe least-recently-used map."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[int, Any] = OrderedDict()
        self._lock = threading.Lock()

    def fetch(self, keys: Iterable[int],
              load: Callable[[list[int]], dict[int, Any]]) -> dict[int, Any]:
        """The values of ``keys``: cached ones from memory, the others from ``load`` (which gets
        the missing keys, each once) and then kept."""
        found, missing = self._lookup(keys)
        if missing:
            loaded = load(missing)
            with self._lock:
                self._data.update(loaded)
                while len(self._data) > self._size:
                    self._data.popitem(last=False)
            found.update(loaded)
        return found

    def _lookup(self, keys: Iterable[int]) -> tuple[dict[int, Any], list[int]]:
        """(the cached values, the keys not cached)."""
        found: dict[int, Any] = {}
        missing: dict[int, None] = {}
        with self._lock:
            for key in keys:
                if key in self._data:
                    self._data.move_to_end(key)
                    found[key] = self._data[key]
                else:
                    missing[key] = None
        return found, list(missing)


class IndexReader:
    """A loaded build: FAISS memory-mapped where possible, SQLite opened read-only per thread.

    ``verify`` is "full" (hash every file whole), True/"auto" (see ``verify_build``) or False.
    """

    def __init__(self, build_dir: Path, verify: bool | str = True,
                 lease: Lease | None = None) -> None:
        import faiss

        self.dir = build_dir
        self.manifest = read_manifest(build_dir)
        self.version = str(self.manifest.get("version", build_dir.name))
        if verify:
            verify_build(build_dir, self.manifest, full=verify == "full")
        try:
            self.faiss = read_faiss(build_dir / FAISS_FILE)
            self.sentence_vectors = np.load(build_dir / SENTENCE_FILE, mmap_mode="r")
        except (RuntimeError, ValueError, OSError) as e:
            raise IndexCorruptError(
                f"cannot load {build_dir}: {e}; run `qa index --full`") from e
        if isinstance(self.faiss, faiss.IndexHNSW):
            self.faiss.hnsw.efSearch = 128
        self._local = threading.local()
        # Every thread's connection, so that closing the reader (or dropping the last reference
        # to it) closes them all, not only the calling thread's.
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        # When the last reference goes (the service switched away and the requests that held
        # it finished), every connection is closed and the lease on the build released.
        self._finalizer = weakref.finalize(self, _release, self._connections,
                                           self._connections_lock, lease)
        self._chunk_rows = _LRU(CHUNK_CACHE_SIZE)
        self._chunk_sentences = _LRU(CHUNK_CACHE_SIZE)
        counts = self.manifest.get("counts", {})
        n_rows = self.sql_one("SELECT count(*) FROM chunks")[0]
        if self.faiss.ntotal != n_rows or n_rows != counts.get("chunks"):
            raise IndexCorruptError(
                f"{build_dir}: {self.faiss.ntotal} vectors but {n_rows} chunk rows; "
                "run `qa index --full`")
        if self.faiss.ntotal and self.faiss.d != self.manifest.get("dimension"):
            raise IndexCorruptError(f"{build_dir}: vector dimension differs from manifest")
        self.token_vectors: np.ndarray | None = None
        self.token_offsets: np.ndarray | None = None
        self.token_starts: np.ndarray | None = None
        if TOKEN_FILE in self.manifest.get("files", {}):
            self._load_tokens(n_rows)
        # Sentence search maps its hits to passages through this, read at open: no query per
        # search. Beyond SENTENCE_SEARCH_LIMIT sentences there is no sentence search.
        self.sentence_owners: np.ndarray | None = (
            self._read_sentence_owners()
            if self.sentence_vectors.shape[0] <= SENTENCE_SEARCH_LIMIT else None)

    def _load_tokens(self, n_rows: int) -> None:
        try:
            vectors = np.load(self.dir / TOKEN_FILE, mmap_mode="r")
            offsets = np.load(self.dir / TOKEN_OFFSETS_FILE)
            starts = np.load(self.dir / TOKEN_STARTS_FILE, mmap_mode="r")
        except (ValueError, OSError) as e:
            raise IndexCorruptError(f"cannot load {self.dir}: {e}; run `qa index --full`") from e
        if (offsets.shape != (n_rows + 1,) or vectors.ndim != 2 or int(offsets[-1]) !=
                vectors.shape[0] or starts.shape != (vectors.shape[0],)
                or (n_rows and vectors.shape[1] != self.faiss.d)):
            raise IndexCorruptError(f"{self.dir}: token vectors do not match the chunks; "
                                    "run `qa index --full`")
        # Plain views of the mappings: slicing a np.memmap builds a memmap object each time.
        self.token_vectors = vectors.view(np.ndarray)
        self.token_offsets, self.token_starts = offsets, starts.view(np.ndarray)

    @property
    def has_token_vectors(self) -> bool:
        return self.token_vectors is not None

    # SQLite connections are per thread: sqlite3 objects must not cross threads.
    @property
    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "db", None)
        if conn is None:
            uri = f"file:{self.dir / DB_FILE}?mode=ro&immutable=1"
            try:
                conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            except sqlite3.Error as e:
                raise IndexCorruptError(f"cannot open {self.dir / DB_FILE}: {e}") from e
            conn.row_factory = sqlite3.Row
            self._local.db = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    def sql_one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        try:
            return self.db.execute(sql, args).fetchone()
        except sqlite3.DatabaseError as e:
            raise IndexCorruptError(f"{self.dir / DB_FILE}: {e}; run `qa index --full`") from e

    def close(self) -> None:
        """Close the SQLite connection of every thread (a later query opens a new one)."""
        self._local = threading.local()
        _close_connections(self._connections, self._connections_lock)

    # -- searches --------------------------------------------------------------------------
    def dense_search(self, query: np.ndarray, k: int,
                     allowed: Sequence[int] | None = None) -> list[tuple[int, float]]:
        """Top ``k`` (FAISS id, inner product), optionally restricted to ``allowed`` ids."""
        import faiss

        k = min(k, self.faiss.ntotal if allowed is None else len(allowed))
        if k <= 0:
            return []
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        if allowed is None:
            scores, ids = self.faiss.search(q, k)
        else:
            selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
            params = (faiss.SearchParametersHNSW(sel=selector, efSearch=128)  # type: ignore[attr-defined]
                      if isinstance(self.faiss, faiss.IndexHNSW)
                      else faiss.SearchParameters(sel=selector))  # type: ignore[call-arg]
            scores, ids = self.faiss.search(q, k, params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def dense_scores(self, query: np.ndarray, rowids: Sequence[int]) -> dict[int, float]:
        """Exact inner products for chosen ids (for hits that only the lexical side found)."""
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        return {int(r): float(self.faiss.reconstruct(int(r)) @ q) for r in rowids}

    def lexical_search(self, match: str, k: int,
                       doc_ids: Sequence[str] | None = None) -> list[tuple[int, float]]:
        """FTS5 BM25 search (higher is better); ``match`` must be a safe FTS5 expression."""
        if not match:
            return []
        if doc_ids:
            marks = ",".join("?" * len(doc_ids))
            sql = (f"SELECT f.rowid, bm25(chunks_fts, 1.0, {CONTEXT_WEIGHT}) AS score "
                   "FROM chunks_fts f "
                   f"JOIN chunks c ON c.rowid = f.rowid WHERE chunks_fts MATCH ? "
                   f"AND c.doc_id IN ({marks}) ORDER BY score LIMIT ?")
            args: list[Any] = [match, *doc_ids, k]
        else:
            sql = (f"SELECT rowid, bm25(chunks_fts, 1.0, {CONTEXT_WEIGHT}) AS score FROM chunks_fts "
                   "WHERE chunks_fts MATCH ? ORDER BY score LIMIT ?")
            args = [match, k]
        return [(int(r[0]), -float(r[1])) for r in self.db.execute(sql, args)]

    def sentence_search(self, query: np.ndarray, k: int,
                        allowed: Sequence[int] | None = None) -> list[tuple[int, float]]:
        """Top ``k`` (chunk FAISS id, similarity of its best sentence), by exact search over the
        sentence vectors; each chunk once. ``allowed`` restricts the chunk ids."""
        n = self.sentence_vectors.shape[0]
        if n == 0 or k <= 0 or self.sentence_owners is None:
            return []
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if allowed is None:
            rows = None
            sims = np.asarray(self.sentence_vectors @ q)
        else:
            # Only the allowed chunks' sentences are scored: the corpus-wide best sentences of
            # a large corpus may all lie outside the filter.
            rows = np.flatnonzero(np.isin(self.sentence_owners,
                                          np.asarray(allowed, dtype=np.int64)))
            if not len(rows):
                return []
            sims = np.asarray(self.sentence_vectors[rows] @ q)
        take = min(len(sims), k * 4)
        top = np.argpartition(-sims, take - 1)[:take]
        top = top[np.argsort(-sims[top])]
        owners = self.sentence_owners[top if rows is None else rows[top]].tolist()
        out: dict[int, float] = {}
        for at, chunk in zip(top.tolist(), owners, strict=True):
            if chunk not in out:
                out[chunk] = float(sims[at])
                if len(out) == k:
                    break
        return list(out.items())

    def _read_sentence_owners(self) -> np.ndarray:
        """The chunk FAISS id of every sentence vector."""
        owners = np.full(self.sentence_vectors.shape[0], -1, dtype=np.int64)
        rows = self.db.execute("SELECT rowid, chunk_rowid FROM sentences").fetchall()
        if rows:
            pairs = np.asarray(rows, dtype=np.int64)
            owners[pairs[:, 0]] = pairs[:, 1]
        return owners

    def rowids_for_documents(self, doc_ids: Sequence[str]) -> list[int]:
        marks = ",".join("?" * len(doc_ids))
        return [int(r[0]) for r in self.db.execute(
            f"SELECT rowid FROM chunks WHERE doc_id IN ({marks})", list(doc_ids))]

    def text_slice(self, doc_id: str, start: int, end: int) -> str | None:
        """``documents.text[start:end]`` computed by SQLite (character offsets)."""
        row = self.db.execute("SELECT substr(text, ?, ?) FROM documents WHERE doc_id = ?",
                              (start + 1, end - start, doc_id)).fetchone()
        return None if row is None else str(row[0])

    def chunks(self, rowids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """The rows of the given chunks (a copy each), with their document's title. Rows of
        recently asked chunks come from memory (a build never changes)."""
        found = self._chunk_rows.fetch(rowids, self._read_chunks)
        return {rowid: dict(row) for rowid, row in found.items()}

    def _read_chunks(self, rowids: list[int]) -> dict[int, dict[str, Any]]:
        marks = ",".join("?" * len(rowids))
        rows = self.db.execute(
            'SELECT c.rowid AS rowid, c.chunk_id, c.doc_id, c.start, c."end", c.text, c.section, '
            "c.page, c.n_tokens, c.header, d.title FROM chunks c JOIN documents d USING (doc_id) "
            f"WHERE c.rowid IN ({marks})", rowids)
        return {int(r["rowid"]): dict(r) for r in rows}

    def sentences_of_chunks(self, rowids: Sequence[int]) -> list[tuple[int, int, int, int, str]]:
        """(chunk FAISS id, sentence id, start, end, terms) of every sentence inside the chunks,
        by chunk id, then start. Recently asked chunks' sentences come from memory."""
        found = self._chunk_sentences.fetch(rowids, self._read_sentences)
        return [span for rowid in sorted(found) for span in found[rowid]]

    def _read_sentences(self, rowids: list[int]) -> dict[int, list[tuple[int, int, int, int, str]]]:
        marks = ",".join("?" * len(rowids))
        # "s.start < c.end" bounds the index range scan on (doc_id, start) from above too;
        # without it SQLite walks every later sentence of the document for each chunk.
        rows = self.db.execute(
            'SELECT c.rowid, s.rowid, s.start, s."end", s.terms FROM chunks c JOIN sentences s '
            'ON s.doc_id = c.doc_id AND s.start >= c.start AND s.start < c."end" '
            'AND s."end" <= c."end" '
            f"WHERE c.rowid IN ({marks}) ORDER BY c.rowid, s.start", rowids)
        found: dict[int, list[tuple[int, int, int, int, str]]] = {r: [] for r in rowids}
        for r in rows:
            found[int(r[0])].append((int(r[0]), int(r[1]), int(r[2]), int(r[3]), str(r[4])))
        return found

    def piece_frequencies(self, pieces: Sequence[int]) -> dict[int, int]:
        """Chunk document frequency of each word-piece id (absent pieces are left out)."""
        return {int(k): df for k, df in self._frequencies("piece_df", "piece", pieces).items()}

    def match_tokens(self, query: np.ndarray, rowids: Sequence[int]) -> TokenMatch | None:
        """Cosines between the question's token vectors (``query``, unit rows) and every stored
        token vector of the given chunks, in one matrix product; None without token vectors."""
        if (self.token_vectors is None or self.token_offsets is None
                or self.token_starts is None or not len(query)):
            return None
        offsets = self.token_offsets
        ids = np.asarray(sorted(set(rowids)), dtype=np.int64)  # memmap reads in ascending order
        starts, ends = offsets[ids], offsets[ids + 1]
        filled = ends > starts
        ids, starts, ends = ids[filled], starts[filled], ends[filled]
        if not len(ids):
            return None
        bounds = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(ends - starts, out=bounds[1:])
        ranges = list(zip(starts.tolist(), ends.tolist(), bounds[:-1].tolist(), strict=True))
        # int8 rows straight into one float32 block: no concatenated int8 copy in between.
        tokens = np.empty((int(bounds[-1]), self.token_vectors.shape[1]), dtype=np.float32)
        piece_starts = np.empty(int(bounds[-1]), dtype=self.token_starts.dtype)
        for a, b, at in ranges:
            tokens[at:at + b - a] = self.token_vectors[a:b]
            piece_starts[at:at + b - a] = self.token_starts[a:b]
        # (tokens x dim) @ (dim x pieces), transposed: the cheaper product for BLAS here.
        sims = (tokens @ np.asarray(query, dtype=np.float32).T).T
        sims *= 1.0 / TOKEN_SCALE
        return TokenMatch(ids, bounds, sims, piece_starts)

    def term_frequencies(self, terms: Sequence[str]) -> dict[str, int]:
        """Chunk document frequency of each stemmed term (absent terms are left out)."""
        return {str(k): df for k, df in self._frequencies("term_df", "term", terms).items()}

    def _frequencies(self, table: str, column: str, keys: Sequence[Any]) -> dict[Any, int]:
        """``df`` of each of ``keys`` found in a frequency table."""
        unique = sorted(set(keys))
        if not unique:
            return {}
        marks = ",".join("?" * len(unique))
        rows = self.db.execute(f"SELECT {column}, df FROM {table} WHERE {column} IN ({marks})",
                               unique)
        return {r[0]: int(r[1]) for r in rows}

    def acronyms(self) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self.db.execute(
            "SELECT DISTINCT short, long FROM acronyms ORDER BY short")]

    def documents(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT doc_id, path, title, authors, publisher, date, source, content_hash, "
            "n_chunks, length(text) AS n_chars FROM documents ORDER BY title")
        return [_document_row(r) for r in rows]

    def document(self, doc_id: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT doc_id, path, title, authors, publisher, date, source, content_hash, n_chunks, "
            "length(text) AS n_chars, text, raw, raw_offsets, page_starts, sections "
            "FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        if row is None:
            return None
        doc = _document_row(row)
        doc["text"] = row["text"]
        doc["raw"] = row["raw"]
        doc["raw_offsets"] = array("i", row["raw_offsets"])
        doc["page_starts"] = json.loads(row["page_starts"])
        doc["sections"] = [tuple(s) for s in json.loads(row["sections"])]
        return doc

    def document_text(self, doc_id: str) -> str | None:
        row = self.db.execute("SELECT text FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        return None if row is None else str(row[0])

    def document_chunks(self, doc_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            'SELECT rowid, chunk_id, doc_id, ordinal, start, "end", text, section, page, n_tokens, '
            "content_key, header, context FROM chunks WHERE doc_id = ? ORDER BY ordinal",
            (doc_id,))
        return [dict(r) for r in rows]

    def document_sentences(self, doc_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            'SELECT rowid, start, "end", content_key FROM sentences WHERE doc_id = ? '
            "ORDER BY start", (doc_id,))
        return [dict(r) for r in rows]

    def document_acronyms(self, doc_id: str) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self.db.execute(
            "SELECT short, long FROM acronyms WHERE doc_id = ? ORDER BY rowid", (doc_id,))]


def _release(connections: list[sqlite3.Connection], lock: threading.Lock,
             lease: Lease | None) -> None:
    _close_connections(connections, lock)
    if lease is not None:
        lease.release()


def _close_connections(connections: list[sqlite3.Connection], lock: threading.Lock) -> None:
    with lock:
        closing = list(connections)
        connections.clear()
    for conn in closing:
        conn.close()


def read_faiss(path: Path) -> Any:
    """Memory-map the vectors where FAISS allows: IO_FLAG_MMAP_IFC maps the codes of flat
    storage, for IndexFlat and for the storage of IndexHNSWFlat, so loading reads only the HNSW
    graph and worker processes share one copy of the vectors in the page cache. Older FAISS
    versions fall back to IO_FLAG_MMAP, then to reading the file into memory."""
    import faiss

    for flag in ("IO_FLAG_MMAP_IFC", "IO_FLAG_MMAP"):
        if hasattr(faiss, flag):
            with contextlib.suppress(RuntimeError):
                return faiss.read_index(str(path), getattr(faiss, flag))
    return faiss.read_index(str(path))


def open_current(index_dir: Path, verify: bool | str = True) -> IndexReader:
    layout = Layout(index_dir)
    version = layout.current_version()
    if version is None:
        raise NoIndexError(f"no index has been built in {index_dir}: run `qa index`")
    build = layout.build_dir(version)
    if not build.is_dir():
        raise IndexCorruptError(
            f"{layout.current} names build {version}, which is missing: run `qa index --full`")
    return IndexReader(build, verify=verify)


def _document_row(r: sqlite3.Row) -> dict[str, Any]:
    return {
        "doc_id": r["doc_id"], "path": r["path"], "title": r["title"],
        "authors": json.loads(r["authors"]), "publisher": r["publisher"], "date": r["date"],
        "source": r["source"], "content_hash": r["content_hash"], "chunks": r["n_chunks"],
        "chars": r["n_chars"],
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sampled_sha256(path: Path) -> str:
    """sha256 of the size, the first and last MiB and SAMPLE_BLOCKS evenly spaced blocks."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    blocks = [(0, SAMPLE_EDGE_BYTES), (max(0, size - SAMPLE_EDGE_BYTES), SAMPLE_EDGE_BYTES)]
    blocks += [(offset, SAMPLE_BLOCK_BYTES)
               for offset in range(0, size, max(1, size // SAMPLE_BLOCKS))]
    with open(path, "rb") as fh:
        for offset, length in blocks:
            fh.seek(offset)
            digest.update(fh.read(length))
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` durable. File systems that cannot fsync a
    directory (EINVAL) are skipped; any other failure (EIO ...) is raised."""
    try:
        _fsync(path)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
