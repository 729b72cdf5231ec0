"""Building and updating the index: only changed content is embedded, every build is published whole.

Owns the build procedure: scan the corpus, reuse unchanged documents from the published build, run
normalization and chunking for new or changed ones, embed what the cache lacks, write and publish a
new version through ``store``. Reports progress through a callback; never prints.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from qa import chunking, evidence, store, tables, terms, textclean
from qa.acronyms import find_acronyms, gloss
from qa.config import Settings
from qa.corpus import (
    Document,
    SourceFile,
    UnreadableDocument,
    check_corpus_dir,
    discover,
    load_document,
    page_at,
)
from qa.errors import CorpusError, IndexCorruptError, NoIndexError

log = logging.getLogger(__name__)

# Bump when normalization, chunking, acronym rules, the embedded text or the stored sentence terms
# change: it forces a full rebuild. 9: tables keep their rows (qa.tables). 10: the token store's
# kind (int8 or product-quantized) is a build parameter and is named in the manifest.
PIPELINE_VERSION = "10"
HEADER_SECTION_CHARS = 80

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class BuildResult:
    documents: int
    chunks: int
    embedded: int
    removed: int
    version: str
    seconds: float
    changed: bool
    full: bool
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _PreparedDoc:
    meta: dict[str, Any]
    text: str
    raw: str
    raw_offsets: list[int]
    page_starts: list[int]
    sections: list[tuple[int, str]]
    chunks: list[dict[str, Any]]
    sentences: list[tuple[int, int, str]]  # start, end, content key
    acronyms: list[tuple[str, str]]


def build_params(settings: Settings, model_key: str) -> dict[str, Any]:
    """Everything that, when changed, invalidates all chunks and vectors."""
    return {
        "model": model_key,
        "chunk_tokens": settings.chunk_tokens,
        "chunk_overlap": settings.chunk_overlap,
        "encoding": chunking.ENCODING,
        "pipeline": PIPELINE_VERSION,
        "late_interaction": bool(settings.late_interaction),
        "token_store": settings.token_store,
    }


def build_index(settings: Settings, *, full: bool = False, progress: Progress | None = None,
                embedder: Any = None, lock_wait: float = 0.0) -> BuildResult:
    """Bring the published index up to date with the corpus. Safe to interrupt at any point."""
    started = time.perf_counter()
    layout = store.Layout(settings.index_dir)
    check_corpus_dir(settings.corpus_dir)
    with store.build_lock(layout, wait=lock_wait):
        store.clean_leftovers(layout)
        previous = _open_previous(layout)
        try:
            known = known_ids(previous) if previous is not None else {}
            sources, warnings = discover(settings.corpus_dir, known)
            if not sources:
                skipped = f" ({'; '.join(warnings)})" if warnings else ""
                raise CorpusError(
                    f"corpus directory {settings.corpus_dir} holds no documents{skipped}: add "
                    f".txt, .md, .html or .pdf files, or point QA_CORPUS_DIR (--corpus-dir) at a "
                    f"folder that has them")
            ids = {**known, **{str(s.path.relative_to(settings.corpus_dir)): s.doc_id
                               for s in sources}}
            return _build(settings, layout, sources, warnings, previous, full, progress,
                          embedder, started, ids)
        finally:
            if previous is not None:
                previous.close()


def _open_previous(layout: store.Layout) -> store.IndexReader | None:
    try:
        return store.open_current(layout.root, verify=True)
    except NoIndexError:
        return None
    except IndexCorruptError as e:
        log.warning("published index unusable, rebuilding from scratch: %s", e)
        return None


def known_ids(previous: store.IndexReader) -> dict[str, str]:
    """Relative path -> document id of every file the index has given an id (removed files
    too), so that ids never change. An index built before ids were kept in its manifest gives
    the ids of its documents: they keep resolving."""
    ids = previous.manifest.get("ids")
    if isinstance(ids, dict):
        return {str(path): str(doc_id) for path, doc_id in ids.items()}
    return {doc["path"]: doc["doc_id"] for doc in previous.documents()}


def _build(settings: Settings, layout: store.Layout, sources: list[SourceFile],
           warnings: list[str], previous: store.IndexReader | None, full: bool,
           progress: Progress | None, embedder: Any, started: float,
           ids: dict[str, str]) -> BuildResult:
    from qa.embedding import resolve_model

    _, model_key = resolve_model(settings.model)
    params = build_params(settings, model_key)
    old_docs: dict[str, str] = {}
    old_skipped: dict[str, list[str]] = {}  # doc_id -> [content hash, warning]
    if previous is not None and previous.manifest.get("params") == params and not full:
        old_docs = previous.manifest.get("documents", {})
        old_skipped = previous.manifest.get("skipped", {})
    else:
        full = True
    current = {s.doc_id: s.content_hash for s in sources}
    seen = {**old_docs, **{d: v[0] for d, v in old_skipped.items()}}
    if previous is not None and not full and seen == current:
        warnings.extend(v[1] for v in old_skipped.values())
        counts = previous.manifest.get("counts", {})
        _export_onnx_if_missing(settings, layout)
        return BuildResult(len(old_docs), int(counts.get("chunks", 0)), 0, 0, previous.version,
                           round(time.perf_counter() - started, 3), False, False, warnings)

    if embedder is None:
        from qa.embedding import Embedder

        embedder = Embedder(settings.model, backend=settings.encoder,
                            onnx_dir=layout.cache / "onnx", threads=os.cpu_count(),
                            query_precision=settings.query_precision)
    cluster = _connect(settings, layout)
    try:
        fresh = [s for s in sources
                 if previous is None or old_docs.get(s.doc_id) != s.content_hash]
        if cluster is not None:
            read = cluster.prepare(fresh, settings, model_key, progress)
        else:
            read = {}
            fresh_ids = {s.doc_id for s in fresh}
            for n, source in enumerate(sources, 1):
                if progress:
                    progress("reading", n, len(sources))
                if source.doc_id in fresh_ids:
                    read[source.doc_id] = prepare_source(source, settings, embedder, model_key)
        prepared: list[_PreparedDoc] = []
        skipped: dict[str, list[str]] = {}
        for source in sources:  # in the corpus's order, which gives chunks their FAISS ids
            outcome = read.get(source.doc_id)
            if outcome is None:
                assert previous is not None
                prepared.append(_reuse(previous, source.doc_id))
            elif isinstance(outcome, str):
                warnings.append(outcome)
                skipped[source.doc_id] = [source.content_hash, outcome]
            else:
                prepared.append(outcome)

        version = store.new_version()
        writer = store.BuildWriter(layout, version)
        try:
            chunk_vectors, sentence_vectors, chunk_tokens, embedded = _write_rows_and_embed(
                writer, prepared, layout, embedder, model_key, progress,
                bool(settings.late_interaction))
            manifest = {
                "model": settings.model,
                "params": params,
                "dimension": int(chunk_vectors.shape[1]),
                "documents": {p.meta["doc_id"]: p.meta["content_hash"] for p in prepared},
                "skipped": skipped,
                "ids": ids,
                "counts": {"documents": len(prepared)},
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            writer.finish(chunk_vectors, sentence_vectors, manifest, chunk_tokens,
                          token_store=settings.token_store)
        except BaseException:
            writer.abort()
            raise
        before = set(previous.manifest.get("documents", {})) if previous is not None else set()
        removed = len(before - {p.meta["doc_id"] for p in prepared})
        if embedder.backend_requested != "torch" and embedded:
            embedder.ensure_onnx()
            embedder.ensure_int8()
        store.clean_leftovers(layout)
        return BuildResult(len(prepared), int(chunk_vectors.shape[0]), embedded, removed, version,
                           round(time.perf_counter() - started, 3), True, full, warnings)
    finally:
        if cluster is not None:
            cluster.close()


def _connect(settings: Settings, layout: store.Layout) -> Any:
    """The Ray cluster of ``settings.ray_address`` (None without one)."""
    if not settings.ray_address:
        return None
    from qa.distributed import Cluster

    return Cluster(settings.ray_address, settings.model, settings.encoder,
                               layout.cache / "onnx")


def prepare_source(source: SourceFile, settings: Settings, embedder: Any,
                   model_key: str) -> _PreparedDoc | str:
    """Read, clean, chunk one document and find its acronyms; a skip message when unreadable.
    Needs only the embedder's tokenizer (runs on Ray workers as well as here)."""
    try:
        document = load_document(source, settings.corpus_dir)
    except UnreadableDocument as e:
        return f"skipped {source.path.relative_to(settings.corpus_dir)}: {e}"
    return _prepare(document, settings, embedder, model_key)


