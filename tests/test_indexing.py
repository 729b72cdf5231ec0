"""Building and updating the index: incremental work, full rebuilds, crashes, locks, bad files."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qa import evidence, store
from qa.config import Settings
from qa.embedding import Embedder
from qa.errors import CorpusError, IndexLockedError
from qa.indexing import BuildResult, build_index, chunk_embed_text, sentence_embed_text

NEW_DOC = """# The Pamir Glacier Survey

The Pamir Glacier Survey measured the Fedchenko Glacier, which is 77 kilometres long.

A team of eleven glaciologists from Tajikistan and Kyrgyzstan took part in the survey.
"""


@pytest.fixture
def settings(tiny_settings: Settings, built_tiny: Settings) -> Settings:
    """A writable tiny corpus with a private copy of the session's index and embedding cache."""
    shutil.copytree(built_tiny.index_dir, tiny_settings.index_dir)
    return tiny_settings


def _build(settings: Settings, embedder: Embedder, **kw: Any) -> BuildResult:
    return build_index(settings, embedder=embedder, **kw)


def _keys(settings: Settings, table: str, doc_id: str | None = None) -> list[str]:
    """Content keys of the published build's chunks or sentences (optionally one document's)."""
    version = store.Layout(settings.index_dir).current_version()
    assert version is not None
    path = store.Layout(settings.index_dir).build_dir(version) / store.DB_FILE
    db = sqlite3.connect(path)
    try:
        sql = f"SELECT content_key FROM {table}"
        rows = (db.execute(sql + " WHERE doc_id = ? ORDER BY rowid", (doc_id,)) if doc_id
                else db.execute(sql + " ORDER BY rowid"))
        return [k for (k,) in rows]
    finally:
        db.close()


def _published(settings: Settings) -> str | None:
    return store.Layout(settings.index_dir).current_version()


def test_first_build_embeds_every_chunk(tiny_settings: Settings, embedder: Embedder) -> None:
    result = _build(tiny_settings, embedder)
    assert result.changed and result.full
    assert (result.documents, result.removed, result.warnings) == (3, 0, [])
    assert result.embedded == result.chunks == len(_keys(tiny_settings, "chunks")) == 8
    assert result.version == _published(tiny_settings)
    assert set(result.to_dict()) >= {"documents", "chunks", "embedded", "removed", "version",
                                     "seconds"}


def test_second_build_is_a_no_op(settings: Settings) -> None:
    before = _published(settings)
    builds = sorted(p.name for p in store.Layout(settings.index_dir).builds.iterdir())
    # nothing to do: the embedder is never touched (a stand-in without any attribute suffices)
    result = build_index(settings, embedder=object())
    assert not result.changed
    assert (result.version, result.embedded, result.removed) == (before, 0, 0)
    assert (result.documents, result.chunks) == (3, 8)
    assert _published(settings) == before
    assert sorted(p.name for p in store.Layout(settings.index_dir).builds.iterdir()) == builds


def test_adding_a_document_embeds_only_its_chunks(settings: Settings,
                                                  embedder: Embedder) -> None:
    before = _published(settings)
    old_chunks = _keys(settings, "chunks")
    (settings.corpus_dir / "pamir-glacier.md").write_text(NEW_DOC)
    result = _build(settings, embedder)
    assert result.changed and not result.full
    assert result.version != before
    assert _published(settings) == result.version
    assert (result.documents, result.removed) == (4, 0)
    new_doc_chunks = _keys(settings, "chunks", "pamir-glacier")
    assert len(new_doc_chunks) >= 1
    assert result.embedded == len(new_doc_chunks)
    assert result.chunks == len(old_chunks) + len(new_doc_chunks)
    # the other documents' chunks are carried over unchanged
    assert [k for k in _keys(settings, "chunks") if k not in new_doc_chunks] == old_chunks
    reader = store.open_current(settings.index_dir)
    try:
        assert reader.manifest["documents"]["pamir-glacier"]
        assert "Silk Road Rail Corridor" in {d["title"] for d in reader.documents()}
    finally:
        reader.close()


