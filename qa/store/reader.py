"""Reading a published build: ``IndexReader`` (FAISS memory-mapped where possible, SQLite opened
read-only per thread, checked against its manifest at load), ``open_current`` and ``open_leased``,
the dense, lexical (FTS5 BM25), sentence and token searches, and the document and chunk rows that
answers quote. Returns ids and scores; the ranking of them is the business of ``qa.retrieval``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import weakref
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qa.errors import IndexCorruptError, NoIndexError
from qa.store import compression
from qa.store.layout import (
    DB_FILE,
    FAISS_FILE,
    SENTENCE_FILE,
    TOKEN_CODEC_FILE,
    TOKEN_CODES_FILE,
    TOKEN_FILE,
    TOKEN_OFFSETS_FILE,
    TOKEN_STARTS_FILE,
    Layout,
    Lease,
    read_manifest,
)
from qa.store.lru import LRU
from qa.store.sentence_terms import ChunkSentences, SentenceTerms, Span, gathered
from qa.store.tokens import TOKEN_SCALE, TokenMatch
from qa.store.verification import verify_build

log = logging.getLogger(__name__)

# Sentence-level search is an exact scan of the memory-mapped sentence vectors, which grows with
# the corpus; past this many sentences it is skipped and the first stage uses chunk vectors and
# BM25 alone (sentence evidence for reranking still reads only the candidates' sentences).
SENTENCE_SEARCH_LIMIT = 200_000
# Chunks whose rows and sentences a reader keeps in memory, least recently asked dropped first:
# every question reads those of its ~35 candidates, mostly the same few hundred of a corpus.
CHUNK_CACHE_SIZE = 4096
CONTEXT_WEIGHT = 0.5  # BM25 weight of the title/authors/section column against the chunk text


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
        self._chunk_rows = LRU(CHUNK_CACHE_SIZE)
        self._chunk_sentences = LRU(CHUNK_CACHE_SIZE)
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
        self.token_codec: Any = None  # the product quantizer of a "pq" token store
        # (codec, its lookup-table scorer or None): made on first use for the codec in place.
        self._token_scorer: tuple[Any, compression.CodeScorer | None] = (None, None)
        files = self.manifest.get("files", {})
        if TOKEN_FILE in files or TOKEN_CODES_FILE in files:
            self._load_tokens(n_rows, TOKEN_CODES_FILE in files)
        # Sentence search maps its hits to passages through this, read at open: no query per
        # search. Beyond SENTENCE_SEARCH_LIMIT sentences there is no sentence search.
        self.sentence_owners: np.ndarray | None = (
            self._read_sentence_owners()
            if self.sentence_vectors.shape[0] <= SENTENCE_SEARCH_LIMIT else None)

    def _load_tokens(self, n_rows: int, quantized: bool) -> None:
        """Token vectors: int8 rows (``token_vectors``), or, in a "pq" store, uint8 codes in
        their place and the codec that decodes them (``token_codec``)."""
        try:
            vectors = np.load(self.dir / (TOKEN_CODES_FILE if quantized else TOKEN_FILE),
                              mmap_mode="r")
            offsets = np.load(self.dir / TOKEN_OFFSETS_FILE)
            starts = np.load(self.dir / TOKEN_STARTS_FILE, mmap_mode="r")
            if quantized:
                self.token_codec = compression.load(self.dir / TOKEN_CODEC_FILE)
        except (ValueError, OSError, RuntimeError) as e:
            raise IndexCorruptError(f"cannot load {self.dir}: {e}; run `qa index --full`") from e
        width = (self.token_codec.sa_code_size() if quantized else self.faiss.d)
        if (offsets.shape != (n_rows + 1,) or vectors.ndim != 2 or int(offsets[-1]) !=
                vectors.shape[0] or starts.shape != (vectors.shape[0],)
                or (n_rows and vectors.shape[1] != width)
                or (quantized and self.token_codec.d != self.faiss.d)):
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

    def sentences_with_terms(self, rowids: Sequence[int]) -> tuple[list[Span], SentenceTerms]:
        """(chunk FAISS id, sentence id, start, end, terms) of every sentence inside the chunks,
        by chunk id, then start, and the same sentences' stored terms as numbers
        (``SentenceTerms``), so that a question's terms are found in all of them at once.
        Recently asked chunks' sentences come from memory."""
        found = self._chunk_sentences.fetch(rowids, self._read_sentences)
        return gathered([found[rowid] for rowid in sorted(found)])

    def _read_sentences(self, rowids: list[int]) -> dict[int, ChunkSentences]:
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
        return {rowid: ChunkSentences.of(spans) for rowid, spans in found.items()}

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
        # int8 rows straight into one float32 block: no concatenated int8 copy in between (or
        # the codes into one uint8 block, scored by lookup tables or else decoded at once).
        codec = self.token_codec
        tokens = np.empty((int(bounds[-1]), self.token_vectors.shape[1]),
                          dtype=np.float32 if codec is None else np.uint8)
        piece_starts = np.empty(int(bounds[-1]), dtype=self.token_starts.dtype)
        for a, b, at in ranges:
            tokens[at:at + b - a] = self.token_vectors[a:b]
            piece_starts[at:at + b - a] = self.token_starts[a:b]
        scorer = self._scorer(codec)
        if scorer is not None:
            return TokenMatch(ids, bounds, scorer.cosines(query, tokens), piece_starts)
        if codec is not None:
            tokens = compression.decode(codec, tokens)
        # (tokens x dim) @ (dim x pieces), transposed: the cheaper product for BLAS here.
        sims = (tokens @ np.asarray(query, dtype=np.float32).T).T
        if codec is None:
            sims *= 1.0 / TOKEN_SCALE
        return TokenMatch(ids, bounds, sims, piece_starts)

    def _scorer(self, codec: Any) -> compression.CodeScorer | None:
        """The lookup-table scorer of ``codec`` (made on first use, again if the codec is
        replaced); None without a codec or for one that is not plain PQ."""
        if codec is None:
            return None
        made_for, scorer = self._token_scorer
        if made_for is not codec:
            scorer = compression.scorer(codec)
            self._token_scorer = (codec, scorer)
        return scorer

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

    def some_titles(self, n: int) -> list[str]:
        """Up to ``n`` documents' titles (not empty), in the order they were stored."""
        return [str(r[0]).strip() for r in self.db.execute(
            "SELECT title FROM documents WHERE trim(coalesce(title, '')) != '' "
            "ORDER BY rowid LIMIT ?", (n,))]

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


def _document_row(r: sqlite3.Row) -> dict[str, Any]:
    return {
        "doc_id": r["doc_id"], "path": r["path"], "title": r["title"],
        "authors": json.loads(r["authors"]), "publisher": r["publisher"], "date": r["date"],
        "source": r["source"], "content_hash": r["content_hash"], "chunks": r["n_chunks"],
        "chars": r["n_chars"],
    }