def _export_onnx_if_missing(settings: Settings, layout: store.Layout) -> None:
    """An up-to-date index still gets an ONNX export (and the gated int8 query encoder, where a
    shipped verdict allows it) when none exists under the model's name
    (a new model identity names a new file): else queries would stay on torch until some
    document changes. A build with nothing to do leaves the caller's embedder alone; this one
    loads the model only when it exports."""
    if settings.encoder == "torch":
        return
    from qa.embedding import Embedder

    embedder = Embedder(settings.model, backend=settings.encoder,
                        onnx_dir=layout.cache / "onnx", threads=os.cpu_count(),
                        query_precision=settings.query_precision)
    path = embedder.onnx_path()
    if path is not None and not path.is_file():
        embedder.ensure_onnx()
    embedder.ensure_int8()  # needs only the tokenizer when the export is there


def embed_header(title: str, section: str | None) -> str:
    """The context line embedded above a chunk's text (contextual chunk headers)."""
    section = (section or "")[:HEADER_SECTION_CHARS]
    return f"{title} — {section}" if section else title


def _prepare(document: Document, settings: Settings, embedder: Any,
             model_key: str) -> _PreparedDoc:
    clean = textclean.normalize(document.raw)
    # A "heading" that is only the document's title, an author or a byline is not a section.
    byline = {document.title.lower(), *(a.lower() for a in document.authors)}
    sections = [(s.start, s.title) for s in clean.sections
                if s.title.lower() not in byline and not s.title.lower().startswith("by ")]
    text = clean.text

    def page_of(offset: int) -> int | None:
        if not document.page_starts or offset >= len(text):
            return None
        return page_at(document.page_starts, clean.raw_offsets[offset])

    spans = chunking.split_sentences(text)
    # Each chunk is embedded under a short header (title, section) that the window must hold too.
    longest = max((len(t) for _, t in sections), default=0)
    header_room = embedder.count_word_pieces(
        embed_header(document.title, "x" * min(longest, HEADER_SECTION_CHARS)))

    def fits(piece: str) -> bool:
        return embedder.count_word_pieces(piece) + header_room <= embedder.max_tokens

    chunks = chunking.chunk_text(
        document.doc_id, text, budget=settings.chunk_tokens, overlap=settings.chunk_overlap,
        sections=sections, fits=fits, page_of=page_of, sentences=spans)
    context = " ".join([document.title, *document.authors])
    acronyms = find_acronyms(text)
    chunk_rows = []
    for c in chunks:
        header = embed_header(document.title, c.section)
        row = {**c.to_dict(), "header": header, "context": f"{context} {c.section or ''}".strip()}
        row["content_key"] = store.content_key(model_key, chunk_embed_text(row, acronyms))
        chunk_rows.append(row)
    sentences = [(s.start, s.end,
                  store.content_key(model_key, sentence_embed_text(text, s.start, s.end, acronyms)))
                 for s in spans]
    meta = {**document.metadata(), "content_hash": document.content_hash}
    return _PreparedDoc(meta, text, document.raw, list(clean.raw_offsets),
                        list(document.page_starts), sections, chunk_rows, sentences, acronyms)


