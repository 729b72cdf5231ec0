"""Answer candidates, the reranking pool and the reranker: pure functions, no model or index."""

from __future__ import annotations

import pytest

from qa.answering import compose_answer, is_answer_candidate
from qa.evidence import QueryTerms, SentenceEvidence
from qa.retrieval import POOL_PER_RETRIEVER, Hit, _pool


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


class _Text:
    """The one store method answer composition reads: the stored slice it cites."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.manifest = {"counts": {"chunks": 10}}

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
                                qterms=QueryTerms({"forum": 1.0}), threshold=0.0,
                                max_sentences=1)
        assert answer.sentences[0].text == expected
