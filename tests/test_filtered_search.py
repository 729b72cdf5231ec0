"""Sentence search restricted to some documents ranks those documents' sentences, whatever the
best sentences of the whole corpus are."""

from __future__ import annotations

import numpy as np

from qa import store
from qa.config import Settings


def _brute_force(reader: store.IndexReader, query: np.ndarray, k: int,
                 allowed: list[int]) -> list[tuple[int, float]]:
    assert reader.sentence_owners is not None
    sims = np.asarray(reader.sentence_vectors) @ query
    best: dict[int, float] = {}
    for owner, sim in zip(reader.sentence_owners.tolist(), sims.tolist(), strict=True):
        if owner in allowed and sim > best.get(owner, -2.0):
            best[owner] = sim
    return sorted(best.items(), key=lambda item: -item[1])[:k]


def test_filtered_sentence_search_ranks_the_filtered_documents(built_tiny: Settings) -> None:
    reader = store.open_current(built_tiny.index_dir)
    try:
        documents = [d["doc_id"] for d in reader.documents()]
        assert reader.sentence_owners is not None
        owners = reader.sentence_owners
        vectors = np.asarray(reader.sentence_vectors)
        k = 1
        # A question that is one document's own sentence, filtered to another document: the
        # corpus-wide best sentences (the first k * 4 looked at before) are all elsewhere.
        cases = []
        for doc_id in documents:
            allowed = reader.rowids_for_documents([doc_id])
            for sid in range(len(vectors)):
                top = np.argsort(-(vectors @ vectors[sid]))[:k * 4]
                if not set(owners[top].tolist()) & set(allowed):
                    cases.append((vectors[sid], allowed))
                    break
        assert cases  # the situation the fix is for does occur in this corpus
        for query, allowed in cases:
            found = reader.sentence_search(query, k, allowed)
            expected = _brute_force(reader, query, k, allowed)
            assert [c for c, _ in found] == [c for c, _ in expected]
            assert np.allclose([s for _, s in found], [s for _, s in expected], atol=1e-5)
        # without a filter: the corpus-wide brute force
        query = vectors[0]
        every = list(range(reader.faiss.ntotal))
        assert [c for c, _ in reader.sentence_search(query, 3)] == [
            c for c, _ in _brute_force(reader, query, 3, every)]
    finally:
        reader.close()
