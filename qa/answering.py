"""Extractive answers: the best sentences of the retrieved passages, cited to exact offsets.

Owns sentence scoring (embedding similarity from vectors computed at index time, lexical overlap,
passage rank), the abstention decision and the response shape. Every cited sentence is checked to
be exactly the stored slice of its document before the answer leaves this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from qa import terms
from qa.errors import CitationMismatchError
from qa.retrieval import Hit
from qa.store import IndexReader

SIMILARITY_WEIGHT = 0.6
OVERLAP_WEIGHT = 0.3
RANK_WEIGHT = 0.1
SECOND_SENTENCE_RATIO = 0.85
MIN_SENTENCE_WORDS = 4


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


@dataclass(frozen=True)
class _Candidate:
    hit_index: int
    rowid: int
    start: int
    end: int
    text: str


def compose_answer(reader: IndexReader, question: str, query_vector: np.ndarray,
                   hits: Sequence[Hit], *, threshold: float, max_sentences: int = 2,
                   extra_terms: Sequence[str] = ()) -> Answer:
    """Pick up to ``max_sentences`` sentences from ``hits`` and cite them, or abstain."""
    if not hits:
        return Answer("", True, "no passage in the index matches this question", 0.0)
    candidates = _candidates(reader, hits)
    if not candidates:
        return Answer("", True, "the retrieved passages contain no complete sentence", 0.0)
    scores = _score(reader, question, query_vector, candidates, extra_terms)
    order = np.argsort(-scores)
    best = int(order[0])
    confidence = float(scores[best])
    if confidence < threshold:
        return Answer("", True, (
            f"the documents do not seem to answer this (confidence {confidence:.2f} "
            f"below {threshold:.2f}); the nearest passages are listed"), confidence)
    chosen = [best]
    for idx in order[1:]:
        if len(chosen) >= max_sentences or scores[idx] < SECOND_SENTENCE_RATIO * confidence:
            break
        chosen.append(int(idx))
    return _cite(reader, hits, [candidates[i] for i in chosen],
                 [float(scores[i]) for i in chosen], confidence)


def _candidates(reader: IndexReader, hits: Sequence[Hit]) -> list[_Candidate]:
    seen: set[int] = set()
    out: list[_Candidate] = []
    for n, hit in enumerate(hits):
        for rowid, start, end in reader.sentences_within(hit.doc_id, hit.start, hit.end):
            if rowid in seen:
                continue
            seen.add(rowid)
            text = hit.text[start - hit.start:end - hit.start]
            if len(text.split()) < MIN_SENTENCE_WORDS:
                continue
            out.append(_Candidate(n, rowid, start, end, text))
    return out


def _score(reader: IndexReader, question: str, query_vector: np.ndarray,
           candidates: list[_Candidate], extra_terms: Sequence[str]) -> np.ndarray:
    rowids = np.fromiter((c.rowid for c in candidates), dtype=np.int64)
    vectors = np.asarray(reader.sentence_vectors[np.sort(rowids)], dtype=np.float32)
    position = {int(r): i for i, r in enumerate(np.sort(rowids))}
    q = np.asarray(query_vector, dtype=np.float32).reshape(-1)
    similarity = np.array([vectors[position[int(r)]] @ q for r in rowids], dtype=np.float32)
    wanted = {terms.stem(t) for t in terms.content_terms(question)}
    for phrase in extra_terms:
        wanted |= {terms.stem(t) for t in terms.content_terms(phrase)}
    overlap = np.zeros(len(candidates), dtype=np.float32)
    if wanted:
        for i, c in enumerate(candidates):
            have = {terms.stem(t) for t in terms.tokens(c.text)}
            overlap[i] = len(wanted & have) / len(wanted)
    rank = np.array([1.0 / (1 + c.hit_index) for c in candidates], dtype=np.float32)
    scores = (SIMILARITY_WEIGHT * similarity + OVERLAP_WEIGHT * overlap + RANK_WEIGHT * rank)
    return scores


def _cite(reader: IndexReader, hits: Sequence[Hit], chosen: list[_Candidate],
          scores: list[float], confidence: float) -> Answer:
    numbers: dict[int, int] = {}
    citations: list[Citation] = []
    sentences: list[AnswerSentence] = []
    for cand, score in zip(chosen, scores, strict=True):
        hit = hits[cand.hit_index]
        if cand.hit_index not in numbers:
            numbers[cand.hit_index] = len(numbers) + 1
            citations.append(Citation(numbers[cand.hit_index], hit.chunk_id, hit.doc_id,
                                      hit.title))
        stored = reader.text_slice(hit.doc_id, cand.start, cand.end)
        if stored != cand.text:
            raise CitationMismatchError(
                f"cited text of {hit.doc_id}[{cand.start}:{cand.end}] differs from the stored "
                "document text")
        sentences.append(AnswerSentence(cand.text, numbers[cand.hit_index], hit.doc_id,
                                        cand.start, cand.end, round(score, 4)))
    text = " ".join(f"{s.text} [{s.citation}]" for s in sentences)
    return Answer(text, False, None, confidence, tuple(sentences), tuple(citations))
