"""QAService: the one core object that the CLI, the web app and the tests all call.

Owns the published index a process is serving, switching to a newly published version by itself
(requests in flight keep the reader they started with), question validation, the answer cache and
the response shape of ``ask``.
"""

from __future__ import annotations

import logging
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from qa import evidence, retrieval, store
from qa.answering import compose_answer
from qa.config import Settings
from qa.errors import (
    ConfigError,
    IndexCorruptError,
    InvalidQuestionError,
    NoIndexError,
    UnknownDocumentError,
    new_error_id,
)
from qa.indexing import PIPELINE_VERSION, BuildResult, Progress, build_index
from qa.snapshot import Snapshot

WARM_UP_QUESTIONS = 3  # asked by ``QAService.load`` before a process serves

log = logging.getLogger(__name__)


class QAService:
    def __init__(self, settings: Settings | None = None, embedder: Any = None,
                 gauge: Any = None) -> None:
        """``gauge``: the server's count of requests in flight (``onnx_sessions.LoadGauge``),
        by which the query encoder chooses its threads."""
        self.settings = settings or Settings.load()
        self.layout = store.Layout(self.settings.index_dir)
        self._embedder = embedder
        self.gauge = gauge
        # Replaced whole, in one assignment; a request keeps the snapshot it started with.
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()
        self._checked_at = 0.0
        self.reload_error: str | None = None
        self._cache: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
        self._cache_lock = threading.Lock()
        # BM25 and the question's term weights are prepared here while the encoder runs (ONNX
        # and SQLite release the GIL): about 0.7 ms off each answer's latency.
        self._lexical_helpers = ThreadPoolExecutor(max_workers=4,  # as many as request threads
                                                   thread_name_prefix="qa-lexical")

    # -- the index being served ------------------------------------------------------------
    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from qa.embedding import Embedder

            self._embedder = Embedder(self.settings.model, backend=self.settings.encoder,
                                      onnx_dir=self.layout.cache / "onnx",
                                      threads=self.settings.query_threads or None,
                                      gauge=self.gauge,
                                      query_precision=self.settings.query_precision)
        return self._embedder

    def snapshot(self) -> Snapshot:
        """The current snapshot, reloading when a new version was published (checked at most
        once per ``reload_interval``). Raises NoIndexError before the first build."""
        now = time.monotonic()
        snapshot = self._snapshot
        if snapshot is None or now - self._checked_at >= self.settings.reload_interval:
            with self._lock:
                if (self._snapshot is None
                        or now - self._checked_at >= self.settings.reload_interval):
                    self._checked_at = now
                    self._maybe_reload()
            snapshot = self._snapshot
        if snapshot is None:
            raise NoIndexError(f"no index has been built in {self.layout.root}: run `qa index`")
        return snapshot

    def reader(self) -> store.IndexReader:
        """The current snapshot's reader (see ``snapshot``)."""
        return self.snapshot().reader

    def _maybe_reload(self) -> None:
        version = self.layout.current_version()
        current = self._snapshot
        if version is None or (current is not None and current.version == version):
            return
        try:
            reader = store.open_leased(self.layout, version)
            self._check_model(reader)
            snapshot = Snapshot.of(reader)
        except (IndexCorruptError, ConfigError) as e:
            if current is None:
                raise
            # The public status names no path: the details are in the log, under the error id.
            error_id = new_error_id()
            self.reload_error = (f"kept version {current.version}: version {version} could not "
                                 f"be loaded ({e.code}; error id {error_id})")
            log.error("not switching to index %s (error id %s): %s", version, error_id, e)
            return
        if snapshot.built_by != PIPELINE_VERSION:
            log.warning("index %s was built by pipeline version %s, this code builds version %s: "
                        "it is served as it is; run `qa index` to rebuild it", version,
                        snapshot.built_by, PIPELINE_VERSION)
        self._snapshot = snapshot  # the one switch
        self.reload_error = None
        with self._cache_lock:
            self._cache.clear()
        log.info("serving index version %s", version)

    def _check_model(self, reader: store.IndexReader) -> None:
        built_with = reader.manifest.get("params", {}).get("model")
        if built_with != self.embedder.model_key:
            raise ConfigError(
                f"index {reader.version} was built with model {built_with!r} but settings say "
                f"{self.embedder.model_key!r}: run `qa index --full`")

    def load(self) -> QAService:
        """Open the index, warm the encoder, and answer a few questions made from the documents'
        titles (neither cached nor counted) now rather than on the first requests: a new
        worker's first answers otherwise took 25-75 ms instead of 7 (the index's pages, the
        chunk cache, the encoder's first runs, patterns compiled on first use)."""
        reader = self.reader()
        self.embedder.encode_query("warm up")
        for title in reader.some_titles(WARM_UP_QUESTIONS):
            self.ask(title[:self.settings.max_question_chars], use_cache=False)
        return self

    # -- questions -------------------------------------------------------------------------
    def clean_question(self, question: Any) -> str:
        if not isinstance(question, str):
            raise InvalidQuestionError("question must be a string")
        text = "".join(" " if unicodedata.category(c) in ("Cc", "Cs") else c for c in question)
        text = " ".join(text.split())
        if not text:
            raise InvalidQuestionError("question is empty")
        if len(text) > self.settings.max_question_chars:
            raise InvalidQuestionError(
                f"question is {len(text)} characters long; the limit is "
                f"{self.settings.max_question_chars}")
        return text

    def _clean_doc_ids(self, reader: store.IndexReader,
                       doc_ids: Sequence[str] | None) -> list[str] | None:
        if not doc_ids:
            return None
        known = set(reader.manifest.get("documents", {}))
        unknown = [d for d in doc_ids if d not in known]
        if unknown:
            raise UnknownDocumentError(f"unknown document id(s): {', '.join(unknown)}")
        return sorted(set(doc_ids))

    def search(self, question: Any, k: int | None = None, doc_ids: Sequence[str] | None = None,
               mode: str = "hybrid") -> dict[str, Any]:
        """Passages only: ``{"question", "passages", "index_version", "timings_ms"}``."""
        started = time.perf_counter()
        text = self.clean_question(question)
        snapshot = self.snapshot()
        reader = snapshot.reader
        hits, timings, _ = self._retrieve(snapshot, text, k, doc_ids, mode)
        timings["total"] = _ms(started)
        return {"question": text, "passages": [h.to_dict() for h in hits],
                "index_version": reader.version, "timings_ms": timings}

    def ask(self, question: Any, top_k: int | None = None,
            doc_ids: Sequence[str] | None = None, use_cache: bool = True,
            trace: dict[str, Any] | None = None) -> dict[str, Any]:
        """The full response object of the answers issue (and of ``POST /api/v1/answer``).
        ``use_cache``: answer from the cache and keep the answer there. ``trace``: filled with
        the feature matrices scored on the way (for training; the cache is bypassed)."""
        started = time.perf_counter()
        text = self.clean_question(question)
        snapshot = self.snapshot()
        reader = snapshot.reader
        k = top_k or self.settings.top_k
        key = (text, k, tuple(sorted(doc_ids or ())), reader.version)
        cached = None
        if use_cache and trace is None:
            with self._cache_lock:
                cached = self._cache.get(key)
                if cached is not None:
                    self._cache.move_to_end(key)
        if cached is not None:
            return {**cached, "timings_ms": {"total": _ms(started), "cached": True}}
        hits, timings, qterms = self._retrieve(snapshot, text, k, doc_ids, "hybrid", trace)
        t0 = time.perf_counter()
        threshold = self.settings.abstain_threshold
        answer = compose_answer(reader, text, hits, qterms=qterms,
                                threshold=None if threshold < 0 else threshold,
                                max_sentences=self.settings.max_answer_sentences, trace=trace)
        timings["answer"] = _ms(t0)
        timings["total"] = _ms(started)
        response = {
            "question": text,
            "answer": answer.to_dict(),
            "citations": [c.to_dict() for c in answer.citations],
            "passages": [h.to_dict() for h in hits],
            "index_version": reader.version,
            "timings_ms": timings,
        }
        if self.settings.cache_size and use_cache and trace is None:
            with self._cache_lock:
                self._cache[key] = response
                while len(self._cache) > self.settings.cache_size:
                    self._cache.popitem(last=False)
        return response

    def _retrieve(self, snapshot: Snapshot, text: str, k: int | None,
                  doc_ids: Sequence[str] | None, mode: str, trace: dict[str, Any] | None = None
                  ) -> tuple[list[retrieval.Hit], dict[str, Any], evidence.QueryTerms]:
        reader = snapshot.reader
        if mode not in retrieval.MODES:
            raise ConfigError(f"unknown retrieval mode {mode!r}; choose from {retrieval.MODES}")
        filter_ids = self._clean_doc_ids(reader, doc_ids)
        query = retrieval.prepare_query(text, snapshot.acronyms, snapshot.authors)
        s = self.settings
        lexical = self._lexical_helpers.submit(retrieval.prepare_lexical, reader, query,
                                               candidates=s.candidates, mode=mode,
                                               doc_ids=filter_ids)
        t0 = time.perf_counter()
        late = None
        if mode == "lexical":
            vector = np.zeros((1, int(reader.manifest.get("dimension", 1))), dtype=np.float32)
        elif (mode == "hybrid" and self.settings.rerank and self.settings.late_interaction
              and reader.has_token_vectors):
            vector, tokens = self.embedder.encode_query_with_tokens(query.dense_text)
            late = evidence.late_query(reader, tokens.ids, tokens.pieces, tokens.vectors,
                                       tokens.starts, ignore=query.name_spans,
                                       aliases=query.alias_spans)
        else:
            vector = self.embedder.encode_query(query.dense_text)
        timings: dict[str, Any] = {"encode": _ms(t0)}
        t1 = time.perf_counter()
        weights = retrieval.Weights(dense=s.dense_weight, sentence=s.sentence_weight,
                                    lexical=s.lexical_weight, rrf_k=s.rrf_k,
                                    rerank=bool(s.rerank))
        hits, qterms = retrieval.search(reader, query, vector, k=k or s.top_k,
                                        candidates=s.candidates, weights=weights, mode=mode,
                                        doc_ids=filter_ids, late=late,
                                        lexical_side=lexical.result(), trace=trace)
        timings["retrieve"] = _ms(t1)
        return hits, timings, qterms

    # -- documents and status --------------------------------------------------------------
    def documents(self) -> list[dict[str, Any]]:
        return self.reader().documents()

    def document(self, doc_id: str) -> dict[str, Any]:
        reader = self.reader()
        doc = reader.document(doc_id)
        if doc is None:
            raise UnknownDocumentError(f"no document with id {doc_id!r}")
        doc["chunk_spans"] = [
            {"id": c["chunk_id"], "start": c["start"], "end": c["end"], "section": c["section"],
             "page": c["page"]} for c in reader.document_chunks(doc_id)]
        return doc

    def status(self) -> dict[str, Any]:
        reader = self.reader()
        manifest = reader.manifest
        counts = manifest.get("counts", {})
        return {
            "version": reader.version,
            "created": manifest.get("created"),
            "documents": counts.get("documents", 0),
            "chunks": counts.get("chunks", 0),
            "model": manifest.get("params", {}).get("model"),
            "index_type": manifest.get("index_type"),
            "encoder": self.embedder.backend,
            "reload_error": self.reload_error,
            # Built by older text handling (chunking, stored terms ...): `qa index` rebuilds it.
            "stale": manifest.get("params", {}).get("pipeline") != PIPELINE_VERSION,
        }

    def index(self, full: bool = False, progress: Progress | None = None,
              lock_wait: float = 0.0) -> BuildResult:
        """Incrementally rebuild and publish. Other processes notice the new version by
        themselves (within ``reload_interval``); this service checks on its next question."""
        result = build_index(self.settings, full=full, progress=progress,
                             embedder=self._embedder, lock_wait=lock_wait)
        with self._lock:
            self._checked_at = float("-inf")
        return result


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)