def chunk_embed_text(chunk: dict[str, Any], acronyms: list[tuple[str, str]]) -> str:
    """What the encoder sees for a chunk: its header line, then its text with the long forms of
    the acronyms it uses (as defined in its own document, so that adding a document never
    changes another's vectors). The chunk text itself always fits the model's window; a long
    gloss may be cut at the end. The text starts at ``chunk_text_offset(chunk)``."""
    return f"{chunk['header']}\n{gloss(chunk['text'], acronyms)}"


def chunk_text_offset(chunk: dict[str, Any]) -> int:
    """Where the chunk's own text starts in ``chunk_embed_text``."""
    return len(chunk["header"]) + 1


def sentence_read_text(text: str, start: int, end: int) -> str:
    """What a sentence says when read alone: the sentence, or for a table's row the row under
    its caption and column headers (``qa.tables.row_context``). Embedded, and counted by term
    coverage; the quoted text is always the slice itself."""
    return tables.row_context(text, start, end) or text[start:end]


def sentence_embed_text(text: str, start: int, end: int,
                        acronyms: list[tuple[str, str]]) -> str:
    """What the encoder sees for a sentence: what it says read alone, acronyms glossed."""
    return gloss(sentence_read_text(text, start, end), acronyms)


def _reuse(previous: store.IndexReader, doc_id: str) -> _PreparedDoc:
    """An unchanged document, copied from the published build (no reading, no model)."""
    doc = previous.document(doc_id)
    if doc is None:
        raise IndexCorruptError(f"published index lacks document {doc_id}: run `qa index --full`")
    meta = {k: doc[k] for k in ("doc_id", "path", "title", "authors", "publisher", "date",
                                "source", "content_hash")}
    chunks = previous.document_chunks(doc_id)
    sentences = [(s["start"], s["end"], s["content_key"])
                 for s in previous.document_sentences(doc_id)]
    return _PreparedDoc(meta, doc["text"], doc["raw"], list(doc["raw_offsets"]),
                        list(doc["page_starts"]), list(doc["sections"]), chunks, sentences,
                        previous.document_acronyms(doc_id))


