"""The embedding wrapper: vectors come back in the caller's order whatever the batching."""

from __future__ import annotations

import numpy as np

from qa.embedding import Embedder

TEXTS = [
    "Short.",
    "A much longer sentence about the Conference on Interaction and Confidence Building Measures "
    "in Asia, its summits and its ministerial meetings, which needs many word pieces.",
    "Medium length text on the think tank forum.",
    "Kazakhstan.",
    "Another long passage: the secretariat moved to Astana and the member states agreed on "
    "a new budget, new staff and a new programme of confidence building measures.",
]


def test_torch_vectors_keep_the_input_order_across_length_sorted_batches(
        embedder: Embedder) -> None:
    together = embedder.encode(TEXTS, batch_size=2)
    one_by_one = np.vstack([embedder.encode([t], batch_size=1) for t in TEXTS])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    reference = embedder.sentence_transformer.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(together, reference, atol=1e-5)


def test_progress_counts_every_text(embedder: Embedder) -> None:
    seen: list[tuple[int, int]] = []
    embedder.encode(TEXTS, batch_size=2, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(2, 5), (4, 5), (5, 5)]
