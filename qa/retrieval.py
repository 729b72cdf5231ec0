"""Hybrid retrieval: dense (FAISS) and lexical (FTS5 BM25) candidates fused by reciprocal rank.

Owns ranking of passages for a question: acronym expansion, fusion, de-duplication of overlapping
chunks and the optional document filter. Reads the index only through ``store.IndexReader``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from qa import terms
from qa.acronyms import expansions
from qa.store import IndexReader

MODES = ("hybrid", "dense", "lexical")  # "dense" = chunk and sentence vectors, no BM25


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Query:
    """A question prepared for retrieval: its expanded text for the encoder and its FTS5 form."""

    question: str
    dense_text: str
    fts: str


def prepare_query(question: str, acronym_table: Sequence[tuple[str, str]]) -> Query:
    extra = expansions(question, list(acronym_table))
    dense_text = question if not extra else f"{question} ({'; '.join(extra)})"
    return Query(question, dense_text, terms.fts_expression(question, extra))


def search(reader: IndexReader, query: Query, query_vector: np.ndarray, *, k: int,
           candidates: int = 50, rrf_k: int = 60, dense_weight: float = 1.0,
           lexical_weight: float = 1.0, sentence_weight: float = 1.0, mode: str = "hybrid",
           doc_ids: Sequence[str] | None = None) -> list[Hit]:
    """The top ``k`` passages for ``query``, best first, no two covering the same region."""
    allowed = reader.rowids_for_documents(doc_ids) if doc_ids else None
    if allowed is not None and not allowed:
        return []
    use_dense = mode != "lexical"
    use_lexical = mode in ("hybrid", "lexical")
    dense = reader.dense_search(query_vector, candidates, allowed) if use_dense else []
    sentences = (reader.sentence_search(query_vector, candidates, allowed)
                 if use_dense and sentence_weight > 0 else [])
    lexical = reader.lexical_search(query.fts, candidates, doc_ids) if use_lexical else []
    fused: dict[int, float] = {}
    for weight, ranked in ((dense_weight, dense), (sentence_weight, sentences),
                           (lexical_weight, lexical)):
        for rank, (rowid, _) in enumerate(ranked, 1):
            fused[rowid] = fused.get(rowid, 0.0) + weight / (rrf_k + rank)
    order = sorted(fused, key=lambda r: (-fused[r], r))[: max(k * 3, k + 5)]
    rows = reader.chunks(order)
    dense_score = dict(dense)
    lexical_score = dict(lexical)
    missing = [r for r in order if r not in dense_score]
    if missing and mode != "lexical":
        dense_score.update(reader.dense_scores(query_vector, missing))
    hits: list[Hit] = []
    for rowid in order:
        row = rows.get(rowid)
        if row is None or _overlaps_taken(row, hits):
            continue
        hits.append(Hit(rowid, row["chunk_id"], row["doc_id"], row["title"], row["start"],
                        row["end"], row["text"], row["section"], row["page"],
                        round(fused[rowid], 6), _opt_round(dense_score.get(rowid)),
                        _opt_round(lexical_score.get(rowid))))
        if len(hits) == k:
            break
    return hits


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