def _write_rows_and_embed(writer: store.BuildWriter, prepared: list[_PreparedDoc],
                          layout: store.Layout, embedder: Any, model_key: str,
                          progress: Progress | None, late_interaction: bool, cluster: Any = None
                          ) -> tuple[np.ndarray, np.ndarray, list[store.StoredTokens] | None, int]:
    texts: dict[str, str] = {}
    text_offsets: dict[str, int] = {}
    for doc in prepared:
        writer.add_document(doc.meta, doc.text, doc.raw, doc.raw_offsets, doc.page_starts,
                            doc.sections, len(doc.chunks))
        first = writer.add_chunks(doc.chunks)
        writer.add_sentences(doc.meta["doc_id"], _with_chunk_ids(doc, first))
        writer.add_acronyms(doc.meta["doc_id"], doc.acronyms)
        for c in doc.chunks:
            texts[c["content_key"]] = chunk_embed_text(c, doc.acronyms)
            text_offsets[c["content_key"]] = chunk_text_offset(c)
        for start, end, key in doc.sentences:
            texts[key] = sentence_embed_text(doc.text, start, end, doc.acronyms)
    writer.add_term_counts(_term_counts(doc.chunks for doc in prepared))
    chunk_keys = writer.content_keys("chunks")
    sentence_keys = writer.content_keys("sentences")
    token_keys = set(chunk_keys) if late_interaction else set()
    vectors, tokens, missing = _vectors_for(texts, token_keys, layout, embedder, model_key,
                                            progress, cluster)
    embedded = len(missing.intersection(chunk_keys))
    dim = embedder.dimension
    chunk_vectors = _stack([vectors[k] for k in chunk_keys], dim)
    sentence_vectors = _stack([vectors[k] for k in sentence_keys], dim)
    chunk_tokens = None
    if late_interaction:
        seen: list[int] = (np.unique(np.concatenate([tokens[k][0] for k in chunk_keys])).tolist()
                           if chunk_keys else [])
        content = np.array([i for i in seen
                            if evidence.is_content_piece(embedder.piece_text(i))], dtype=np.int32)
        chunk_tokens = [_content_tokens(tokens[k], text_offsets[k], content) for k in chunk_keys]
    return chunk_vectors, sentence_vectors, chunk_tokens, embedded


def _content_tokens(tokens: store.StoredTokens, text_offset: int,
                    content: np.ndarray) -> store.StoredTokens:
    """What a build stores of a chunk's cached token vectors: only the pieces late interaction
    can match (a question matches with its content pieces only, so a stopword or a comma is
    never the best match that counts; leaving them out halves the storage and the query's work),
    with offsets made relative to the chunk's text, where sentences are found (the header's
    pieces come out negative)."""
    ids, starts, vectors = tokens
    keep = np.isin(ids, content)
    return ids[keep], starts[keep] - text_offset, vectors[keep]


