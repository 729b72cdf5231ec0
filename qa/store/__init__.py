"""The index on disk, and the only SQLite data of the service.

A build is a directory ``index/builds/<version>/`` holding ``vectors.faiss`` (chunk vectors, inner
product on unit vectors), ``sentences.npy`` (sentence vectors for answer selection), optional token
vectors, ``chunks.sqlite`` (documents, chunks, an FTS5 table over chunk text, sentences, acronyms)
and ``manifest.json``. It is written completely in a temporary directory, fsynced and verified,
then published by replacing the small pointer file ``index/CURRENT``.

Modules, each owning one thing:

- ``layout``: builds/, the CURRENT pointer and ``publish``, the build lock, leases, leftovers
- ``writer``: ``BuildWriter``, the SQLite schema and the FAISS file of a new build
- ``reader``: ``IndexReader``, ``open_current``, ``open_leased`` and the searches of a build
- ``verification``: a build's files checked against the checksums of its manifest
- ``cache``: the embedding cache keyed by model and content hash
- ``counters``: the rate-limit counters that worker processes share
- ``feedback``: answer feedback, kept beside the builds across rebuilds
- ``tokens``: the int8 token vectors of late interaction; ``compression``: their product-quantized
  form for large builds; ``lru``: the reader's row cache

What it must not touch: the package never embeds text and never ranks (it returns ids and raw
scores; ``qa.retrieval`` and ``qa.evidence`` decide), reads no environment and no settings
object. It is the only importer of faiss and sqlite3 in ``qa`` and holds every SQL statement.

Callers use the names re-exported here (``from qa import store; store.open_current(...)``).
Tunable constants (``reader.CHUNK_CACHE_SIZE``, ``writer.HNSW_THRESHOLD``, the sampling sizes
of ``verification``) are read from their own module, so that is the one to patch in a test.
"""

from __future__ import annotations

from qa.store.cache import EmbeddingCache, content_key
from qa.store.counters import RateCounters
from qa.store.feedback import FeedbackStore
from qa.store.layout import (
    DB_FILE,
    FAISS_FILE,
    FORMAT_VERSION,
    KEEP_BUILDS,
    MANIFEST_FILE,
    SENTENCE_FILE,
    TOKEN_CODEC_FILE,
    TOKEN_CODES_FILE,
    TOKEN_FILE,
    TOKEN_OFFSETS_FILE,
    TOKEN_STARTS_FILE,
    Layout,
    Lease,
    build_lock,
    clean_leftovers,
    fsync_dir,
    new_version,
    publish,
)
from qa.store.reader import IndexReader, open_current, open_leased, read_faiss
from qa.store.sentence_terms import SentenceTerms
from qa.store.tokens import StoredTokens, TokenMatch, quantize_tokens
from qa.store.writer import BuildWriter, write_faiss

__all__ = [
    "DB_FILE",
    "FAISS_FILE",
    "FORMAT_VERSION",
    "KEEP_BUILDS",
    "MANIFEST_FILE",
    "SENTENCE_FILE",
    "TOKEN_CODEC_FILE",
    "TOKEN_CODES_FILE",
    "TOKEN_FILE",
    "TOKEN_OFFSETS_FILE",
    "TOKEN_STARTS_FILE",
    "BuildWriter",
    "EmbeddingCache",
    "FeedbackStore",
    "IndexReader",
    "Layout",
    "Lease",
    "RateCounters",
    "SentenceTerms",
    "StoredTokens",
    "TokenMatch",
    "build_lock",
    "clean_leftovers",
    "content_key",
    "fsync_dir",
    "new_version",
    "open_current",
    "open_leased",
    "publish",
    "quantize_tokens",
    "read_faiss",
    "write_faiss",
]