GLOSSED_DOC = """# The Aral Basin Council

The Aral Basin Water Council (ABWC) was founded by five states.

Every spring the ABWC publishes a report on the level of the sea.
"""


def test_acronyms_are_glossed_for_the_encoder_only(settings: Settings,
                                                   embedder: Embedder) -> None:
    (settings.corpus_dir / "aral-basin.md").write_text(GLOSSED_DOC)
    _build(settings, embedder)
    reader = store.open_current(settings.index_dir)
    try:
        text = reader.document_text("aral-basin")
        assert text is not None
        sentences = reader.document_sentences("aral-basin")
        later = next(s for s in sentences if text[s["start"]:s["end"]].startswith("Every spring"))
        assert "(ABWC" not in text[later["start"]:later["end"]]  # stored text is untouched
        seen = sentence_embed_text(text, later["start"], later["end"],
                                   reader.document_acronyms("aral-basin"))
        assert seen.endswith("(ABWC: Aral Basin Water Council)")
        stored = np.asarray(reader.sentence_vectors[later["rowid"]])
        glossed, plain = embedder.encode([seen, text[later["start"]:later["end"]]])
        assert np.allclose(stored, glossed, atol=1e-4)
        assert not np.allclose(stored, plain, atol=1e-2)
    finally:
        reader.close()


def test_changing_a_document_re_embeds_only_its_new_chunks(settings: Settings,
                                                           embedder: Embedder) -> None:
    known = set(_keys(settings, "chunks")) | set(_keys(settings, "sentences"))
    others = {d: _keys(settings, "chunks", d) for d in ("desert-observatory", "silk-road-rail")}
    path = settings.corpus_dir / "lake-baikal-accord.txt"
    path.write_text(path.read_text().replace("nine members", "ten members").replace(
        "three arbitrators", "five arbitrators"))
    result = _build(settings, embedder)
    assert result.changed and not result.full
    assert (result.documents, result.removed) == (3, 0)
    changed = _keys(settings, "chunks", "lake-baikal-accord")
    expected = [k for k in changed if k not in known]
    assert len(expected) >= 2
    assert result.embedded == len(expected)
    assert {d: _keys(settings, "chunks", d) for d in others} == others
    reader = store.open_current(settings.index_dir)
    try:
        text = reader.document_text("lake-baikal-accord")
        assert text is not None
        assert "ten members" in text
        assert "nine members" not in text
    finally:
        reader.close()


def test_changing_only_the_sidecar_republishes_without_embedding(settings: Settings,
                                                                  embedder: Embedder) -> None:
    before = _published(settings)
    meta = settings.corpus_dir / "lake-baikal-accord.meta.json"
    title = json.loads(meta.read_text())["title"]
    meta.write_text(json.dumps({"title": title, "authors": ["Someone Else"], "date": "2040"}))
    result = _build(settings, embedder)
    assert result.changed
    assert result.version != before
    assert result.embedded == 0  # same text and title: vectors come from the cache
    # The title is part of every chunk's embedded header: renaming re-embeds that document only.
    n_chunks = len(_keys(settings, "chunks", "lake-baikal-accord"))
    meta.write_text(json.dumps({"title": "Renamed Accord", "authors": ["Someone Else"]}))
    result = _build(settings, embedder)
    assert result.embedded == n_chunks
    reader = store.open_current(settings.index_dir)
    try:
        doc = reader.document("lake-baikal-accord")
        assert doc is not None
        assert (doc["title"], doc["authors"]) == ("Renamed Accord", ["Someone Else"])
    finally:
        reader.close()


