"""Evaluation on a gold question set: retrieval hit rates, answer accuracy, abstention, latency.

Owns the gold-file format and the metrics. A hit is a returned passage containing the gold quote
(compared on letters and digits only, so line wraps and hyphenation do not matter), or most of it
when the quote crosses a chunk boundary.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qa.errors import QAError

DEFAULT_GOLD = Path(__file__).resolve().parent / "data" / "gold.jsonl"
SPLITS = ("tuning", "held_out")  # fixed by id: qa/data/gold_split.json says how it was drawn
QUOTE_COVERAGE = 0.6


@dataclass(frozen=True)
class GoldQuestion:
    id: str
    question: str
    answerable: bool
    answer: str | None
    aliases: tuple[str, ...]
    quote: str | None
    kind: str | None
    split: str | None = None  # "tuning" (models may be tuned on it) or "held_out" (reported only)


def load_gold(path: Path) -> list[GoldQuestion]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise QAError(f"cannot read gold file {path}: {e.strerror or e}") from e
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append(GoldQuestion(str(row["id"]), str(row["question"]), bool(row["answerable"]),
                                    row.get("answer"), tuple(row.get("answer_aliases") or ()),
                                    row.get("quote"), row.get("kind"), row.get("split")))
        except (ValueError, KeyError, TypeError) as e:
            raise QAError(f"{path}:{n}: not a gold question ({e})") from e
    return out


def squash(text: str) -> str:
    """Lower-case letters and digits only: the form quotes and passages are compared in."""
    return re.sub(r"[^0-9a-z]", "", text.lower())


def passage_contains(passage: str, quote: str) -> bool:
    """True when the passage holds the quote, or at least ``QUOTE_COVERAGE`` of it as one run
    at the passage's start or end (a quote crossing a chunk boundary)."""
    p, q = squash(passage), squash(quote)
    if not q:
        return False
    if q in p:
        return True
    need = int(len(q) * QUOTE_COVERAGE)
    return any(p.endswith(q[:size]) or p.startswith(q[-size:])
               for size in range(len(q) - 1, need - 1, -1))


def answer_correct(answer_text: str, gold: GoldQuestion) -> bool:
    said = answer_text.lower()
    return any(a and a.lower() in said for a in (gold.answer, *gold.aliases))


def first_hit_rank(passages: Iterable[str], quote: str) -> int | None:
    for rank, text in enumerate(passages, 1):
        if passage_contains(text, quote):
            return rank
    return None


def evaluate(service: Any, gold: list[GoldQuestion], k: int = 10,
             mode: str = "hybrid") -> dict[str, Any]:
    """Run every gold question through ``service.ask`` (answers) and ``service.search`` with
    ``mode`` (retrieval ranks) and aggregate the metrics. Selective answering is judged on
    the answer the service would give if it never abstained (``unconditional``), ranked by
    its confidence."""
    unconditional = unconditional_service(service)
    rows: list[dict[str, Any]] = []
    latencies: list[float] = []
    for q in gold:
        started = time.perf_counter()
        response = service.ask(q.question, use_cache=False)
        latencies.append((time.perf_counter() - started) * 1000)
        ranked = service.search(q.question, k=k, mode=mode)["passages"]
        rank = first_hit_rank((p["text"] for p in ranked), q.quote or "")
        would = unconditional.ask(q.question, use_cache=False)["answer"]
        rows.append({
            "id": q.id, "kind": q.kind, "answerable": q.answerable, "rank": rank,
            "abstained": response["answer"]["abstained"],
            "reason": response["answer"]["reason"],
            "confidence": response["answer"]["confidence"],
            "correct": q.answerable and answer_correct(response["answer"]["text"], q),
            "right_if_answered": q.answerable and answer_correct(would["text"], q),
        })
    return summarize(rows, latencies) | {"questions": rows}


def unconditional_service(service: Any) -> Any:
    """The same service, never abstaining (same index, encoder and models)."""
    return type(service)(service.settings.replace(abstain_threshold=0.0),
                         embedder=service.embedder)


def summarize(rows: list[dict[str, Any]], latencies: list[float]) -> dict[str, Any]:
    answerable = [r for r in rows if r["answerable"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    offtopic = [r for r in unanswerable if r["kind"] == "unanswerable-offtopic"]
    ontopic = [r for r in unanswerable if r["kind"] != "unanswerable-offtopic"]

    def rate(items: list[dict[str, Any]], pred: Any) -> float:
        return round(sum(1 for r in items if pred(r)) / len(items), 4) if items else 0.0

    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 2) if ordered else 0.0

    return {
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "hit@1": rate(answerable, lambda r: r["rank"] == 1),
        "hit@5": rate(answerable, lambda r: r["rank"] is not None and r["rank"] <= 5),
        "hit@10": rate(answerable, lambda r: r["rank"] is not None and r["rank"] <= 10),
        "mrr@10": round(sum(1 / r["rank"] for r in answerable if r["rank"] and r["rank"] <= 10)
                        / max(len(answerable), 1), 4),
        "answer_accuracy": rate(answerable, lambda r: r["correct"] and not r["abstained"]),
        "abstention": rate(unanswerable, lambda r: r["abstained"]),
        "offtopic_abstained": sum(1 for r in offtopic if r["abstained"]),
        "offtopic": len(offtopic),
        "ontopic_abstention": rate(ontopic, lambda r: r["abstained"]),
        "ontopic": len(ontopic),
        "false_abstention": rate(answerable, lambda r: r["abstained"]),
        **selective(rows),
        "latency_ms_p50": pct(0.5),
        "latency_ms_p95": pct(0.95),
    }


COVERAGES = (100, 90, 80, 70)


def selective(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Risk-coverage figures and calibration error of per-question rows holding "confidence"
    and "right_if_answered" (the unconditional answer is right; never for an unanswerable
    question)."""
    if not rows or "right_if_answered" not in rows[0]:
        return {}
    confidence = [r["confidence"] for r in rows]
    right = [bool(r["right_if_answered"]) for r in rows]
    return risk_coverage(confidence, right) | {"ece": calibration_error(confidence, right)}


def risk_coverage(confidence: Sequence[float] | np.ndarray,
                  right: Sequence[bool] | np.ndarray) -> dict[str, float]:
    """Selective answering: the accuracy of the answered questions when only the most confident
    100/90/80/70% are answered, and the area under the risk-coverage curve (the mean error rate
    over every coverage; lower is better). Every question counts, answerable or not: answering
    an unanswerable question is an error."""
    conf = np.asarray(confidence, dtype=np.float64)
    hits = np.asarray(right, dtype=np.float64)
    n = len(hits)
    if not n:
        return {}
    order = np.argsort(-conf, kind="stable")
    cumulative = np.cumsum(hits[order]) / np.arange(1, n + 1)
    out = {f"accuracy@{c}%": round(float(cumulative[max(round(n * c / 100), 1) - 1]), 4)
           for c in COVERAGES}
    out["aurc"] = round(float(np.mean(1 - cumulative)), 4)
    return out


def calibration_error(probability: Sequence[float] | np.ndarray,
                      right: Sequence[bool] | np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the gap between mean confidence and accuracy in ten
    equal-width confidence bins, weighted by the bins' sizes."""
    p = np.asarray(probability, dtype=np.float64)
    y = np.asarray(right, dtype=np.float64)
    if not len(p):
        return 0.0
    which = np.minimum((p * bins).astype(int), bins - 1)
    gap = sum(abs(p[which == b].mean() - y[which == b].mean()) * (which == b).sum()
              for b in range(bins) if (which == b).any())
    return round(float(gap / len(p)), 4)
