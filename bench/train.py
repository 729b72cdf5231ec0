"""Fit the three scoring models (reranker, answer-sentence selector, abstention calibrator) and
write them to qa/models/ as JSON, with their features, training data, seed, date and
cross-validated metrics.

Training data: the SQuAD 2.0 dev split, whole split indexed (every paragraph one document, as in
bench/squad.py), questions of the TRAIN_ARTICLES only; folds are whole articles. The five
HELD_OUT articles are never read here. The tuning half of the project's gold set (``--gold``,
bundled corpus) joins all three: it is where questions name a document's author, quote a table's
row or ask what the documents do not say. Its questions form two more groups of the folds
(alternate ids), their rows together weighing as much as one training article's. The gold set's
held-out half is never read here.

The models are fitted in order, each on the output of the ones before it, through the same
``QAService.ask`` the product uses (``trace`` returns the feature matrices):
1. reranker: a linear listwise ranker (``fit_listwise``) on the features of the reranking pool
   (a passage of the question's paragraph is right; for a gold question, one holding its quote);
2. selector: the same on the candidate sentences of the returned passages (a sentence of the
   right paragraph holding a gold answer is right). The answer quotes the best
   ``max_answer_sentences`` (a setting, 2 by default) of them: no margin is fitted or set;
3. calibrator: logistic regression on the question-level features: is the answer right?
   (answering an unanswerable question is wrong). Its operating point is the highest
   probability cut that abstains on at most 5% of the answerable training questions, on the
   out-of-fold predictions. The gold set's tuning half, when given, joins as two more groups of
   the folds (alternate ids), its rows together weighing as much as one training article's.
   Out of fold (leave one group out) by the gold rows' total weight, as SQuAD AURC / ECE and
   gold-tuning AURC / ECE: one article's 0.396 / 0.015 and 0.424 / 0.112; each row once 0.395 /
   0.016 and 0.450 / 0.164; all SQuAD rows' 0.430 / 0.082 and 0.454 / 0.156. A LightGBM
   classifier instead of the logistic regression: SQuAD AURC 0.409, ECE 0.025.

``--removed-paragraph N`` (off by default, and not used for the shipped calibrator) adds to the
calibrator's rows up to N answerable questions of each training paragraph asked again with their
paragraph removed from the search, labelled wrong: on-topic questions the documents no longer
answer (``--removed-document``: the gold tuning half's answerable ones without their document).
They join their article's fold and count in no reported figure. Out of fold they made the
calibrator no better (bench/RESULTS.md): with the source gone, the best passage's coverage and
margins collapse, unlike the gold set's on-topic unanswerable questions, which match as well as
answered ones. ``--calibrator-only`` keeps the packaged reranker and selector.

    pip install -e '.[train]'
    python bench/train.py --data ../shared/bench/squad-v2.0-dev.json [--gold-split ...]

Every weight is fitted: a feature that never varies in SQuAD (no SQuAD question names a
document's author; SQuAD has no tables) is fitted on the gold tuning questions that have it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
from squad import HELD_OUT, SQUAD_DEV, TRAIN_ARTICLES, load_squad, write_corpus

from qa import features, scoring
from qa.config import Settings
from qa.evaluation import (
    calibration_error,
    load_gold,
    passage_contains,
    risk_coverage,
)
from qa.indexing import build_index
from qa.service import QAService

PROJECT = Path(__file__).resolve().parent.parent
BASELINES = Path(__file__).resolve().parent / "baseline_models"  # the hand-set weights before
SEED = 0
C = 1.0  # inverse L2 strength of the calibrator's fit (scikit-learn's default)
L2 = 1e-3  # L2 on the rankers' standardized weights (0 to 1e-2 alike by cross-validation)
# The operating point: abstain as much as possible while abstaining on at most this share of the
# answerable training questions (the bound on false abstention).
MAX_FALSE_ABSTENTION = 0.05


# -- data ------------------------------------------------------------------------------------
def squad_questions(path: Path, articles: Sequence[str]) -> tuple[dict[str, tuple[str, str]],
                                                                list[dict[str, Any]]]:
    """(all paragraphs, the questions of ``articles`` with their article as "group")."""
    docs, questions = load_squad(path)
    wanted = {a.replace("_", " ") for a in articles}
    asked = [q | {"group": docs[q["doc"]][0]} for q in questions if docs[q["doc"]][0] in wanted]
    return docs, asked


def is_right(text: str, answers: Sequence[str]) -> bool:
    lowered = text.lower()
    return any(a and a.lower() in lowered for a in answers)


# -- fitting ---------------------------------------------------------------------------------
def fit_logistic(x: np.ndarray, y: np.ndarray, *, intercept: bool,
                 weight: np.ndarray | None = None
                 ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """(coef, intercept, mean, scale) of an L2 logistic regression on standardized features."""
    from sklearn.linear_model import LogisticRegression

    mean = x.mean(axis=0) if intercept else np.zeros(x.shape[1])
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    model = LogisticRegression(C=C, fit_intercept=intercept, max_iter=2000, random_state=SEED)
    model.fit((x - mean) / scale, y, sample_weight=weight)
    return model.coef_[0], float(model.intercept_[0]) if intercept else 0.0, mean, scale


def fit_listwise(groups: Sequence[tuple[np.ndarray, np.ndarray]],
                 weight: np.ndarray | None = None) -> np.ndarray:
    """Weights (raw feature units) of a linear conditional-logit ranker: each question's
    candidates compete in one softmax, and the loss is minus the log of the probability mass
    on its right candidates (ListNet's top-one loss), plus L2 on standardized weights. This aims
    at the first place, where a pairwise logistic regression spends itself on easy negatives
    (by article-wise cross-validation on the training articles: top-1 0.902 against 0.877 for
    pairwise logistic regression, 0.875 pointwise and 0.883 for LightGBM's lambdarank).
    ``weight``: each question's weight in the mean loss (``group_weights``)."""
    from scipy.optimize import minimize

    x = np.vstack([m for m, _ in groups])
    right = np.concatenate([labels for _, labels in groups]).astype(np.float64)
    sizes = np.array([len(m) for m, _ in groups])
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    owner = np.repeat(np.arange(len(groups)), sizes)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = x / scale
    q = np.ones(len(groups)) if weight is None else np.asarray(weight, dtype=np.float64)
    q = q / q.sum()

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        s = z @ w
        e = np.exp(s - np.maximum.reduceat(s, starts)[owner])
        total = np.add.reduceat(e, starts)
        held = np.add.reduceat(e * right, starts)
        value = -float(q @ np.log(held / total + 1e-300)) + L2 * float(w @ w)
        push = (e / total[owner] - right * e / np.maximum(held[owner], 1e-300)) * q[owner]
        return value, z.T @ push + 2 * L2 * w

    result = minimize(loss, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B",
                      options={"maxiter": 5000})
    return np.asarray(result.x / scale)


def fit_ranker(name: str, groups: Sequence[tuple[np.ndarray, np.ndarray]],
               names: Sequence[str], articles: Sequence[str]) -> dict[str, Any]:
    """A linear ranker (``fit_listwise``), the gold groups weighted as one article."""
    usable = [i for i, (_, labels) in enumerate(groups) if labels.any() and not labels.all()]
    if not usable:
        raise SystemExit(f"{name}: no question has both a right and a wrong candidate")
    coef = fit_listwise([groups[i] for i in usable],
                        group_weights([articles[i] for i in usable]))
    return {"name": name, "kind": "listwise", "l2": L2, "features": list(names),
            "coef": [round(float(c), 6) for c in coef], "intercept": 0.0}


def top1(groups: Sequence[tuple[np.ndarray, np.ndarray]], doc: dict[str, Any],
         names: Sequence[str]) -> float:
    model = scoring.from_dict(doc, tuple(names))
    hits = [bool(labels[int(np.argmax(model.score(m)))]) for m, labels in groups if len(m)]
    return round(float(np.mean(hits)), 4) if hits else 0.0


def grouped_folds(groups: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Leave-one-article-out when there are few articles, else five folds of whole articles."""
    from sklearn.model_selection import GroupKFold

    labels = np.asarray(groups)
    n = min(5, len(set(groups)))
    if n < 2:
        return []
    return list(GroupKFold(n_splits=n).split(labels, groups=labels))


def cross_validate_ranker(name: str, groups: list[tuple[np.ndarray, np.ndarray]],
                          articles: list[str], names: Sequence[str],
                          baseline: dict[str, Any]) -> dict[str, Any]:
    fitted, before = [], []
    for train, test in grouped_folds(articles):
        doc = fit_ranker(name, [groups[i] for i in train], names, [articles[i] for i in train])
        held = [groups[i] for i in test]
        fitted.append(top1(held, doc, names) * len(held))
        before.append(top1(held, baseline, names) * len(held))
    n = sum(len(test) for _, test in grouped_folds(articles)) or 1
    return {"cv_top1": round(sum(fitted) / n, 4), "cv_top1_before": round(sum(before) / n, 4),
            "folds": len(grouped_folds(articles)), "questions": len(groups)}


def operating_point(p: np.ndarray, answerable: np.ndarray) -> float:
    """The highest probability cut at which at most MAX_FALSE_ABSTENTION of the answerable
    questions are abstained on (out-of-fold probabilities of the training questions)."""
    ranked = np.sort(p[answerable])
    if not len(ranked):
        return 0.5
    return round(float(np.floor(ranked[int(MAX_FALSE_ABSTENTION * len(ranked))] * 1000) / 1000), 3)


# -- the three stages ------------------------------------------------------------------------
def trace_questions(service: QAService, questions: Sequence[dict[str, Any]],
                    label: str) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """Ask each question with its trace; a question with "removed" is asked of every document
    but that one."""
    out = []
    started = time.perf_counter()
    every = sorted(d["doc_id"] for d in service.documents())
    for n, q in enumerate(questions, 1):
        trace: dict[str, Any] = {}
        kept = [d for d in every if d != q["removed"]] if q.get("removed") else None
        response = service.ask(q["question"], doc_ids=kept, use_cache=False, trace=trace)
        out.append((q, trace, response))
        if n % 500 == 0:
            print(f"  {label}: {n}/{len(questions)} ({time.perf_counter() - started:.0f}s)",
                  flush=True)
    return out


def removed_source_questions(questions: Sequence[dict[str, Any]], per_source: int
                             ) -> list[dict[str, Any]]:
    """On-topic unanswerable questions made from answerable ones: up to ``per_source``
    answerable questions of each source (a SQuAD paragraph, a gold question's document), the
    first by id, asked again with that source removed from the search ("removed"). The answer
    then comes from the same article or corpus but not from where the answer was written, and
    is labelled wrong like any answer to an unanswerable question ("impossible", no answers).
    They are "synthetic": they train the calibrator and are left out of every reported
    figure."""
    by_source: dict[str, list[dict[str, Any]]] = {}
    for q in sorted(questions, key=lambda q: str(q["id"])):
        if not q["impossible"] and q.get("doc"):
            by_source.setdefault(q["doc"], []).append(q)
    return [q | {"id": f"{q['id']}-removed", "removed": q["doc"], "impossible": True,
                 "answers": [], "synthetic": True}
            for source in sorted(by_source) for q in by_source[source][:per_source]]


def reranker_data(traced: Sequence[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]
                  ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    groups, articles = [], []
    for q, trace, _ in traced:
        if "matrix" not in trace:
            continue
        labels = np.array([r in trace["rows"] and is_right_passage(q, trace["rows"][r])
                           for r in trace["pool"]])
        if labels.any() and not labels.all():
            groups.append((trace["matrix"], labels))
            articles.append(q["group"])
    return groups, articles


def is_right_passage(q: dict[str, Any], row: dict[str, Any]) -> bool:
    """A SQuAD question's passage is any of its paragraph; a gold question's holds its quote."""
    if q.get("quote") is not None:
        return bool(passage_contains(row["text"], q["quote"]))
    return bool(row["doc_id"] == q["doc"])


def selector_data(traced: Sequence[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]
                  ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    groups, articles = [], []
    for q, trace, response in traced:
        if q["impossible"] or "candidates" not in trace:
            continue
        docs = [p["doc_id"] for p in response["passages"]]
        labels = np.array([docs[c.hit_index] == q["doc"] and is_right(c.evidence.text,
                                                                      q["answers"])
                           for c in trace["candidates"]])
        if labels.any() and not labels.all():
            groups.append((trace["sentence_matrix"], labels))
            articles.append(q["group"])
    return groups, articles


# x, right, answerable, articles, real (not synthetic: counted in the reported figures)
Rows = tuple[np.ndarray, np.ndarray, np.ndarray, list[str], np.ndarray]


def calibrator_data(traced: Sequence[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]],
                    right: Callable[[dict[str, Any], dict[str, Any]], bool]) -> Rows:
    rows, labels, answerable, articles, real = [], [], [], [], []
    for q, trace, response in traced:
        if "question_vector" not in trace:
            continue
        rows.append(trace["question_vector"])
        labels.append(right(q, response))
        answerable.append(not q["impossible"])
        articles.append(q["group"])
        real.append(not q.get("synthetic"))
    return (np.vstack(rows) if rows else np.zeros((0, len(features.QUESTION_FEATURES))),
            np.array(labels, dtype=bool), np.array(answerable, dtype=bool), articles,
            np.array(real, dtype=bool))


def answered_text(response: dict[str, Any]) -> str:
    """The answer the calibrator judges: the sentences chosen, whether or not it abstained."""
    return " ".join(s["text"] for s in response["answer"]["sentences"])


def fit_calibrator(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None
                   ) -> dict[str, Any]:
    coef, intercept, mean, scale = fit_logistic(x, y, intercept=True, weight=weight)
    return {"name": "calibrator", "kind": "logistic", "C": C,
            "features": list(features.QUESTION_FEATURES),
            "coef": [round(float(c), 6) for c in coef], "intercept": round(intercept, 6),
            "mean": [round(float(m), 6) for m in mean],
            "scale": [round(float(s), 6) for s in scale]}


def group_weights(articles: Sequence[str], real: np.ndarray | None = None) -> np.ndarray:
    """Each row's weight: 1 for SQuAD; the gold set's rows weigh each what its real rows weigh,
    which together weigh as much as one training article's real rows (on average). ``real``:
    which rows are real (not synthetic), all when not given."""
    is_real = np.ones(len(articles), dtype=bool) if real is None else np.asarray(real, bool)
    gold = np.array([a.startswith("gold") for a in articles], dtype=bool)
    weight = np.ones(len(articles))
    squad = [a for a, counted in zip(articles, is_real, strict=True)
             if counted and not a.startswith("gold")]
    if (gold & is_real).any() and squad:
        weight[gold] = len(squad) / len(set(squad)) / (gold & is_real).sum()
    return weight


def folds_of(articles: Sequence[str], real: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """``grouped_folds`` of the real rows' articles, applied to every row: a synthetic row is in
    its article's fold, and the folds are those made without synthetic rows."""
    labels = np.asarray(articles)
    real_rows = np.flatnonzero(real)
    folds = []
    for _, test in grouped_folds([articles[i] for i in real_rows]):
        held = np.isin(labels, labels[real_rows[test]])
        folds.append((np.flatnonzero(~held), np.flatnonzero(held)))
    return folds


def out_of_fold(x: np.ndarray, y: np.ndarray, articles: list[str],
                real: np.ndarray | None = None) -> np.ndarray:
    real = np.ones(len(y), dtype=bool) if real is None else real
    p = np.full(len(y), np.nan)
    weight = group_weights(articles, real)
    for train, test in folds_of(articles, real):
        if len(set(y[train].tolist())) < 2:
            continue
        model = scoring.from_dict(fit_calibrator(x[train], y[train], weight[train]),
                                  features.QUESTION_FEATURES)
        p[test] = model.probability(x[test])
    return p


def abstention_figures(p: np.ndarray, y: np.ndarray, answerable: np.ndarray,
                       articles: Sequence[str], kinds: Sequence[str | None],
                       threshold: float) -> dict[str, float]:
    """What the calibrator does at ``threshold`` (abstain below it), on SQuAD's questions and
    on the gold ones: AURC, share of the unanswerable abstained on (the gold set's on-topic and
    off-topic ones apart) and of the answerable abstained on (false abstention)."""
    gold = np.array([a.startswith("gold") for a in articles], dtype=bool)
    kind = np.array([k or "" for k in kinds])
    abstained = p < threshold
    out: dict[str, float] = {}
    for name, rows in (("squad", ~gold), ("gold", gold)):
        if not rows.any():
            continue
        out[f"{name}_aurc"] = risk_coverage(p[rows], y[rows])["aurc"]
        parts = {"unanswerable_abstained": rows & ~answerable,
                 "false_abstention": rows & answerable}
        if name == "gold":
            parts = {"ontopic_abstained": rows & (kind == "unanswerable-ontopic"),
                     "offtopic_abstained": rows & (kind == "unanswerable-offtopic"),
                     "false_abstention": rows & answerable}
        for part, which in parts.items():
            if which.any():
                out[f"{name}_{part}"] = round(float(abstained[which].mean()), 4)
                out[f"{name}_{part}_n"] = int(which.sum())
    return out


def dump(where: Path | None, name: str, groups: Sequence[tuple[np.ndarray, np.ndarray]],
         articles: Sequence[str]) -> None:
    """One stage's data as npz: rows, labels, each row's question and each question's article."""
    if where is None or not groups:
        return
    where.mkdir(parents=True, exist_ok=True)
    np.savez(where / f"{name}.npz", x=np.vstack([m for m, _ in groups]),
             y=np.concatenate([labels for _, labels in groups]),
             question=np.repeat(np.arange(len(groups)), [len(m) for m, _ in groups]),
             article=np.array(articles))


Traced = list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]


def fit_ranker_on_traces(traced: Traced, name: str, to_groups: Any,
                         feature_names: Sequence[str], dump_to: Path | None
                         ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit ranker ``name`` on the traced candidates and cross-validate it by article against its
    baseline: (model, metrics)."""
    groups, articles = to_groups(traced)
    dump(dump_to, name, groups, articles)
    baseline = json.loads((BASELINES / f"{name}.json").read_text())
    model = fit_ranker(name, groups, feature_names, articles)
    metrics = cross_validate_ranker(name, groups, articles, feature_names, baseline)
    return model, metrics


def stamp(doc: dict[str, Any], data: str, metrics: dict[str, Any]) -> dict[str, Any]:
    return doc | {"training": data, "seed": SEED, "date": time.strftime("%Y-%m-%d"),
                  "metrics": metrics}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SQUAD_DEV,
                        help="SQuAD 2.0 dev JSON (read, never copied)")
    parser.add_argument("--articles", nargs="*", default=list(TRAIN_ARTICLES),
                        help="training articles (folds are whole articles)")
    parser.add_argument("--gold", type=Path, default=PROJECT / "qa" / "data" / "gold.jsonl",
                        help="gold questions (JSONL) whose split is 'tuning' join the training "
                             "data of all three models (the 'held_out' ones are never read)")
    parser.add_argument("--no-gold", dest="gold", action="store_const", const=None,
                        help="train on SQuAD alone")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/qa-train-squad"),
                        help="corpus and index of the SQuAD split (reused between runs)")
    parser.add_argument("--gold-index", type=Path, default=Path("/tmp/qa-train-gold"),
                        help="index of the bundled corpus, for --gold")
    parser.add_argument("--encoder", default="auto", choices=("auto", "torch", "onnx"),
                        help="query and passage encoder backend")
    parser.add_argument("--dump", type=Path,
                        help="also write each stage's feature matrices and labels here (npz)")
    parser.add_argument("--out", type=Path, default=PROJECT / "qa" / "models",
                        help="where the model files are written")
    parser.add_argument("--removed-paragraph", type=int, default=0, metavar="N",
                        help="the calibrator also learns from up to N answerable questions of "
                             "each training paragraph asked again with their paragraph removed, "
                             "as wrong answers (on-topic, not in the documents); 0: none")
    parser.add_argument("--removed-document", action="store_true",
                        help="the same for the gold tuning half's answerable questions, each "
                             "asked again with its document removed")
    parser.add_argument("--calibrator-only", action="store_true",
                        help="keep the packaged reranker and selector; trace and fit the "
                             "calibrator only (writes calibrator.json alone)")
    args = parser.parse_args(argv)
    held = set(args.articles) & set(HELD_OUT)
    if held:
        raise SystemExit(f"held-out articles may not be trained on: {sorted(held)}")

    docs, questions = squad_questions(args.data, args.articles)
    corpus, index = args.workdir / "corpus", args.workdir / "index"
    write_corpus(docs, corpus)
    # Never abstain while tracing: the calibrator is fitted on the answers that would be given.
    settings = Settings.load({"corpus_dir": corpus, "index_dir": index, "abstain_threshold": 0.0,
                              "encoder": args.encoder}, environ={})
    build_index(settings)
    service = QAService(settings).load()
    n_answerable = sum(not q["impossible"] for q in questions)
    data = (f"SQuAD 2.0 dev, whole split indexed ({len(docs)} paragraphs); questions of "
            f"{len(set(args.articles))} articles ({', '.join(sorted(args.articles))}): "
            f"{n_answerable} answerable, {len(questions) - n_answerable} unanswerable; "
            "cross-validated by article")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in scoring.FEATURE_SETS:
        scoring.install(name, None)

    gold_service, gold = gold_tuning(args.gold, args.gold_index, args.encoder) if args.gold \
        else (None, [])
    if gold:
        data += (f"; and the tuning half of the project's gold set ({len(gold)} questions, "
                 "bundled corpus, two groups of the folds, together weighing as much as one "
                 "article)")

    def trace(stage: str, extra: Sequence[dict[str, Any]] = (),
              extra_gold: Sequence[dict[str, Any]] = ()) -> Traced:
        traced = trace_questions(service, [*questions, *extra], stage)
        if gold_service is not None:
            traced += trace_questions(gold_service, [*gold, *extra_gold], f"{stage} (gold)")
        return traced

    models = [fit_rankers(trace, data, args.dump)] if not args.calibrator_only else []
    removed = removed_source_questions(questions, args.removed_paragraph)
    removed_gold = removed_source_questions(gold, len(gold)) if args.removed_document else []
    print(f"calibrator: tracing, with {len(removed)} + {len(removed_gold)} questions asked "
          "without their source", flush=True)
    traced = trace("calibrator", removed, removed_gold)
    if removed or removed_gold:
        data += (f"; and, labelled wrong, {len(removed)} answerable training questions (up to "
                 f"{args.removed_paragraph} a paragraph) asked with their paragraph removed")
        if removed_gold:
            data += (f", {len(removed_gold)} answerable gold tuning questions with their "
                     "document removed")
    calibrator = fit_calibrator_on_traces(traced, data, args.dump)
    encoder = query_encoder(service)
    for doc in (*(m for pair in models for m in pair), calibrator):
        doc["query_encoder"] = encoder
        (args.out / f"{doc['name']}.json").write_text(json.dumps(doc, indent=1) + "\n")
        scoring.install(doc["name"], None)
        print(f"wrote {args.out / (doc['name'] + '.json')}")


def query_encoder(service: QAService) -> str:
    """The file the training questions were encoded by (the int8 model's name is its content
    hash), or "torch": every feature of a question depends on it, so a model is refitted when
    it changes (tests/test_scoring.py checks the shipped models against the shipped one)."""
    sessions = service.embedder.query_sessions
    return sessions.path.name if sessions is not None else "torch"


def fit_rankers(trace: Callable[[str], Traced], data: str, dump_to: Path | None
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The reranker, then the selector on the reranker's output; both left installed."""
    print("reranker: tracing", flush=True)
    reranker, metrics = fit_ranker_on_traces(trace("reranker"), "reranker", reranker_data,
                                             features.PASSAGE_FEATURES, dump_to)
    print(f"  {metrics}")
    reranker = stamp(reranker, data + " (questions whose pool holds a right passage and a wrong "
                     "one: of the question's paragraph, or holding the gold quote)", metrics)
    scoring.install("reranker", reranker)

    print("selector: tracing", flush=True)
    selector, metrics = fit_ranker_on_traces(trace("selector"), "selector", selector_data,
                                             features.SENTENCE_FEATURES, dump_to)
    print(f"  {metrics}")
    selector = stamp(selector, data + " (answerable questions with a candidate sentence that "
                     "holds a gold answer and one that does not)", metrics)
    scoring.install("selector", selector)
    return reranker, selector


def fit_calibrator_on_traces(traced: Traced, data: str, dump_to: Path | None
                             ) -> dict[str, Any]:
    """The calibrator on every traced answer; its metrics and operating point out of fold, on
    the real questions only. With synthetic questions, the same figures without them are
    printed beside (same folds, same real rows)."""
    x, y, answerable, articles, real = calibrator_data(traced, lambda q, r: not q[
        "impossible"] and is_right(answered_text(r), q["answers"]))
    kinds = [q.get("kind") for q, trace, _ in traced if "question_vector" in trace]
    dump(dump_to, "calibrator",
         [(row[None, :], np.array([label])) for row, label in zip(x, y, strict=True)], articles)
    p = out_of_fold(x, y, articles, real)
    ok = ~np.isnan(p) & real
    calibrator = fit_calibrator(x, y, group_weights(articles, real))
    metrics = {"cv_ece": round(calibration_error(p[ok], y[ok]), 4),
               "cv_log_loss": round(float(-np.mean(np.log(np.where(y[ok], p[ok], 1 - p[ok])
                                                              + 1e-12))), 4),
               **{f"cv_{k}": v for k, v in risk_coverage(p[ok], y[ok]).items()},
               "questions": int(real.sum()), "right": int(y[real].sum())}
    if not real.all():
        metrics["synthetic_questions"] = int((~real).sum())
    calibrator["threshold"] = operating_point(p[ok], answerable[ok]) if ok.any() else 0.5
    at = [k for k, keep in zip(kinds, ok, strict=True) if keep]
    metrics |= {f"cv_{k}": v for k, v in abstention_figures(
        p[ok], y[ok], answerable[ok], [a for a, keep in zip(articles, ok, strict=True) if keep],
        at, calibrator["threshold"]).items()}
    print(f"  {metrics}; operating point {calibrator['threshold']}")
    if not real.all():
        keep = np.flatnonzero(real)
        q = out_of_fold(x[keep], y[keep], [articles[i] for i in keep])
        fine = ~np.isnan(q)
        cut = operating_point(q[fine], answerable[keep][fine]) if fine.any() else 0.5
        before = abstention_figures(q[fine], y[keep][fine], answerable[keep][fine],
                                    [articles[i] for i in keep[fine]],
                                    [kinds[i] for i in keep[fine]], cut)
        print(f"  without the synthetic questions: aurc "
              f"{risk_coverage(q[fine], y[keep][fine])['aurc']}, ece "
              f"{calibration_error(q[fine], y[keep][fine])}, {before}; operating point {cut}")
    return stamp(calibrator, data + " (label: the answer holds a gold answer; answering an "
                 "unanswerable question is wrong; operating point: the highest cut abstaining "
                 "on at most 5% of the answerable training questions out of fold)", metrics)


def gold_tuning(gold_path: Path, index: Path, encoder: str
                ) -> tuple[QAService, list[dict[str, Any]]]:
    """A service over the bundled corpus, and the gold questions of the tuning split in the
    shape of the SQuAD ones (two groups, alternate ids). The held-out split is never read."""
    rows = [json.loads(line) for line in gold_path.read_text().splitlines() if line.strip()]
    tuning = {r["id"]: r.get("doc") for r in rows if r.get("split") == "tuning"}
    gold = [g for g in load_gold(gold_path) if g.id in tuning]
    settings = Settings.load({"corpus_dir": PROJECT / "corpus", "index_dir": index,
                              "abstain_threshold": 0.0, "encoder": encoder}, environ={})
    build_index(settings)
    asked = [{"id": g.id, "question": g.question, "group": f"gold-{'ab'[n % 2]}",
              "doc": tuning[g.id], "kind": g.kind, "quote": g.quote,
              "impossible": not g.answerable,
              "answers": [a for a in (g.answer, *g.aliases) if a] if g.answerable else []}
             for n, g in enumerate(sorted(gold, key=lambda g: g.id))]
    return QAService(settings).load(), asked


if __name__ == "__main__":
    main()