def _term_counts(chunk_lists: Iterable[list[dict[str, Any]]]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for chunks in chunk_lists:
        for c in chunks:
            counts.update(evidence.term_set(c["text"]))
    return dict(counts)


def _with_chunk_ids(doc: _PreparedDoc, first: int) -> list[tuple[int, int, str, int, str]]:
    """Each sentence with the FAISS id of the first chunk that contains it, and its term sequence."""
    out = []
    spans = [(c["start"], c["end"]) for c in doc.chunks]
    j = 0
    for start, end, key in doc.sentences:
        while j < len(spans) - 1 and spans[j][1] < end:
            j += 1
        k = j
        while k > 0 and spans[k - 1][0] <= start and spans[k - 1][1] >= end:
            k -= 1
        read = sentence_read_text(doc.text, start, end)
        out.append((start, end, key, first + k, terms.term_sequence(read)))
    return out


def _vectors_for(texts: dict[str, str], token_keys: set[str], layout: store.Layout,
                 embedder: Any, model_key: str, progress: Progress | None, cluster: Any = None
                 ) -> tuple[dict[str, np.ndarray], dict[str, store.StoredTokens], set[str]]:
    """Vectors for every key, and token vectors for ``token_keys``: from the cache, else
    embedded (here, or on the Ray ``cluster``'s actors) and cached batch by batch. Returns both
    and the keys that had to be embedded."""
    if not texts:
        return {}, {}, set()
    cache = store.EmbeddingCache(layout.cache / "embeddings.sqlite", model_key,
                                 embedder.dimension)
    try:
        vectors = cache.get_many(list(texts))
        tokens = cache.get_tokens(sorted(token_keys)) if token_keys else {}
        # Longest first, so that each batch holds texts of about one length and little of the
        # model's work goes to padding (model.encode sorts only within one call), and the
        # slowest batches are seen first by the progress bar's estimate. Texts whose token
        # vectors are kept (chunks) are batched apart from the others (sentences), so that only
        # their batches pay for extracting them. Only these missing texts travel to a cluster.
        needed = [k for k in texts if k not in vectors or (k in token_keys and k not in tokens)]
        batches = []
        for group in ([k for k in needed if k in token_keys],
                      [k for k in needed if k not in token_keys]):
            group.sort(key=lambda k: -len(texts[k]))
            batches += [group[i:i + EMBED_BATCH] for i in range(0, len(group), EMBED_BATCH)]
        jobs = [([texts[k] for k in keys], keys[0] in token_keys) for keys in batches]
        results = (cluster.embed(jobs) if cluster is not None
                   else (embed_job(embedder, job) for job in jobs))
        done = 0
        for keys, (batch, stored) in zip(batches, results, strict=True):
            if stored is not None:
                pairs = list(zip(keys, stored, strict=True))
                cache.put_tokens(pairs)
                tokens.update(pairs)
            cache.put_many(keys, batch)
            vectors.update(zip(keys, batch, strict=True))
            done += len(keys)
            if progress:
                progress("embedding", done, len(needed))
    finally:
        cache.close()
    return vectors, tokens, set(needed)


EMBED_BATCH = 256  # texts a job (a cache write, a progress step, a task on a cluster)


def embed_job(embedder: Any, job: tuple[list[str], bool]
              ) -> tuple[np.ndarray, list[store.StoredTokens] | None]:
    """One batch's vectors and, when asked, its texts' token vectors as the store keeps them
    (the same forward pass gives both). Runs here or on a Ray actor."""
    texts, with_tokens = job
    if not with_tokens:
        return embedder.encode(texts, batch_size=32), None
    batch, batch_tokens = embedder.encode_with_tokens(texts, batch_size=32)
    return batch, [(t.ids, t.starts, store.quantize_tokens(t.vectors)) for t in batch_tokens]


def _stack(rows: list[np.ndarray], dim: int) -> np.ndarray:
    if not rows:
        return np.zeros((0, dim), dtype=np.float32)
    return np.ascontiguousarray(np.vstack(rows), dtype=np.float32)