def test_deleting_a_document(settings: Settings, embedder: Embedder) -> None:
    gone = _keys(settings, "chunks", "silk-road-rail")
    assert gone
    (settings.corpus_dir / "silk-road-rail.md").unlink()
    result = _build(settings, embedder)
    assert result.changed
    assert (result.documents, result.removed, result.embedded) == (2, 1, 0)
    assert result.chunks == 8 - len(gone)
    assert _keys(settings, "chunks", "silk-road-rail") == []
    reader = store.open_current(settings.index_dir)
    try:
        assert reader.document("silk-road-rail") is None
        assert reader.rowids_for_documents(["silk-road-rail"]) == []
        assert "silk-road-rail" not in reader.manifest["documents"]
        assert reader.faiss.ntotal == result.chunks
        assert ("EIB", "Eurasian Infrastructure Bank") not in reader.acronyms()
    finally:
        reader.close()


def test_changing_chunk_tokens_forces_a_full_rebuild(settings: Settings,
                                                     embedder: Embedder) -> None:
    small = settings.replace(chunk_tokens=48, chunk_overlap=8)
    result = _build(small, embedder)
    assert result.changed and result.full
    assert result.documents == 3
    assert result.chunks > 8
    reader = store.open_current(settings.index_dir)
    try:
        assert reader.manifest["params"]["chunk_tokens"] == 48
        assert reader.manifest["params"]["chunk_overlap"] == 8
        for doc_id in reader.manifest["documents"]:
            chunks = reader.document_chunks(doc_id)
            assert chunks
            assert all(c["n_tokens"] <= 48 for c in chunks)
    finally:
        reader.close()
    # and back: the old chunks are found in the embedding cache
    again = _build(settings, embedder)
    assert again.full and again.chunks == 8 and again.embedded == 0


def test_full_rechunks_everything_but_reuses_cached_vectors(settings: Settings,
                                                            embedder: Embedder) -> None:
    before = _published(settings)
    old_chunks = _keys(settings, "chunks")
    result = _build(settings, embedder, full=True)
    assert result.changed and result.full
    assert result.version != before
    assert _published(settings) == result.version
    assert (result.documents, result.chunks, result.removed) == (3, 8, 0)
    assert result.embedded == 0  # --full re-chunks; unchanged chunk texts hit the cache
    assert _keys(settings, "chunks") == old_chunks
    # without the cache, --full embeds every chunk again
    shutil.rmtree(store.Layout(settings.index_dir).cache)
    result = _build(settings, embedder, full=True)
    assert result.embedded == result.chunks == 8


def _assert_previous_published(settings: Settings, version: str | None) -> None:
    assert _published(settings) == version
    reader = store.open_current(settings.index_dir)
    try:
        assert reader.version == version
        assert reader.faiss.ntotal == 8
        assert reader.document("pamir-glacier") is None
    finally:
        reader.close()


def test_crash_in_finish_keeps_previous_version(settings: Settings, embedder: Embedder,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    before = _published(settings)
    (settings.corpus_dir / "pamir-glacier.md").write_text(NEW_DOC)
    real_finish = store.BuildWriter.finish

    def crash(self: store.BuildWriter, *args: Any, **kwargs: Any) -> Any:
        (self.tmp / "vectors.faiss").write_bytes(b"partial")  # some work reached the disk
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.BuildWriter, "finish", crash)
    # a hard crash never runs the cleanup either
    monkeypatch.setattr(store.BuildWriter, "abort", lambda self: None)
    with pytest.raises(OSError, match="No space left"):
        _build(settings, embedder)
    builds = store.Layout(settings.index_dir).builds
    assert len(list(builds.glob(".tmp-*"))) == 1
    _assert_previous_published(settings, before)

    monkeypatch.setattr(store.BuildWriter, "finish", real_finish)
    result = _build(settings, embedder)
    assert result.changed and result.documents == 4
    # the crashed build's new chunks were embedded and cached before the crash
    assert result.embedded == 0
    assert list(builds.glob(".tmp-*")) == []


