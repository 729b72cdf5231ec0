"""Named features: every signal that decides a passage's rank, the sentence quoted as the answer
and whether to answer at all, computed in one place.

Three feature vectors, each a row of a matrix whose columns are named by a tuple below:

- ``PASSAGE_FEATURES``: one row per passage of the reranking pool (``passage_matrix``).
- ``SENTENCE_FEATURES``: one row per candidate answer sentence of the returned passages
  (``sentence_matrix``), with its position in its passage and its neighbours' evidence.
- ``QUESTION_FEATURES``: one row per question (``question_vector``): the best and second-best
  scores and their margins, which of the question's rare terms, numbers, ordinals and names the
  best sentence's passage lacks, whether the expected answer type is present.

The models in ``qa.scoring`` combine them; no weight lives here. Pure functions of the evidence
``retrieval`` and ``evidence`` gather, no model and no index reads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from qa import terms
from qa.answertype import AnswerType
from qa.evidence import QueryTerms, SentenceEvidence, term_set

PASSAGE_FEATURES = (
    "chunk_similarity",     # the passage vector's cosine with the question
    "sentence_similarity",  # its best sentence's cosine
    "bm25",                 # BM25, divided by the pool's best
    "sentence_coverage",    # its best sentence's IDF-weighted share of the question's terms
    "proximity",            # its best sentence's share of the question's word pairs
    "answer_type",          # max(strength x relevance) of a sentence of the expected type
    "named_author",         # 1 when the question names the document's author
    "late_interaction",     # IDF-weighted MaxSim of the question's pieces in the passage
    "sentence_late",        # the same, in its best sentence
    "fused_rank",           # reciprocal-rank fusion score, divided by the pool's best
)

SENTENCE_FEATURES = (
    "similarity", "coverage", "late", "proximity",  # the sentence's own evidence
    "answer_type",          # strength of the expected answer type in it (0: no type expected)
    "passage_score_gap",    # its passage's rerank score minus the best passage's
    "passage_first",        # 1 in the best passage
    "passage_rank_inverse",  # 1 / (1 + rank of its passage)
    "position_first",       # 1 for the passage's first sentence
    "position_relative",    # 0 (first) .. 1 (last sentence of its passage)
    "previous_coverage", "previous_similarity",  # the sentence before it (0 if none)
    "next_coverage", "next_similarity",  # the sentence after it (0 if none)
    "similarity_gap",       # its similarity minus the best candidate's
    "coverage_gap",         # its coverage minus the best candidate's
    "log_words",            # log(1 + words)
    "late_weakest",         # the weakest late-interaction match of a question piece in it
    "late_rarest",          # the match of the question's rarest piece in it
)

QUESTION_FEATURES = (
    "best_sentence",        # the answer selector's score of the chosen sentence
    "sentence_margin",      # ... minus the second-best sentence's
    "best_passage",         # the reranker's score of the best passage
    "passage_margin",       # ... minus the second passage's
    "best_similarity", "best_coverage", "best_late", "best_proximity",  # the chosen sentence's
    "passage_coverage",     # the chosen sentence's passage's share of the question's terms
    "missing_rare",         # largest IDF of a question term its passage lacks / log(chunks)
    "missing_unknown",      # 1 when a question term occurs nowhere in the index
    "missing_number",       # 1 when a number or year of the question is not in its passage
    "missing_ordinal",      # the same for an ordinal ("fifth", "9th")
    "missing_name",         # the same for a name (a capitalised word not opening the question)
    "sentence_missing_rare",  # largest IDF of a question term the chosen sentence lacks / log(chunks)
    "sentence_missing_name",  # 1 when a name of the question is not in the chosen sentence
    "sentence_missing_number",  # the same for a number or an ordinal
    "negation_mismatch",    # 1 when the question says "not"/"never"/"no" and the sentence does not
    "type_expected",        # 1 when the question wants an answer type (date, quantity, name ...)
    "type_missing",         # 1 when it does and the chosen sentence has none
    "question_terms",       # log(1 + the question's content terms)
    "best_late_weakest",    # the chosen sentence's weakest match of a question piece
    "best_late_rarest",     # ... and its match of the question's rarest piece
)

_ORDINAL = re.compile(r"\b(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|"
                      r"eleventh|twelfth|thirteenth|fourteenth|fifteenth|sixteenth|seventeenth|"
                      r"eighteenth|nineteenth|twentieth|\d+(?:st|nd|rd|th))\b", re.IGNORECASE)
_NUMBER = re.compile(r"\b\d[\d,.]*\b")
_NAME = re.compile(r"(?<=[^\s.!?]\s)[A-Z][\w'’-]*")
_NEGATION = re.compile(r"\b(not|never|no|none|neither|nor|without)\b|n't\b", re.IGNORECASE)


def passage_matrix(pool: Sequence[int], *, dense: Mapping[int, float],
                   lexical: Mapping[int, float], fused: Mapping[int, float],
                   found: Mapping[int, Sequence[SentenceEvidence]],
                   wanted: AnswerType | None = None, named: Collection[int] = (),
                   late: Mapping[int, float] | None = None,
                   sentence_late: Mapping[int, float] | None = None) -> np.ndarray:
    """``PASSAGE_FEATURES`` of every pooled passage (rows in ``pool`` order)."""
    top_bm25 = max(lexical.values(), default=0.0)
    top_fused = max((fused.get(r, 0.0) for r in pool), default=0.0)
    late = late or {}
    sentence_late = sentence_late or {}
    rows = []
    for rowid in pool:
        sentences = found.get(rowid, ())
        rows.append((
            dense.get(rowid, 0.0),
            max((s.similarity for s in sentences), default=0.0),
            lexical.get(rowid, 0.0) / top_bm25 if top_bm25 > 0 else 0.0,
            max((s.coverage for s in sentences), default=0.0),
            max((s.proximity for s in sentences), default=0.0),
            typed_relevance(sentences, wanted) if wanted is not None else 0.0,
            1.0 if rowid in named else 0.0,
            late.get(rowid, 0.0),
            max((sentence_late.get(s.sentence_id, 0.0) for s in sentences), default=0.0),
            fused.get(rowid, 0.0) / top_fused if top_fused > 0 else 0.0,
        ))
    return np.array(rows, dtype=np.float64).reshape(len(pool), len(PASSAGE_FEATURES))


def typed_relevance(sentences: Sequence[SentenceEvidence], wanted: AnswerType) -> float:
    """max(strength x relevance) over sentences sharing a term with the question. Strength is at
    most 1, so sentences are tried by falling relevance and the (regex) strength test stops as
    soon as no remaining sentence could beat the best so far."""
    best = 0.0
    candidates = [((s.similarity + s.coverage) / 2, s.text) for s in sentences if s.coverage > 0]
    for relevance, text in sorted(candidates, reverse=True):
        if relevance <= best:
            break
        best = max(best, wanted.strength(text) * relevance)
    return best


@dataclass(frozen=True)
class Candidate:
    """A sentence that may be quoted: its passage's place among the hits and its evidence."""

    hit_index: int
    evidence: SentenceEvidence


