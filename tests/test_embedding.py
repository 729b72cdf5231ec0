"""The embedding wrapper: vectors come back in the caller's order whatever the batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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


def test_token_vectors_come_from_the_same_pass(embedder: Embedder) -> None:
    """encode_with_tokens gives encode's vectors, and one unit vector per word piece of each
    text, without [CLS] and [SEP]."""
    vectors, tokens = embedder.encode_with_tokens(TEXTS, batch_size=2)
    np.testing.assert_allclose(vectors, embedder.encode(TEXTS), atol=1e-5)
    tokenizer = embedder.sentence_transformer.tokenizer
    for text, t in zip(TEXTS, tokens, strict=True):
        assert t.ids.tolist() == tokenizer(text, add_special_tokens=False)["input_ids"]
        assert t.vectors.shape == (len(t.ids), embedder.dimension)
        np.testing.assert_allclose(np.linalg.norm(t.vectors, axis=1), 1.0, atol=1e-5)


def test_onnx_token_vectors_equal_torch(embedder: Embedder, onnx_dir: Path) -> None:
    onnx = Embedder(backend="onnx", onnx_dir=onnx_dir)
    if not onnx.ensure_onnx():
        pytest.skip("ONNX export not possible here")
    torch_vectors, torch_tokens = embedder.encode_with_tokens(TEXTS)
    onnx_vectors, onnx_tokens = onnx.encode_with_tokens(TEXTS)
    np.testing.assert_allclose(onnx_vectors, torch_vectors, atol=1e-4)
    for a, b in zip(torch_tokens, onnx_tokens, strict=True):
        assert a.ids.tolist() == b.ids.tolist()
        assert float((a.vectors * b.vectors).sum(axis=1).min()) > 0.9999


def test_query_tokens_carry_their_text(embedder: Embedder) -> None:
    vector, tokens = embedder.encode_query_with_tokens("According to Qiang, how often?")
    np.testing.assert_allclose(vector, embedder.encode_query("According to Qiang, how often?"),
                               atol=1e-5)
    assert tokens.pieces == ("according", "to", "qi", "##ang", ",", "how", "often", "?")
    assert len(tokens.ids) == len(tokens.pieces) == tokens.vectors.shape[0]