def test_crash_while_embedding_keeps_previous_version(settings: Settings, embedder: Embedder,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    before = _published(settings)
    (settings.corpus_dir / "pamir-glacier.md").write_text(NEW_DOC)

    def fail(texts: Any, **kwargs: Any) -> np.ndarray:
        raise KeyboardInterrupt

    monkeypatch.setattr(embedder, "encode", fail)
    monkeypatch.setattr(embedder, "encode_with_tokens", fail)
    with pytest.raises(KeyboardInterrupt):
        _build(settings, embedder)
    assert list(store.Layout(settings.index_dir).builds.glob(".tmp-*")) == []  # aborted cleanly
    _assert_previous_published(settings, before)
    monkeypatch.undo()
    result = _build(settings, embedder)
    assert result.documents == 4
    assert result.embedded == len(_keys(settings, "chunks", "pamir-glacier"))


def test_build_refuses_while_another_holds_the_lock(settings: Settings,
                                                   embedder: Embedder) -> None:
    before = _published(settings)
    (settings.corpus_dir / "pamir-glacier.md").write_text(NEW_DOC)
    layout = store.Layout(settings.index_dir)
    with store.build_lock(layout), pytest.raises(IndexLockedError, match="another `qa index`"):
        _build(settings, embedder)
    assert _published(settings) == before
    assert _build(settings, embedder).documents == 4  # the lock is free again


def _versions(monkeypatch: pytest.MonkeyPatch, names: list[str]) -> list[str]:
    """Make the next builds get the given version names, in order."""
    queue = list(names)
    monkeypatch.setattr(store, "new_version", lambda: queue.pop(0))
    return names


def test_old_builds_are_pruned(settings: Settings, embedder: Embedder,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    names = _versions(monkeypatch, [f"20300101T00000{n}-abcdef" for n in range(4)])
    for name in names:
        assert _build(settings, embedder, full=True).version == name
    kept = sorted(p.name for p in store.Layout(settings.index_dir).builds.iterdir())
    assert kept == names[-store.KEEP_BUILDS:]
    assert _published(settings) == names[-1]


def test_versions_made_in_the_same_second_sort_by_creation() -> None:
    # pruning keeps the newest builds by name, so names must sort in creation order
    names = [store.new_version() for _ in range(50)]
    assert sorted(names) == names
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("empty.txt", b"", "no text"),
    ("blob.txt", b"\x00\x01\x02\x03binary", "binary"),
    ("broken.pdf", b"%PDF-1.4 not really", "not a readable PDF"),
    ("slides.pptx", b"PK\x03\x04", "unsupported file type"),
])
def test_bad_files_are_skipped_with_a_warning(settings: Settings, embedder: Embedder,
                                              name: str, content: bytes, reason: str) -> None:
    (settings.corpus_dir / name).write_bytes(content)
    (settings.corpus_dir / "pamir-glacier.md").write_text(NEW_DOC)
    result = _build(settings, embedder)
    assert result.documents == 4
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith(f"skipped {name}: ")
    assert reason in result.warnings[0]
    reader = store.open_current(settings.index_dir)
    try:
        assert set(reader.manifest["documents"]) == {
            "desert-observatory", "lake-baikal-accord", "silk-road-rail", "pamir-glacier"}
    finally:
        reader.close()


def test_progress_is_reported(settings: Settings, embedder: Embedder) -> None:
    (settings.corpus_dir / "pamir-glacier.md").write_text(NEW_DOC)
    seen: list[tuple[str, int, int]] = []
    _build(settings, embedder, progress=lambda stage, done, total: seen.append(
        (stage, done, total)))
    assert [s for s in seen if s[0] == "reading"] == [("reading", n, 4) for n in range(1, 5)]
    embedding = [s for s in seen if s[0] == "embedding"]
    assert embedding
    assert embedding[-1][1] == embedding[-1][2]


def test_empty_corpus_is_refused_and_nothing_is_published(tmp_path: Path,
                                                          tiny_settings: Settings,
                                                          embedder: Embedder) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.docx").write_bytes(b"PK")
    settings = tiny_settings.replace(corpus_dir=empty, index_dir=tmp_path / "index")
    with pytest.raises(CorpusError, match=r"holds no documents .*notes\.docx.*QA_CORPUS_DIR"):
        _build(settings, embedder)
    assert store.Layout(settings.index_dir).current_version() is None