def sentence_matrix(candidates: Sequence[Candidate],
                    passages: Sequence[Sequence[SentenceEvidence]],
                    passage_scores: Sequence[float],
                    wanted: AnswerType | None = None) -> np.ndarray:
    """``SENTENCE_FEATURES`` of each candidate. ``passages``: every sentence of each hit in text
    order (neighbours are looked up there); ``passage_scores``: each hit's rerank score."""
    if not candidates:
        return np.zeros((0, len(SENTENCE_FEATURES)), dtype=np.float64)
    places = [{s.sentence_id: i for i, s in enumerate(sentences)} for sentences in passages]
    best_passage = passage_scores[0] if passage_scores else 0.0
    rows = []
    for cand in candidates:
        ev = cand.evidence
        sentences = passages[cand.hit_index]
        i = places[cand.hit_index].get(ev.sentence_id, 0)
        before = sentences[i - 1] if i > 0 else None
        after = sentences[i + 1] if i + 1 < len(sentences) else None
        rows.append((
            ev.similarity, ev.coverage, ev.late, ev.proximity,
            wanted.strength(ev.text) if wanted is not None else 0.0,
            passage_scores[cand.hit_index] - best_passage,
            1.0 if cand.hit_index == 0 else 0.0,
            1.0 / (1 + cand.hit_index),
            1.0 if i == 0 else 0.0,
            i / (len(sentences) - 1) if len(sentences) > 1 else 0.0,
            before.coverage if before else 0.0, before.similarity if before else 0.0,
            after.coverage if after else 0.0, after.similarity if after else 0.0,
            0.0, 0.0,
            math.log1p(len(ev.text.split())),
            ev.late_weakest, ev.late_rarest,
        ))
    out = np.array(rows, dtype=np.float64)
    gap = SENTENCE_FEATURES.index("similarity_gap")
    out[:, gap] = out[:, 0] - out[:, 0].max()
    out[:, gap + 1] = out[:, 1] - out[:, 1].max()
    return out


