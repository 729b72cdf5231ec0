"""Can a model fitted on the embeddings themselves tell a right answer (issue #15)? A negative
result, kept so that it can be run again.

The calibrator and the selector see the question and a sentence only through scalar features
(cosine, term coverage, late interaction, answer type ...). This asks whether a linear model on
the full 384-dimensional interaction of the question's and the sentence's embeddings (their
element-wise product and absolute difference, as in InferSent-style pair classifiers) learns
more from the training data: it would cost one dot product per sentence at query time, well
inside the issue's 0.5 ms scoring budget, unlike a cross-encoder reader (bench/reader_feasibility.py).

Two uses, each out of fold by article exactly as bench/train.py folds (5 folds of whole SQuAD
training articles plus the gold tuning half as two more groups, gold rows weighing one article):
1. answerability: is the answer right? (the calibrator's label) from the interaction of the
   question with the chosen sentence, alone, and stacked into the calibrator as one more feature
   (nested: the stacked feature of a fold's training rows is itself out of fold);
2. answer choice: among the selector's five best sentences of an answerable question, the
   listwise ranker of bench/train.py on (selector score, cosine) against (selector score,
   cosine, the 384 products).

Fitted on: the SQuAD 2.0 dev split's 11 training articles and the gold set's tuning half only,
through the packaged reranker and selector; the held-out articles and the held-out half are
never read. Questions are encoded by the service's query encoder, sentences by its passage
encoder (as the index embeds them, without the acronym glosses).

    python bench/embedding_interaction.py [--data ../shared/bench/squad-v2.0-dev.json] \
        [--out /tmp/embedding_interaction.json]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import train
from squad import SQUAD_DEV, TRAIN_ARTICLES, write_corpus

from qa import scoring
from qa.config import Settings
from qa.evaluation import calibration_error
from qa.indexing import build_index
from qa.service import QAService

TOP = 5  # candidate sentences kept per question, best first by the selector
C_VALUES = (0.001, 0.01, 0.1)  # inverse L2 strengths of the interaction model, all reported


def traced_answers(squad_dir: Path, gold_index: Path, data: Path) -> tuple[list[dict[str, Any]],
                                                                            QAService]:
    """Every training question asked through the packaged models (never abstaining): its
    calibrator row and label, and the selector's best ``TOP`` sentences with their labels."""
    docs, questions = train.squad_questions(data, TRAIN_ARTICLES)
    write_corpus(docs, squad_dir / "corpus")
    settings = Settings.load({"corpus_dir": squad_dir / "corpus", "index_dir": squad_dir / "index",
                              "abstain_threshold": 0.0}, environ={})
    build_index(settings)
    service = QAService(settings).load()
    gold_service, gold = train.gold_tuning(train.PROJECT / "qa" / "data" / "gold.jsonl",
                                           gold_index, "auto")
    traced = (train.trace_questions(service, questions, "squad")
              + train.trace_questions(gold_service, gold, "gold"))
    selector = scoring.model("selector")
    rows = []
    for q, trace, response in traced:
        if "question_vector" not in trace:
            continue
        scores = selector.score(trace["sentence_matrix"])
        order = np.argsort(-scores, kind="stable")[:TOP]
        texts = [trace["candidates"][int(i)].evidence.text for i in order]
        rows.append({"question": q["question"], "group": q["group"], "kind": q.get("kind"),
                     "answerable": not q["impossible"], "x": trace["question_vector"],
                     "y": not q["impossible"] and train.is_right(train.answered_text(response),
                                                                 q["answers"]),
                     "texts": texts, "scores": scores[order],
                     "right": [not q["impossible"] and train.is_right(t, q["answers"])
                               for t in texts]})
    return rows, service


