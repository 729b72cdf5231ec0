"""Retrieval through the service: the BM25 side, prepared on a helper thread while the question
is encoded, gives what inline preparation gives, its errors reach the caller, and it runs
elsewhere; an index built by other text handling is served, and flagged."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import pytest

from qa import retrieval
from qa.config import Settings
from qa.embedding import Embedder
from qa.errors import IndexCorruptError
from qa.service import QAService

QUESTIONS = [
    "How many members does the Joint Water Commission have?",
    "Where is the observatory?",
    "Which railway crosses the desert?",
    "omul fish quotas",
]


class _Inline:
    """An executor that runs each job at once, on the calling thread."""

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> Future[Any]:
        done: Future[Any] = Future()
        done.set_result(fn(*args, **kwargs))
        return done


@pytest.mark.parametrize("mode", retrieval.MODES)
def test_helper_thread_gives_what_inline_preparation_gives(built_tiny: Settings,
                                                           embedder: Embedder,
                                                           mode: str) -> None:
    threaded = QAService(built_tiny, embedder=embedder)
    inline = QAService(built_tiny, embedder=embedder)
    inline._lexical_helpers = _Inline()  # type: ignore[assignment]
    docs = [d["doc_id"] for d in threaded.documents()]
    for question in QUESTIONS:
        for doc_ids in (None, docs[:1]):
            a = threaded.search(question, doc_ids=doc_ids, mode=mode)["passages"]
            b = inline.search(question, doc_ids=doc_ids, mode=mode)["passages"]
            assert [(p["id"], p["score"]) for p in a] == [(p["id"], p["score"]) for p in b]
    assert threaded.ask(QUESTIONS[0], use_cache=False)["answer"] == \
        inline.ask(QUESTIONS[0], use_cache=False)["answer"]


def test_bm25_side_runs_on_a_helper_thread(built_tiny: Settings, embedder: Embedder,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    names: list[str] = []
    real = retrieval.prepare_lexical

    def recording(*args: Any, **kwargs: Any) -> retrieval.LexicalSide:
        names.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(retrieval, "prepare_lexical", recording)
    QAService(built_tiny, embedder=embedder).search(QUESTIONS[0])
    assert len(names) == 1 and names[0].startswith("qa-lexical")
    assert names[0] != threading.current_thread().name


def test_errors_of_the_helper_thread_reach_the_caller(built_tiny: Settings, embedder: Embedder,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> retrieval.LexicalSide:
        raise IndexCorruptError("chunks_fts is damaged")

    monkeypatch.setattr(retrieval, "prepare_lexical", broken)
    with pytest.raises(IndexCorruptError, match="damaged"):
        QAService(built_tiny, embedder=embedder).ask(QUESTIONS[0], use_cache=False)


def test_an_index_built_by_other_text_handling_is_served_and_flagged(
        built_tiny: Settings, embedder: Embedder, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """After an upgrade that changes the pipeline, the old index still answers, and both the
    log and the status say that `qa index` should rebuild it."""
    current = QAService(built_tiny, embedder=embedder)
    assert current.status()["stale"] is False
    monkeypatch.setattr("qa.service.PIPELINE_VERSION", "next")
    with caplog.at_level("WARNING", logger="qa.service"):
        upgraded = QAService(built_tiny, embedder=embedder)
        assert upgraded.search(QUESTIONS[0])["passages"]
    assert upgraded.status()["stale"] is True
    assert "run `qa index` to rebuild it" in caplog.text


def test_question_terms_keep_the_questions_order(built_tiny: Settings) -> None:
    """Not a set's order, which is salted per process: terms of equal weight (here four the
    corpus never uses) are named in the question's order by every process."""
    from qa import evidence, features, store, terms

    reader = store.open_current(built_tiny.index_dir)
    question = "Who baked the sourdough loaf of bread for the Almaty sourdough festival?"
    qterms = evidence.query_terms(reader, question)
    stems = [terms.stem(t) for t in ("baked", "sourdough", "loaf", "bread", "almaty",
                                     "festival")]
    assert list(qterms.weights) == stems
    n_chunks = int(reader.manifest["counts"]["chunks"])
    missing = features.missing_from(question, "A passage about something else.", qterms,
                                    n_chunks)
    assert missing.unknown == ("baked", "sourdough", "loaf", "bread", "almaty", "festival")
