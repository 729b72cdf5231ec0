"""Hybrid retrieval: candidates from three retrievers fused by reciprocal rank, then reranked.

Stage one takes the top candidates of dense search over chunk vectors, dense search over sentence
vectors and BM25 over chunk text (SQLite FTS5), and fuses them by weighted reciprocal rank fusion.
Stage two reranks the fused pool on the evidence each passage holds: its own similarity, its best
sentence's similarity, its BM25 score, its best sentence's IDF-weighted term coverage, and late
interaction (each question word piece's best match among the passage's contextual word-piece
vectors, IDF-weighted: a soft, context-aware term match), of the passage and of its best
sentence, and the share of the question's word pairs its best sentence holds as pairs too (a
loose phrase match). Either form of an acronym counts in BM25, coverage and late interaction;
the author a question names is scored on the documents' metadata, not matched in passages.
The signals are the named columns of ``features.passage_matrix``; the fitted reranker of
``qa.scoring`` combines them (no weight lives here).
Overlapping chunks of one region are returned once. Reads the index only through
``store.IndexReader``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from qa import evidence, features, scoring, terms
from qa.acronyms import alias_spans, aliases
from qa.answertype import expected_answer_type
from qa.attribution import AuthorTable, name_spans, named_documents
from qa.evidence import LateQuery, QueryTerms, SentenceEvidence
from qa.store import IndexReader

MODES = ("hybrid", "dense", "lexical")  # "dense": chunk and sentence vectors, no BM25

EXPAND_DENSE = False
# Stage two reranks the best POOL_SIZE by fused rank (at least 2k) and every retriever's top
# POOL_PER_RETRIEVER (see _pool): 32 passages on average over the gold questions. The fused top
# 30 reaches a passage that two retrievers rank in their twenties (20 did not: one gold question
# fewer in the top 5); each retriever's top 5 still brings the passages only one of them finds,
# and costs less than its top 10 with the fused top 30 (35 passages). SQuAD: no figure moved.
POOL_SIZE = 30
POOL_PER_RETRIEVER = 5


@dataclass(frozen=True)
class Hit:
    rowid: int
    chunk_id: str
    doc_id: str
    title: str
    start: int
    end: int
    text: str
    section: str | None
    page: int | None
    score: float
    dense: float | None
    lexical: float | None
    evidence: tuple[SentenceEvidence, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.chunk_id, "doc_id": self.doc_id, "title": self.title, "text": self.text,
            "score": self.score, "dense": self.dense, "lexical": self.lexical,
            "start": self.start, "end": self.end, "section": self.section, "page": self.page,
        }


@dataclass(frozen=True)
class Query:
    """A question prepared for retrieval: the text the encoder sees and its FTS5 form."""

    question: str
    dense_text: str
    fts: str
    aliases: tuple[tuple[str, str], ...]
    named_docs: frozenset[str] = frozenset()  # documents whose author the question names
    name_spans: tuple[tuple[int, int], ...] = ()  # where the question names them
    alias_spans: tuple[tuple[int, int, str], ...] = ()  # acronyms and long forms: other form


@dataclass(frozen=True)
class LexicalSide:
    """What search needs that does not depend on the question's vector, so that it can be
    prepared while the question is being encoded: the question's weighted terms, the chunk ids
    a document filter allows (None: all), and BM25's candidates."""

    qterms: QueryTerms
    allowed: list[int] | None
    ranked: list[tuple[int, float]]


@dataclass(frozen=True)
class Weights:
    dense: float = 1.0
    sentence: float = 1.0
    lexical: float = 1.0
    rrf_k: int = 60
    rerank: bool = True


def prepare_query(question: str, acronym_table: Sequence[tuple[str, str]],
                  author_table: AuthorTable = (), *,
                  expand_dense: bool = EXPAND_DENSE) -> Query:
    """The encoder sees the question (with acronym expansions when ``expand_dense``); BM25 sees
    the question's terms OR the other form of every acronym or long form in it; the reranker
    favours the documents whose author it names."""
    pairs = aliases(question, acronym_table)
    extra = list(dict.fromkeys(other for _, other in pairs))
    dense_text = f"{question} ({'; '.join(extra)})" if extra and expand_dense else question
    return Query(question, dense_text, terms.fts_expression(question, extra), tuple(pairs),
                 named_documents(question, author_table), name_spans(question, author_table),
                 tuple(alias_spans(question, pairs)))


def prepare_lexical(reader: IndexReader, query: Query, *, candidates: int = 50,
                    mode: str = "hybrid", doc_ids: Sequence[str] | None = None) -> LexicalSide:
    """The vector-free part of ``search`` (see ``LexicalSide``)."""
    qterms = evidence.query_terms(reader, query.question, query.aliases)
    allowed = reader.rowids_for_documents(doc_ids) if doc_ids else None
    searched = mode != "dense" and (allowed is None or bool(allowed))
    ranked = reader.lexical_search(query.fts, candidates, doc_ids) if searched else []
    return LexicalSide(qterms, allowed, ranked)