def test_unreadable_file_does_not_defeat_the_no_op(settings: Settings,
                                                   embedder: Embedder) -> None:
    (settings.corpus_dir / "empty.txt").write_text("")
    first = _build(settings, embedder)
    assert first.warnings == ["skipped empty.txt: no text in file (empty or image-only)"]
    second = _build(settings, embedder)
    assert second.warnings == first.warnings
    assert not second.changed
    assert second.version == first.version


def test_document_becoming_unreadable_counts_as_removed(settings: Settings,
                                                        embedder: Embedder) -> None:
    (settings.corpus_dir / "silk-road-rail.md").write_bytes(b"")
    result = _build(settings, embedder)
    assert result.documents == 2
    assert _keys(settings, "chunks", "silk-road-rail") == []
    assert result.removed == 1


def _tokens_by_chunk(settings: Settings) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each published chunk's stored token vectors and piece starts, by content key."""
    reader = store.open_current(settings.index_dir)
    try:
        assert reader.token_vectors is not None and reader.token_offsets is not None
        assert reader.token_starts is not None
        keys = _keys(settings, "chunks")
        offsets = reader.token_offsets
        return {k: (np.array(reader.token_vectors[offsets[i]:offsets[i + 1]]),
                    np.array(reader.token_starts[offsets[i]:offsets[i + 1]]))
                for i, k in enumerate(keys)}
    finally:
        reader.close()


def test_token_vectors_follow_their_chunks(settings: Settings, embedder: Embedder) -> None:
    """Adding a document embeds only its chunks, yet every chunk keeps its own token vectors
    (the old ones from the cache); each chunk has one per word piece of its embedded text."""
    before = _tokens_by_chunk(settings)
    (settings.corpus_dir / "pamir-glacier.md").write_text(NEW_DOC)
    result = _build(settings, embedder)
    assert result.embedded == len(_keys(settings, "chunks", "pamir-glacier"))
    after = _tokens_by_chunk(settings)
    for key, (vectors, starts) in before.items():
        np.testing.assert_array_equal(after[key][0], vectors)
        np.testing.assert_array_equal(after[key][1], starts)
    reader = store.open_current(settings.index_dir)
    try:
        for row in reader.document_chunks("pamir-glacier"):
            text = chunk_embed_text(row, reader.document_acronyms("pamir-glacier"))
            _, tokens = embedder.encode_with_tokens([text])
            # Only the pieces late interaction can match are stored: no stopwords or commas.
            content = [evidence.is_content_piece(embedder.piece_text(int(i)))
                       for i in tokens[0].ids]
            assert 0 < sum(content) < len(content)
            fresh = store.quantize_tokens(tokens[0].vectors[content]).astype(np.int16)
            stored, starts = after[row["content_key"]]
            assert stored.shape == fresh.shape
            assert int(np.abs(stored.astype(np.int16) - fresh).max()) <= 1  # batch padding
            # Starts are offsets into the chunk's text: its pieces spell it out in order.
            inside = starts[starts >= 0]
            assert list(inside) == sorted(inside)
            assert all(not row["text"][s].isspace() for s in inside if s < len(row["text"]))
            assert (starts < 0).sum() >= 1  # the header line the encoder saw first
    finally:
        reader.close()


def test_turning_late_interaction_off_and_on(settings: Settings, embedder: Embedder) -> None:
    """The setting is a build parameter: changing it rebuilds in full, from the cache."""
    off = _build(settings.replace(late_interaction=0), embedder)
    assert off.changed and off.full and off.embedded == 0
    build = store.Layout(settings.index_dir).build_dir(off.version)
    assert not (build / store.TOKEN_FILE).exists()
    reader = store.open_current(settings.index_dir)
    try:
        assert not reader.has_token_vectors
    finally:
        reader.close()
    on = _build(settings, embedder)
    assert on.changed and on.full and on.embedded == 0  # token vectors come from the cache
    reader = store.open_current(settings.index_dir)
    try:
        assert reader.has_token_vectors
    finally:
        reader.close()