def interaction(q: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.hstack([q * s, np.abs(q - s)])


def logistic_out_of_fold(f: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
                         weight: np.ndarray, c: float) -> np.ndarray:
    p = np.full(len(y), np.nan)
    for fit_rows, test in folds:
        p[test] = fit_logistic(f[fit_rows], y[fit_rows], weight[fit_rows], c)(f[test])
    return p


def fit_logistic(f: np.ndarray, y: np.ndarray, weight: np.ndarray, c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    mean, scale = f.mean(axis=0), f.std(axis=0)
    scale[scale < 1e-9] = 1.0
    model = LogisticRegression(C=c, max_iter=3000).fit((f - mean) / scale, y,
                                                        sample_weight=weight)
    return lambda g: model.predict_proba((g - mean) / scale)[:, 1]


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.asarray(np.log(p / (1 - p)))


def stacked_out_of_fold(x: np.ndarray, f: np.ndarray, y: np.ndarray, articles: list[str],
                        c: float) -> np.ndarray:
    """The calibrator's features plus the interaction model's logit, out of fold; within each
    fold the added feature of the training rows is out of fold too."""
    real = np.ones(len(y), dtype=bool)
    weight = train.group_weights(articles, real)
    p = np.full(len(y), np.nan)
    for fit_rows, test in train.folds_of(articles, real):
        inner = train.folds_of([articles[i] for i in fit_rows], real[fit_rows])
        inside = logistic_out_of_fold(f[fit_rows], y[fit_rows], inner, weight[fit_rows], c)
        outside = fit_logistic(f[fit_rows], y[fit_rows], weight[fit_rows], c)(f[test])
        calibrator = fit_logistic(np.hstack([x[fit_rows], logit(inside)[:, None]]), y[fit_rows],
                                  weight[fit_rows], train.C)
        p[test] = calibrator(np.hstack([x[test], logit(outside)[:, None]]))
    return p


def abstention(p: np.ndarray, y: np.ndarray, rows: list[dict[str, Any]]) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    answerable = np.array([r["answerable"] for r in rows])
    cut = train.operating_point(p, answerable)
    figures = train.abstention_figures(p, y, answerable, [r["group"] for r in rows],
                                       [r["kind"] for r in rows], cut)
    return {"auc": round(float(roc_auc_score(y, p)), 4), "cut": cut,
            "ece": round(calibration_error(p, y), 4)} | {
        k: v for k, v in figures.items() if not k.endswith("_n")}


def choice(rows: list[dict[str, Any]], q: np.ndarray, s: np.ndarray) -> dict[str, float]:
    """Top-1 among the selector's best ``TOP`` sentences of answerable questions that have a
    right and a wrong one there, out of fold by article."""
    kept = [i for i, r in enumerate(rows)
            if r["answerable"] and len(r["texts"]) > 1 and any(r["right"]) and not all(r["right"])]
    articles = [rows[i]["group"] for i in kept]

    def groups(ids: list[int], products: bool) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for i in ids:
            n = len(rows[i]["texts"])
            cosine = s[i, :n] @ q[i]
            parts = [rows[i]["scores"][:n, None], cosine[:, None]]
            out.append((np.hstack(parts + ([q[i] * s[i, :n]] if products else [])),
                        np.array(rows[i]["right"])))
        return out

    result = {"questions": len(kept),
              "selector": round(float(np.mean([rows[i]["right"][0] for i in kept])), 4)}
    for name, products in (("selector+cosine", False), ("selector+cosine+products", True)):
        hits = []
        for fit_rows, test in train.grouped_folds(articles):
            chosen = [kept[j] for j in fit_rows]
            w = train.fit_listwise(groups(chosen, products),
                                   train.group_weights([articles[j] for j in fit_rows]))
            hits += [bool(labels[int(np.argmax(m @ w))])
                     for m, labels in groups([kept[j] for j in test], products)]
        result[name] = round(float(np.mean(hits)), 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SQUAD_DEV,
                        help="SQuAD 2.0 dev JSON (read, never copied)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/qa-train-squad"),
                        help="corpus and index of the SQuAD split (bench/train.py's; reused)")
    parser.add_argument("--gold-index", type=Path, default=Path("/tmp/qa-train-gold"),
                        help="index of the bundled corpus (bench/train.py's; reused)")
    parser.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    args = parser.parse_args()

    rows, service = traced_answers(args.workdir, args.gold_index, args.data)
    q = np.vstack([service.embedder.encode_query(r["question"]).reshape(1, -1) for r in rows])
    texts = [(r["texts"] + [""] * TOP)[:TOP] for r in rows]
    s = service.embedder.encode([t or "." for ts in texts for t in ts]).reshape(len(rows), TOP, -1)
    x = np.vstack([r["x"] for r in rows])
    y = np.array([r["y"] for r in rows], dtype=bool)
    articles = [r["group"] for r in rows]
    f = interaction(q, s[:, 0])
    weight = train.group_weights(articles)
    folds = train.folds_of(articles, np.ones(len(y), dtype=bool))

    from sklearn.metrics import roc_auc_score

    figures: dict[str, Any] = {"questions": len(rows)}
    cosine = np.einsum("ij,ij->i", q, s[:, 0])
    figures["cosine_auc"] = round(float(roc_auc_score(y, cosine)), 4)
    for c in C_VALUES:
        p = logistic_out_of_fold(f, y, folds, weight, c)
        figures[f"interaction_auc_C{c}"] = round(float(roc_auc_score(y, p)), 4)
    figures["calibrator"] = abstention(train.out_of_fold(x, y, articles), y, rows)
    for c in C_VALUES[:2]:
        figures[f"calibrator+interaction_C{c}"] = abstention(
            stacked_out_of_fold(x, f, y, articles, c), y, rows)
    figures["choice"] = choice(rows, q, s)
    for name, value in figures.items():
        print(f"{name}: {value}")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
