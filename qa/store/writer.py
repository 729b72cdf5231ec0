"""Writing one build: ``BuildWriter`` fills ``builds/.tmp-<version>/`` (the SQLite schema with its
FTS5 table, the FAISS file, sentence and token vectors, the manifest with checksums), fsyncs it,
checks that it loads, renames it into place and publishes it. Never writes into a published build.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qa.errors import IndexCorruptError
from qa.store import compression
from qa.store.layout import (
    DB_FILE,
    FAISS_FILE,
    FORMAT_VERSION,
    MANIFEST_FILE,
    SENTENCE_FILE,
    TOKEN_CODEC_FILE,
    TOKEN_CODES_FILE,
    TOKEN_FILE,
    TOKEN_OFFSETS_FILE,
    TOKEN_STARTS_FILE,
    Layout,
    fsync_dir,
    fsync_file,
    publish,
)
from qa.store.reader import IndexReader
from qa.store.tokens import StoredTokens
from qa.store.verification import file_sha256, sampled_sha256

log = logging.getLogger(__name__)

HNSW_THRESHOLD = 200_000
# From this many chunks on, an "auto" token store is product-quantized (``compression``: about
# 11 KB a chunk instead of 43 KB; bench/RESULTS.md has what it costs in quality); below, int8.
TOKEN_PQ_THRESHOLD = 20_000
TOKEN_STORES = ("auto", "int8", "pq")

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
               manifest: dict[str, Any], chunk_tokens: Sequence[StoredTokens] | None = None,
               token_store: str = "auto") -> Path:
        """Write vectors (and each chunk's token vectors, when given, in the ``token_store``
        chosen: "int8", "pq" or "auto" by size) and the manifest, fsync, verify, publish.
        Returns the published directory."""
        if chunk_vectors.shape[0] != self._next_chunk:
            raise IndexCorruptError("vector count does not match chunk count (bug)")
        names = [FAISS_FILE, SENTENCE_FILE, DB_FILE]
        if chunk_tokens is not None:
            if len(chunk_tokens) != self._next_chunk:
                raise IndexCorruptError("token vector count does not match chunk count (bug)")
            kind = self._write_tokens(chunk_tokens, int(chunk_vectors.shape[1]), token_store)
            names[2:2] = ([TOKEN_FILE] if kind == "int8" else [TOKEN_CODES_FILE, TOKEN_CODEC_FILE]
                          ) + [TOKEN_OFFSETS_FILE, TOKEN_STARTS_FILE]
            manifest = {**manifest, "token_store": kind}
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
            "files": {name: file_sha256(self.tmp / name) for name in names},
            "samples": {name: {"size": (self.tmp / name).stat().st_size,
                               "sha256": sampled_sha256(self.tmp / name)}
                        for name in names},
        }
        (self.tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        for name in (*names, MANIFEST_FILE):
            fsync_file(self.tmp / name)
        fsync_dir(self.tmp)  # the entries naming those files, before anything points at them
        # Counts, dimensions and the load-time file checks (the digests were computed just above
        # from these very files, so hashing large ones whole again would only double the I/O).
        IndexReader(self.tmp).close()
        final = self.layout.build_dir(self.version)
        os.replace(self.tmp, final)
        fsync_dir(self.layout.builds)
        publish(self.layout, self.version)
        return final

    def _write_tokens(self, chunk_tokens: Sequence[StoredTokens], dim: int,
                      token_store: str) -> str:
        """The flat token matrix (int8 vectors, or product-quantized codes and their codec),
        each chunk's offset into it, and every word piece's chunk frequency (for weighting a
        question's pieces). Returns the kind of store written."""
        lengths = np.fromiter((ids.size for ids, _, _ in chunk_tokens), dtype=np.int64,
                              count=len(chunk_tokens))
        offsets = np.zeros(len(chunk_tokens) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        n_pieces = int(offsets[-1])
        kind = token_store_kind(token_store, len(chunk_tokens), n_pieces, dim)
        codec = _train_codec(chunk_tokens, offsets) if kind == "pq" else None
        matrix = (np.lib.format.open_memmap(self.tmp / TOKEN_FILE, mode="w+", dtype=np.int8,
                                            shape=(n_pieces, dim)) if codec is None else
                  np.lib.format.open_memmap(self.tmp / TOKEN_CODES_FILE, mode="w+",
                                            dtype=np.uint8,
                                            shape=(n_pieces, compression.code_size(codec))))
        starts = np.zeros(n_pieces, dtype=np.int32)
        df: dict[int, int] = {}
        for (ids, piece_starts, vectors), start in zip(chunk_tokens, offsets[:-1].tolist(),
                                                       strict=True):
            matrix[start:start + ids.size] = (vectors if codec is None
                                              else compression.encode(codec, vectors))
            starts[start:start + ids.size] = piece_starts
            for piece in np.unique(ids).tolist():
                df[piece] = df.get(piece, 0) + 1
        matrix.flush()
        del matrix
        if codec is not None:
            compression.save(codec, self.tmp / TOKEN_CODEC_FILE)
        np.save(self.tmp / TOKEN_OFFSETS_FILE, offsets)
        np.save(self.tmp / TOKEN_STARTS_FILE, starts)
        self.db.executemany("INSERT INTO piece_df VALUES (?, ?)", sorted(df.items()))
        return kind

    def abort(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def token_store_kind(setting: str, chunks: int, pieces: int, dim: int) -> str:
    """The token store a build of ``chunks`` chunks holding ``pieces`` word pieces gets:
    "pq" when asked or ("auto") from TOKEN_PQ_THRESHOLD chunks on, provided there are enough
    pieces to train a quantizer on; else "int8"."""
    if setting not in TOKEN_STORES:
        raise ValueError(f"unknown token store {setting!r}")
    wanted = setting == "pq" or (setting == "auto" and chunks >= TOKEN_PQ_THRESHOLD)
    if wanted and not compression.can_train(pieces, dim):
        log.warning("too few token vectors (%d) to train a quantizer: stored as int8", pieces)
        return "int8"
    return "pq" if wanted else "int8"


def _train_codec(chunk_tokens: Sequence[StoredTokens], offsets: np.ndarray) -> Any:
    """A product quantizer trained on a seeded sample of all the build's pieces."""
    rows = compression.sample_rows(int(offsets[-1]))
    owners = np.searchsorted(offsets, rows, side="right") - 1
    sample = np.stack([chunk_tokens[c][2][r - offsets[c]]
                       for c, r in zip(owners.tolist(), rows.tolist(), strict=True)])
    return compression.train(sample)


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
