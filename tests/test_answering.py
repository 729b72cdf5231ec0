"""Answer candidates, the reranking pool and the reranker: pure functions, no model or index."""

from __future__ import annotations

import pytest

from qa.answering import LATE_INTERACTION_WEIGHT, compose_answer, is_answer_candidate
from qa.answertype import expected_answer_type
from qa.evidence import SentenceEvidence
from qa.retrieval import (
    POOL_PER_RETRIEVER,
    W_LATE_INTERACTION,
    W_PROXIMITY,
    W_SENTENCE_LATE,
    Hit,
    _pool,
    _rerank,
)


@pytest.mark.parametrize(("sentence", "expected"), [
    ("The meeting invited more than 30 representatives of 14 countries.", True),
    ('He called it "a new vision for Asia."', True),
    ("The Secretariat moved to Astana (in 2006).", True),
    ("Summary of the Ninth Meeting of the CICA Think Tank Forum", False),  # a title
    ("2. Regional Security Architecture", False),  # a heading
    ("Why does CICA need a secretariat?", False),  # the document's own question
    ("See Imai, Middle Powers, <http://www.mei.edu/content/map>.", False),  # a reference
    ("It was agreed.", False),  # too short to answer anything
    ("He called the idea “a bridge between regions.”", True),  # closing quotes after the stop
    ('Was it called "a bridge between regions?"', False),  # a question inside its quotes
    ("Details are given at WWW.S-CICA.ORG for every member.", False),  # a link, in any case
    ("The last line of a table cell with no stop", False),
])
def test_answer_candidates(sentence: str, expected: bool) -> None:
    assert is_answer_candidate(sentence) is expected


def test_pool_keeps_the_top_of_every_retriever() -> None:
    """A passage that one retriever ranks first but the others miss still reaches the reranker,
    even when the fused top of the pool is full."""
    dense = [(i, 1.0) for i in range(100)]
    sentences = [(i, 1.0) for i in range(100)]
    lexical = [(500, 9.0), *((i, 1.0) for i in range(100))]
    fused: dict[int, float] = {}
    for ranked in (dense, sentences, lexical):
        for rank, (rowid, _) in enumerate(ranked, 1):
            fused[rowid] = fused.get(rowid, 0.0) + 1 / (60 + rank)
    pool = _pool(fused, [dense, sentences, lexical], size=30)
    assert pool[:30] == sorted(fused, key=lambda r: -fused[r])[:30]
    assert 500 in pool
    assert len(pool) == len(set(pool)) <= 30 + 3 * POOL_PER_RETRIEVER


def test_rerank_prefers_the_passage_holding_the_expected_answer_type() -> None:
    def evidence(rowid: int, text: str) -> list[SentenceEvidence]:
        return [SentenceEvidence(rowid, rowid, 0, len(text), text, 0.6, 0.5)]

    found = {1: evidence(1, "The accord was signed by the member states."),
             2: evidence(2, "The accord was signed in March 2014.")}
    dense = {1: 0.5, 2: 0.5}
    lexical = {1: 3.0, 2: 3.0}
    plain = _rerank([1, 2], dense, lexical, found)
    assert plain[1] == plain[2]
    typed = _rerank([1, 2], dense, lexical, found, expected_answer_type("When was it signed?"))
    assert typed[2] > typed[1] == plain[1]


def test_rerank_adds_late_interaction() -> None:
    text = "The accord was signed by the member states."
    found = {r: [SentenceEvidence(r, r, 0, len(text), text, 0.6, 0.5)] for r in (1, 2)}
    dense, lexical = {1: 0.5, 2: 0.5}, {1: 3.0, 2: 3.0}
    plain = _rerank([1, 2], dense, lexical, found)
    late = _rerank([1, 2], dense, lexical, found, late={1: 0.4, 2: 0.7})
    assert late[1] == pytest.approx(plain[1] + W_LATE_INTERACTION * 0.4)
    assert late[2] == pytest.approx(plain[2] + W_LATE_INTERACTION * 0.7)


def test_rerank_adds_the_best_sentences_late_interaction() -> None:
    """Of two passages with the same evidence otherwise, the one whose pieces match within one
    sentence ranks higher; a passage's other sentences do not add up."""
    text = "The accord was signed by the member states."
    found = {r: [SentenceEvidence(r, 10 * r + n, 0, len(text), text, 0.6, 0.5) for n in (0, 1)]
             for r in (1, 2)}
    dense, lexical = {1: 0.5, 2: 0.5}, {1: 3.0, 2: 3.0}
    plain = _rerank([1, 2], dense, lexical, found)
    scored = _rerank([1, 2], dense, lexical, found,
                     sentence_late={10: 0.3, 11: 0.3, 20: 0.5, 21: 0.1})
    assert scored[1] == pytest.approx(plain[1] + W_SENTENCE_LATE * 0.3)
    assert scored[2] == pytest.approx(plain[2] + W_SENTENCE_LATE * 0.5)


def test_rerank_adds_the_best_sentences_proximity() -> None:
    text = "The accord was signed by the member states."
    found = {r: [SentenceEvidence(r, 10 * r + n, 0, len(text), text, 0.6, 0.5, 0.0, p)
                 for n, p in enumerate((0.2, 0.3 * r))] for r in (1, 2)}
    dense, lexical = {1: 0.5, 2: 0.5}, {1: 3.0, 2: 3.0}
    scores = _rerank([1, 2], dense, lexical, found)
    bare = {r: [s._replace(proximity=0.0) for s in found[r]] for r in found}
    plain = _rerank([1, 2], dense, lexical, bare)
    assert scores[1] == pytest.approx(plain[1] + W_PROXIMITY * 0.3)  # the best sentence's
    assert scores[2] == pytest.approx(plain[2] + W_PROXIMITY * 0.6)


class _Text:
    """The one store method answer composition reads: the stored slice it cites."""

    def __init__(self, text: str) -> None:
        self.text = text

    def text_slice(self, doc_id: str, start: int, end: int) -> str:
        return self.text[start:end]


def test_answer_prefers_the_sentence_with_more_late_interaction() -> None:
    first, second = "The forum met in Shanghai in 2021.", "The forum elected a new chair."
    text = f"{first} {second}"
    spans = [(first, 0), (second, len(first) + 1)]

    def hit(late: tuple[float, float]) -> Hit:
        evidence = tuple(SentenceEvidence(1, n, start, start + len(s), s, 0.5, 0.5, late[n])
                         for n, (s, start) in enumerate(spans))
        return Hit(1, "d#0", "d", "D", 0, len(text), text, None, None, 1.0, 0.5, 1.0, evidence)

    for late, expected in (((0.2, 0.6), second), ((0.6, 0.2), first)):
        answer = compose_answer(_Text(text), "What did the forum do?", [hit(late)],  # type: ignore[arg-type]
                                threshold=0.1, max_sentences=1)
        assert answer.sentences[0].text == expected
    assert LATE_INTERACTION_WEIGHT > 0
