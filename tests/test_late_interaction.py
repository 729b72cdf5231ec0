"""Late interaction at query time: the service uses the stored token vectors only when asked."""

from __future__ import annotations

from typing import Any

import pytest

from qa import store
from qa.config import Settings
from qa.embedding import Embedder
from qa.service import QAService


def test_late_interaction_is_used_only_when_enabled(built_tiny: Settings, embedder: Embedder,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Hybrid search reranks on the stored token vectors; with QA_LATE_INTERACTION=0 (or in a
    single-retriever mode) it never reads them."""
    calls: list[int] = []
    real = store.IndexReader.match_tokens

    def counting(self: store.IndexReader, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(store.IndexReader, "match_tokens", counting)
    question = "How many members does the Joint Water Commission have?"
    on = QAService(built_tiny, embedder=embedder)
    on.search(question)
    assert len(calls) == 1
    off = QAService(built_tiny.replace(late_interaction=0), embedder=embedder)
    off.search(question)
    on.search(question, mode="dense")
    assert len(calls) == 1
    assert off.search(question)["passages"][0]["text"]  # still answers