def search(reader: IndexReader, query: Query, query_vector: np.ndarray, *, k: int,
           candidates: int = 50, weights: Weights | None = None, mode: str = "hybrid",
           doc_ids: Sequence[str] | None = None, late: LateQuery | None = None,
           lexical_side: LexicalSide | None = None,
           trace: dict[str, Any] | None = None) -> tuple[list[Hit], QueryTerms]:
    """The top ``k`` passages for ``query``, best first, no two covering the same region.
    ``late``: the question's word pieces, for the reranker's late-interaction term.
    ``lexical_side``: ``prepare_lexical`` of the same arguments, when already done.
    ``trace``: filled with the reranking pool, its rows and feature matrix (for training)."""
    w = weights or Weights()
    side = lexical_side or prepare_lexical(reader, query, candidates=candidates, mode=mode,
                                           doc_ids=doc_ids)
    qterms, allowed = side.qterms, side.allowed
    if allowed is not None and not allowed:
        return [], qterms
    use_dense = mode != "lexical"
    lists: list[tuple[float, list[tuple[int, float]]]] = []
    dense = reader.dense_search(query_vector, candidates, allowed) if use_dense else []
    lists.append((w.dense, dense))
    if use_dense and w.sentence > 0:
        lists.append((w.sentence, reader.sentence_search(query_vector, candidates, allowed)))
    lexical = side.ranked
    lists.append((w.lexical, lexical))
    fused: dict[int, float] = {}
    for weight, ranked in lists:
        for rank, (rowid, _) in enumerate(ranked, 1):
            fused[rowid] = fused.get(rowid, 0.0) + weight / (w.rrf_k + rank)
    pool = _pool(fused, [ranked for weight, ranked in lists if weight > 0],
                 max(k * 2, POOL_SIZE))
    rows = reader.chunks(pool)
    dense_score = dict(dense)
    if use_dense:
        dense_score.update(reader.dense_scores(query_vector,
                                               [r for r in pool if r not in dense_score]))
    lexical_score = dict(lexical)
    found = evidence.gather(reader, rows, query_vector, qterms) if use_dense else {}
    scores = fused
    per_sentence: dict[int, evidence.Alignment] = {}
    if w.rerank and mode == "hybrid":
        named = {r for r, row in rows.items() if row["doc_id"] in query.named_docs}
        late_score, per_sentence = _late_interaction(reader, late, pool, rows, found)
        matrix = features.passage_matrix(
            pool, dense=dense_score, lexical=lexical_score, fused=fused, found=found,
            wanted=expected_answer_type(query.question), named=named, late=late_score,
            sentence_late={sid: a.late for sid, a in per_sentence.items()})
        scores = dict(zip(pool, scoring.model("reranker").score(matrix).tolist(), strict=True))
        if trace is not None:
            trace.update(pool=list(pool), rows=rows, matrix=matrix)
    pool.sort(key=lambda r: (-scores[r], r))  # without reranking: by fused rank, extras included
    hits: list[Hit] = []
    for rowid in pool:
        row = rows.get(rowid)
        if row is None or _overlaps_taken(row, hits):
            continue
        hits.append(Hit(rowid, row["chunk_id"], row["doc_id"], row["title"], row["start"],
                        row["end"], row["text"], row["section"], row["page"],
                        round(scores[rowid], 6), _opt_round(dense_score.get(rowid)),
                        _opt_round(lexical_score.get(rowid)), tuple(found.get(rowid, ()))))
        if len(hits) == k:
            break
    if per_sentence:
        hits = [replace(h, evidence=tuple(_aligned(s, per_sentence.get(s.sentence_id))
                                          for s in h.evidence)) for h in hits]
    return hits, qterms


def _aligned(sentence: SentenceEvidence,
             alignment: evidence.Alignment | None) -> SentenceEvidence:
    if alignment is None:
        return sentence
    return sentence._replace(late=alignment.late, late_weakest=alignment.weakest,
                             late_rarest=alignment.rarest)


def _late_interaction(reader: IndexReader, late: LateQuery | None, pool: list[int],
                      rows: dict[int, dict[str, Any]],
                      found: dict[int, list[SentenceEvidence]]
                      ) -> tuple[dict[int, float], dict[int, evidence.Alignment]]:
    """Late interaction of every pooled passage and of each of its sentences, from one matrix
    product of the question's pieces with the passages' stored pieces."""
    if late is None:
        return {}, {}
    match = reader.match_tokens(late.vectors, pool)
    chunks = sentences = None
    if late.aliased:
        chunks = evidence.other_form_users(late, {r: row["text"] for r, row in rows.items()})
        sentences = evidence.other_form_users(
            late, {s.sentence_id: s.text for r in chunks for s in found.get(r, ())})
    return (evidence.late_scores(match, late, chunks),
            evidence.sentence_late_scores(match, late, [
                (r, rows[r]["start"], [(s.sentence_id, s.start, s.end) for s in found[r]])
                for r in pool if r in rows and found.get(r)], sentences))


def _pool(fused: dict[int, float], lists: Sequence[list[tuple[int, float]]],
          size: int) -> list[int]:
    """The passages stage two reranks: the best ``size`` by fused rank, plus the top
    ``POOL_PER_RETRIEVER`` of every retriever. A passage that only one retriever ranks high
    (BM25 alone on a rare name, or dense alone on a paraphrase) gets little fused credit and
    would otherwise never reach the reranker that can judge it on its sentences."""
    pool = sorted(fused, key=lambda r: (-fused[r], r))[:size]
    taken = set(pool)
    for ranked in lists:
        for rowid, _ in ranked[:POOL_PER_RETRIEVER]:
            if rowid not in taken:
                taken.add(rowid)
                pool.append(rowid)
    return pool


def _overlaps_taken(row: dict[str, Any], hits: list[Hit]) -> bool:
    """True when more than half of ``row`` is already covered by a better hit."""
    length = max(row["end"] - row["start"], 1)
    for hit in hits:
        if hit.doc_id == row["doc_id"]:
            shared = min(hit.end, row["end"]) - max(hit.start, row["start"])
            if shared > length / 2:
                return True
    return False


def _opt_round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)
