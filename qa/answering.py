"""Extractive answers: the best sentences of the retrieved passages, cited to exact offsets.

Owns answer selection and the abstention decision, both made by fitted models (``qa.scoring``)
on named features (``qa.features``): the answer-sentence selector scores every candidate
sentence; the calibrator turns the question-level features of the chosen one into the probability
that the answer is right, the ``confidence``. Below the operating point the service abstains and
says what of the question the nearest passages lack. Also owns the answer record. Every cited
sentence is checked to be exactly the stored slice of its document before the answer leaves this
module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from qa import evidence, features, scoring, tables
from qa.answertype import expected_answer_type
from qa.errors import CitationMismatchError
from qa.evidence import QueryTerms, SentenceEvidence
from qa.features import Candidate, Missing
from qa.retrieval import Hit
from qa.store import IndexReader

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
                   qterms: QueryTerms | None = None, threshold: float | None = None,
                   max_sentences: int = 2, trace: dict[str, Any] | None = None) -> Answer:
    """Quote the ``max_sentences`` best sentences of ``hits`` (by the selector) and cite them, or
    abstain.
    ``qterms``: the question's weighted terms, as retrieval computed them; ``threshold``: the
    confidence below which to abstain (None: the calibrator's operating point); ``trace``:
    filled with the candidates and feature matrices (for training)."""
    if not hits:
        return Answer("", True, "no passage in the index matches this question", 0.0)
    wanted = expected_answer_type(question)
    candidates: list[Candidate] = []
    passages: list[list[SentenceEvidence]] = []
    seen: set[int] = set()
    texts: dict[str, str | None] = {}  # documents read to tell rows and items (_listed)
    for n, hit in enumerate(hits):
        ordered = sorted(hit.evidence, key=lambda s: s.start)
        passages.append(ordered)
        for ev in ordered:
            if ev.sentence_id in seen or not is_answer_candidate(
                    ev.text, listed=_listed(reader, hit.doc_id, ev, texts)):
                continue
            seen.add(ev.sentence_id)
            candidates.append(Candidate(n, ev))
    if not candidates:
        return Answer("", True, "the retrieved passages contain no complete sentence", 0.0)
    passage_scores = [h.score for h in hits]
    selector = scoring.model("selector")
    matrix = features.sentence_matrix(candidates, passages, passage_scores, wanted)
    scores = selector.score(matrix)
    order = np.argsort(-scores, kind="stable")
    best = candidates[int(order[0])]
    qterms = qterms or evidence.query_terms(reader, question)
    n_chunks = int(reader.manifest.get("counts", {}).get("chunks", 0))
    passage = hits[best.hit_index]
    stored = [s.terms for s in passage.evidence]
    missing = features.missing_from(question, passage.text, qterms, n_chunks,
                                    set(" ".join(stored).split()) if all(stored) else None)
    calibrator = scoring.model("calibrator")
    vector = features.question_vector(question, scores[order], passage_scores, best.evidence,
                                      missing, qterms, n_chunks, wanted)
    confidence = float(calibrator.probability(vector[None, :])[0])
    if trace is not None:
        trace.update(candidates=candidates, sentence_matrix=matrix, question_vector=vector,
                     missing=missing)
    cut = threshold if threshold is not None else (calibrator.threshold or 0.5)
    if confidence < cut:
        return Answer("", True, abstention_reason(missing, confidence, cut), confidence)
    chosen = [(float(scores[i]), candidates[int(i)]) for i in order[:max(1, max_sentences)]]
    return _cite(reader, hits, chosen, confidence)


def abstention_reason(missing: Missing, confidence: float, cut: float) -> str:
    """Why the service does not answer, naming what of the question the documents lack."""
    quoted = ", ".join(f"“{w}”" for w in missing.words()[:3])
    if missing.unknown:
        said = f"the documents mention {quoted} nowhere"
    elif quoted:
        said = f"the nearest passages do not mention {quoted}"
    else:
        said = "the nearest passages do not seem to answer it"
    return (f"{said} (confidence {confidence:.2f}, below {cut:.2f}); the nearest passages are "
            "listed")


def is_answer_candidate(sentence: str, *, listed: bool = False) -> bool:
    """Whether a sentence can be quoted as an answer: a complete statement of at least
    MIN_SENTENCE_WORDS words; or, when ``listed`` (it is a line of a table or a list,
    ``qa.tables``), a table's row or a list item as long. Headings and titles (no terminal
    punctuation), the document's own questions, and references (links, bibliography entries) are
    not answers."""
    text = sentence.strip()
    lowered = text.lower()
    if any(mark in lowered for mark in _REFERENCE_MARKS):
        return False
    if listed and tables.is_row(text):  # a row answers in its cells, with no stop at its end
        return True
    end = text.rstrip(_CLOSING)[-1:]
    if end == "?" or len(text.split()) < MIN_SENTENCE_WORDS:
        return False
    return end in _TERMINAL or (listed and tables.is_list_item(text))


def _listed(reader: IndexReader, doc_id: str, ev: SentenceEvidence,
            texts: dict[str, str | None]) -> bool:
    """Whether a sentence that looks like a row or a list item is one: a line of a paragraph of
    them in its document (``qa.tables.in_line_block``). The document is read (once, into
    ``texts``) only for such sentences."""
    if not (tables.is_row(ev.text) or tables.is_list_item(ev.text)):
        return False
    if doc_id not in texts:
        texts[doc_id] = reader.document_text(doc_id)
    text = texts[doc_id]
    return text is not None and tables.in_line_block(text, ev.start)


def _cite(reader: IndexReader, hits: Sequence[Hit],
          chosen: list[tuple[float, Candidate]], confidence: float) -> Answer:
    numbers: dict[int, int] = {}
    citations: list[Citation] = []
    sentences: list[AnswerSentence] = []
    for score, candidate in chosen:
        hit_index, cand = candidate.hit_index, candidate.evidence
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
