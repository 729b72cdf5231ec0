"""Extractive answers: the best sentences of the retrieved passages, cited to exact offsets.

Owns sentence scoring (embedding similarity from vectors computed at index time, IDF-weighted term
coverage, passage rank, expected answer type, late interaction), the abstention decision and the
answer record.
Every cited sentence is checked to be exactly the stored slice of its document before the answer
leaves this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from qa.answertype import expected_answer_type
from qa.errors import CitationMismatchError
from qa.evidence import SentenceEvidence
from qa.retrieval import Hit
from qa.store import IndexReader

SIMILARITY_WEIGHT = 0.5
COVERAGE_WEIGHT = 0.5
RANK_WEIGHT = 0.1
ANSWER_TYPE_WEIGHT = 0.15
# Late interaction of the sentence's own word pieces with the question's; chosen on a separate
# SQuAD sample (seed 1, 300 questions) like the reranker's weight.
LATE_INTERACTION_WEIGHT = 1.0
SECOND_SENTENCE_RATIO = 0.85
MIN_SENTENCE_WORDS = 4
# A sentence ends in terminal punctuation, possibly followed by closing quotes or brackets; a
# "sentence" that does not (a title, a heading, a table cell, a line cut by extraction) is no answer.
_TERMINAL = frozenset(".!?;:…")
_CLOSING = "\"'”’)]"
_REFERENCE_MARKS = ("http://", "https://", "www.")  # bibliography entries, links


@dataclass(frozen=True)
class Citation:
    n: int
    passage_id: str
    doc_id: str
    title: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AnswerSentence:
    text: str
    citation: int
    doc_id: str
    start: int
    end: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Answer:
    text: str
    abstained: bool
    reason: str | None
    confidence: float
    sentences: tuple[AnswerSentence, ...] = ()
    citations: tuple[Citation, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "abstained": self.abstained,
            "reason": self.reason,
            "confidence": round(self.confidence, 4),
            "sentences": [s.to_dict() for s in self.sentences],
        }


def compose_answer(reader: IndexReader, question: str, hits: Sequence[Hit], *,
                   threshold: float, max_sentences: int = 2) -> Answer:
    """Pick up to ``max_sentences`` sentences from ``hits`` and cite them, or abstain."""
    if not hits:
        return Answer("", True, "no passage in the index matches this question", 0.0)
    wanted = expected_answer_type(question)
    scored: list[tuple[float, int, SentenceEvidence]] = []
    seen: set[int] = set()
    confidence = 0.0
    for n, hit in enumerate(hits):
        for ev in hit.evidence:
            if ev.sentence_id in seen or not is_answer_candidate(ev.text):
                continue
            seen.add(ev.sentence_id)
            relevance = SIMILARITY_WEIGHT * ev.similarity + COVERAGE_WEIGHT * ev.coverage
            confidence = max(confidence, relevance)
            score = relevance + RANK_WEIGHT / (1 + n) + LATE_INTERACTION_WEIGHT * ev.late
            if wanted is not None:
                score += ANSWER_TYPE_WEIGHT * wanted.strength(ev.text)
            scored.append((score, n, ev))
    if not scored:
        return Answer("", True, "the retrieved passages contain no complete sentence", 0.0)
    scored.sort(key=lambda x: -x[0])
    # Confidence is how well the best sentence matches the question in meaning and terms. The
    # rank and answer-type bonuses choose between sentences but are no evidence of relevance:
    # an off-topic "who" question still finds sentences with names in them.
    if confidence < threshold:
        return Answer("", True, (
            f"the documents do not seem to answer this (confidence {confidence:.2f} "
            f"below {threshold:.2f}); the nearest passages are listed"), confidence)
    chosen = [scored[0]]
    for item in scored[1:]:
        if len(chosen) >= max_sentences or item[0] < SECOND_SENTENCE_RATIO * scored[0][0]:
            break
        chosen.append(item)
    return _cite(reader, hits, chosen, confidence)


def is_answer_candidate(sentence: str) -> bool:
    """Whether a sentence can be quoted as an answer: a complete statement of at least
    MIN_SENTENCE_WORDS words. Headings and titles (no terminal punctuation), the document's own
    questions, and references (links, bibliography entries) are not answers."""
    text = sentence.strip()
    end = text.rstrip(_CLOSING)[-1:]
    if end not in _TERMINAL or end == "?" or len(text.split()) < MIN_SENTENCE_WORDS:
        return False
    lowered = text.lower()
    return not any(mark in lowered for mark in _REFERENCE_MARKS)


def _cite(reader: IndexReader, hits: Sequence[Hit],
          chosen: list[tuple[float, int, SentenceEvidence]], confidence: float) -> Answer:
    numbers: dict[int, int] = {}
    citations: list[Citation] = []
    sentences: list[AnswerSentence] = []
    for score, hit_index, cand in chosen:
        hit = hits[hit_index]
        if hit_index not in numbers:
            numbers[hit_index] = len(numbers) + 1
            citations.append(Citation(numbers[hit_index], hit.chunk_id, hit.doc_id, hit.title))
        stored = reader.text_slice(hit.doc_id, cand.start, cand.end)
        if stored != cand.text:
            raise CitationMismatchError(
                f"cited text of {hit.doc_id}[{cand.start}:{cand.end}] differs from the stored "
                "document text")
        sentences.append(AnswerSentence(cand.text, numbers[hit_index], hit.doc_id,
                                        cand.start, cand.end, round(score, 4)))
    text = " ".join(f"{s.text} [{s.citation}]" for s in sentences)
    return Answer(text, False, None, confidence, tuple(sentences), tuple(citations))