@dataclass(frozen=True)
class Missing:
    """What of the question the chosen sentence's passage lacks, in the question's own words."""

    terms: tuple[str, ...] = ()      # rare content words, rarest first
    unknown: tuple[str, ...] = ()    # words that occur nowhere in the index
    numbers: tuple[str, ...] = ()
    ordinals: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    max_idf: float = 0.0             # the largest IDF among the missing terms
    coverage: float = 0.0            # the passage's IDF-weighted share of the question's terms

    def words(self) -> tuple[str, ...]:
        """The missing words worth naming in an abstention's reason, most telling first."""
        seen: dict[str, str] = {}
        for word in (*self.unknown, *self.ordinals, *self.numbers, *self.names, *self.terms):
            seen.setdefault(word.lower(), word)
        return tuple(seen.values())


def missing_from(question: str, passage: str, qterms: QueryTerms, n_chunks: int,
                 present: set[str] | None = None) -> Missing:
    """The question's terms (by IDF), numbers, ordinals and names that ``passage`` lacks.
    ``present``: the passage's stemmed terms, when known (else ``passage`` is tokenized)."""
    have = term_set(passage) if present is None else present
    lowered = passage.lower()
    words: dict[str, str] = {}
    for token in terms.tokens(question):
        if token not in terms.STOPWORDS:
            words.setdefault(terms.stem(token), token)
    covered = set(have)
    for group, other in qterms.aliases:
        if other <= have:
            covered |= group
    absent = sorted((t for t in qterms.weights if t not in covered),
                    key=lambda t: -qterms.weights[t])
    unseen = math.log((n_chunks + 1) / 0.5) - 1e-9
    return Missing(
        terms=tuple(words.get(t, t) for t in absent),
        unknown=tuple(words.get(t, t) for t in absent if qterms.weights[t] >= unseen),
        numbers=tuple(m.group(0) for m in _NUMBER.finditer(question)
                      if m.group(0).lower() not in lowered),
        ordinals=tuple(m.group(0) for m in _ORDINAL.finditer(question)
                       if m.group(0).lower() not in lowered),
        names=tuple(m.group(0) for m in _NAME.finditer(question)
                    if m.group(0).lower() not in terms.STOPWORDS
                    and terms.stem(m.group(0).lower()) not in covered),
        max_idf=max((qterms.weights[t] for t in absent), default=0.0),
        coverage=qterms.coverage(have),
    )


def question_vector(question: str, sentence_scores: np.ndarray, passage_scores: Sequence[float],
                    best: SentenceEvidence, missing: Missing, qterms: QueryTerms,
                    n_chunks: int, wanted: AnswerType | None) -> np.ndarray:
    """``QUESTION_FEATURES`` of a question whose chosen sentence is ``best``;
    ``sentence_scores``: the selector's scores of all candidates, best first; ``missing``:
    what the chosen sentence's passage lacks (``missing_from``)."""
    best_score = float(sentence_scores[0])
    second = float(sentence_scores[1]) if len(sentence_scores) > 1 else best_score - 10.0
    top = float(passage_scores[0]) if passage_scores else 0.0
    runner_up = float(passage_scores[1]) if len(passage_scores) > 1 else top - 10.0
    type_present = wanted is not None and wanted.strength(best.text) > 0
    in_sentence = set(best.terms.split()) if best.terms else term_set(best.text)
    lowered = best.text.lower()
    lacking = [w for t, w in qterms.weights.items() if t not in in_sentence]
    return np.array([
        best_score, best_score - second, top, top - runner_up,
        best.similarity, best.coverage, best.late, best.proximity,
        missing.coverage,
        missing.max_idf / math.log(n_chunks + 2),
        1.0 if missing.unknown else 0.0,
        1.0 if missing.numbers else 0.0,
        1.0 if missing.ordinals else 0.0,
        1.0 if missing.names else 0.0,
        max(lacking, default=0.0) / math.log(n_chunks + 2),
        1.0 if any(m.group(0).lower() not in lowered for m in _NAME.finditer(question)
                   if m.group(0).lower() not in terms.STOPWORDS) else 0.0,
        1.0 if any(m.group(0).lower() not in lowered for pattern in (_NUMBER, _ORDINAL)
                   for m in pattern.finditer(question)) else 0.0,
        1.0 if _NEGATION.search(question) and not _NEGATION.search(best.text) else 0.0,
        1.0 if wanted is not None else 0.0,
        1.0 if wanted is not None and not type_present else 0.0,
        math.log1p(len(qterms.weights)),
        best.late_weakest, best.late_rarest,
    ], dtype=np.float64)
