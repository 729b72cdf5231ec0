"""How far can the reranker's own signals go? An optimistic bound on the gold set.

Scores *every* chunk of the bundled index (no candidate cut-off) on the nine features the
second stage can see — chunk similarity, best-sentence similarity, BM25 (normalized by the top
score), best-sentence coverage, whole-chunk coverage, whether the question names the passage's
author, late interaction over the stored token vectors, the late interaction of the best
sentence, and the best sentence's share of the question's word pairs (proximity) — and reports
hit@1/hit@5/MRR@10 for: each feature alone, the shipped weighting, reciprocal rank fusion and
z-score fusion of the features, and the best of every weighting on a small grid. The grid's
best is fitted to the very questions it is measured on, so it is an upper bound on what any
weighting of these signals can do, not a setting to use.

    python bench/rerank_ceiling.py            # needs a built index (qa index)
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from common import machine

from qa import evidence, retrieval
from qa.attribution import author_table
from qa.config import Settings
from qa.evaluation import DEFAULT_GOLD, load_gold, passage_contains
from qa.service import QAService

FEATURES = ("chunk_sim", "sentence_sim", "bm25", "sentence_cov", "chunk_cov", "named_author",
            "late", "sentence_late", "proximity")
GRID = (0.0, 0.5, 1.0, 2.0)
LATE_GRID = (0.0, 2.0, 4.0, 8.0)  # late interaction lies in a narrower range (about 0.3-0.9)
Features = dict[int, dict[str, float]]


def features(service: QAService) -> list[tuple[set[int], Features]]:
    reader = service.reader()
    n = reader.faiss.ntotal
    rows = reader.chunks(list(range(n)))
    acronyms = reader.acronyms()
    authors = author_table(reader.documents())
    out = []
    for gold in load_gold(DEFAULT_GOLD):
        if not gold.answerable:
            continue
        targets = {r for r, row in rows.items() if passage_contains(row["text"], gold.quote or "")}
        query = retrieval.prepare_query(gold.question, acronyms, authors)
        vector, tokens = service.embedder.encode_query_with_tokens(query.dense_text)
        late_query = evidence.late_query(reader, tokens.ids, tokens.pieces, tokens.vectors,
                                         tokens.starts, ignore=query.name_spans,
                                         aliases=query.alias_spans)
        qterms = evidence.query_terms(reader, query.question, query.aliases)
        dense = dict(reader.dense_search(vector, n))
        lexical = dict(reader.lexical_search(query.fts, n))
        top = max(lexical.values(), default=1.0) or 1.0
        found = evidence.gather(reader, rows, vector, qterms)
        late, sentence_late = retrieval._late_interaction(reader, late_query, list(range(n)),
                                                          rows, found)
        table: Features = {}
        for rowid in range(n):
            ev = found.get(rowid, [])
            chunk_terms = set().union(*(evidence.term_set(e.text) for e in ev)) if ev else set()
            table[rowid] = {
                "chunk_sim": dense.get(rowid, 0.0),
                "sentence_sim": max((e.similarity for e in ev), default=0.0),
                "bm25": lexical.get(rowid, 0.0) / top,
                "sentence_cov": max((e.coverage for e in ev), default=0.0),
                "chunk_cov": qterms.coverage(chunk_terms),
                "named_author": float(rows[rowid]["doc_id"] in query.named_docs),
                "late": late.get(rowid, 0.0),
                "sentence_late": max((sentence_late.get(e.sentence_id, 0.0) for e in ev),
                                     default=0.0),
                "proximity": max((e.proximity for e in ev), default=0.0),
            }
        out.append((targets, table))
    return out


def measure(data: list[tuple[set[int], Features]],
            scorer: Callable[[Features], dict[int, float]]) -> tuple[float, float, float]:
    h1 = h5 = mrr = 0.0
    for targets, table in data:
        scores = scorer(table)
        ranked = sorted(table, key=lambda r: -scores[r])[:10]
        rank = next((i for i, r in enumerate(ranked, 1) if r in targets), None)
        h1 += rank == 1
        h5 += bool(rank and rank <= 5)
        mrr += 1 / rank if rank else 0.0
    n = len(data)
    return round(h1 / n, 3), round(h5 / n, 3), round(mrr / n, 3)


def grid_search(data: list[tuple[set[int], Features]], weightings: np.ndarray
                ) -> tuple[tuple[float, float, float], tuple[float, ...]]:
    """The best weighting by hit@5, then MRR@10: every weighting's rank of each question's best
    target (1 + the other chunks scoring at least as high), in batches of weightings at once."""
    matrices = [np.array([[t[r][f] for f in FEATURES] for r in sorted(t)], dtype=np.float32)
                for _, t in data]
    target_rows = [[n for n, r in enumerate(sorted(t)) if r in targets] for targets, t in data]
    others = [np.array([r not in targets for r in sorted(t)]) for targets, t in data]
    h1 = np.zeros(len(weightings))
    h5 = np.zeros(len(weightings))
    mrr = np.zeros(len(weightings))
    for at in range(0, len(weightings), 2048):
        w = weightings[at:at + 2048].T  # (features, batch)
        for m, rows, other in zip(matrices, target_rows, others, strict=True):
            if not rows:
                continue
            scores = m @ w  # (chunks, batch)
            best = scores[rows].max(axis=0)
            # Ties count against the target: a weighting that scores everything alike finds
            # nothing.
            rank = 1 + (scores > best).sum(axis=0) + ((scores == best) & other[:, None]).sum(axis=0)
            h1[at:at + 2048] += rank == 1
            h5[at:at + 2048] += rank <= 5
            mrr[at:at + 2048] += np.where(rank <= 10, 1.0 / rank, 0.0)
    n = len(data)
    best = int(np.lexsort((mrr, h5))[-1])
    return ((round(h1[best] / n, 3), round(h5[best] / n, 3), round(mrr[best] / n, 3)),
            tuple(float(x) for x in weightings[best]))


def linear(weights: dict[str, float]) -> Callable[[Features], dict[int, float]]:
    return lambda t: {r: sum(w * f[k] for k, w in weights.items()) for r, f in t.items()}


def rank_fusion(k: int) -> Callable[[Features], dict[int, float]]:
    def score(t: Features) -> dict[int, float]:
        out = dict.fromkeys(t, 0.0)
        for name in FEATURES:
            for rank, r in enumerate(sorted(t, key=lambda r: -t[r][name]), 1):
                out[r] += 1 / (k + rank)
        return out
    return score


def z_fusion(t: Features) -> dict[int, float]:
    out = dict.fromkeys(t, 0.0)
    for name in FEATURES:
        values = [f[name] for f in t.values()]
        mu, sd = statistics.mean(values), statistics.pstdev(values) or 1.0
        for r, f in t.items():
            out[r] += (f[name] - mu) / sd
    return out


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    data = features(QAService(Settings.load()).load())
    rows: list[tuple[str, tuple[float, float, float]]] = []
    for name in FEATURES:
        rows.append((f"{name} alone", measure(data, linear({name: 1.0}))))
    shipped = {"chunk_sim": retrieval.W_CHUNK_SIMILARITY,
               "sentence_sim": retrieval.W_SENTENCE_SIMILARITY, "bm25": retrieval.W_BM25,
               "sentence_cov": retrieval.W_SENTENCE_COVERAGE,
               "named_author": retrieval.W_NAMED_AUTHOR, "late": retrieval.W_LATE_INTERACTION,
               "sentence_late": retrieval.W_SENTENCE_LATE, "proximity": retrieval.W_PROXIMITY}
    rows.append(("shipped weights (no answer-type term), every chunk", measure(data, linear(shipped))))
    for k in (5, 60):
        rows.append((f"rank fusion of the nine, k={k}", measure(data, rank_fusion(k))))
    rows.append(("z-score fusion of the nine", measure(data, z_fusion)))
    grids = [LATE_GRID if name == "late" else GRID for name in FEATURES]
    weightings = np.array([w for w in itertools.product(*grids) if any(w)], dtype=np.float32)
    best = grid_search(data, weightings)
    rows.append((f"best hit@5 of {len(weightings)} weightings {best[1]} (fitted: a bound)",
                 best[0]))
    print(f"\n{machine()}; {len(data)} answerable gold questions\n")
    print("| scoring | hit@1 | hit@5 | MRR@10 |\n|---|---|---|---|")
    for label, (h1, h5, mrr) in rows:
        print(f"| {label} | {h1:.3f} | {h5:.3f} | {mrr:.3f} |")


if __name__ == "__main__":
    main()
