"""SQuAD 2.0 dev benchmark: hybrid vs dense-only vs BM25-only retrieval, and answer accuracy.

Every paragraph of the dev split becomes one document; a fixed sample of answerable questions
(seed 0) is asked through the same QAService the product uses. A hit is a passage from the gold
paragraph. Answer accuracy: the answer text contains a gold answer (case-insensitive) and the
service did not abstain. The data file is read by path and never copied into the project.

    python bench/squad.py --data ../shared/bench/squad-v2.0-dev.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from qa.config import Settings
from qa.indexing import build_index
from qa.service import QAService

PROJECT = Path(__file__).resolve().parent.parent
MODES = ("hybrid", "dense", "lexical")


def load_squad(path: Path) -> tuple[dict[str, tuple[str, str]], list[dict[str, Any]]]:
    """({doc_id: (title, paragraph)}, questions with doc, answers and is_impossible)."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    docs: dict[str, tuple[str, str]] = {}
    questions = []
    for a, article in enumerate(data):
        title = article["title"].replace("_", " ")
        for p, para in enumerate(article["paragraphs"]):
            doc_id = f"{a:02d}-{p:03d}"
            docs[doc_id] = (title, para["context"])
            for qa in para["qas"]:
                questions.append({
                    "id": qa["id"], "question": qa["question"], "doc": doc_id,
                    "answers": [x["text"] for x in qa["answers"]],
                    "impossible": bool(qa.get("is_impossible")),
                })
    return docs, questions


def write_corpus(docs: dict[str, tuple[str, str]], corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    for doc_id, (title, text) in docs.items():
        target = corpus / f"{doc_id}.txt"
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            (corpus / f"{doc_id}.meta.json").write_text(json.dumps({"title": title}))


def sample(questions: list[dict[str, Any]], n: int, seed: int,
           impossible: bool) -> list[dict[str, Any]]:
    pool = sorted((q for q in questions if q["impossible"] == impossible), key=lambda q: q["id"])
    return random.Random(seed).sample(pool, min(n, len(pool)))


def retrieval_metrics(service: QAService, asked: list[dict[str, Any]], mode: str) -> dict[str, float]:
    hits = {1: 0, 5: 0, 10: 0}
    mrr = 0.0
    latencies = []
    for q in asked:
        started = time.perf_counter()
        passages = service.search(q["question"], k=10, mode=mode)["passages"]
        latencies.append((time.perf_counter() - started) * 1000)
        rank = next((r for r, p in enumerate(passages, 1) if p["doc_id"] == q["doc"]), None)
        for k in hits:
            hits[k] += bool(rank and rank <= k)
        mrr += 1 / rank if rank else 0.0
    n = len(asked)
    latencies.sort()
    return {"hit@1": hits[1] / n, "hit@5": hits[5] / n, "hit@10": hits[10] / n,
            "mrr@10": mrr / n, "p50_ms": latencies[n // 2]}


def answer_metrics(service: QAService, asked: list[dict[str, Any]]) -> dict[str, float]:
    correct = abstained = 0
    for q in asked:
        answer = service.ask(q["question"], use_cache=False)["answer"]
        abstained += answer["abstained"]
        text = answer["text"].lower()
        correct += (not answer["abstained"]) and any(a.lower() in text for a in q["answers"])
    n = len(asked)
    return {"answer_accuracy": correct / n, "abstained": abstained / n}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=PROJECT.parent / "shared" / "bench" /
                        "squad-v2.0-dev.json", help="SQuAD 2.0 dev JSON (read, never copied)")
    parser.add_argument("--sample", type=int, default=500, help="answerable questions asked")
    parser.add_argument("--unanswerable", type=int, default=200,
                        help="unanswerable questions asked (abstention rate)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/qa-bench-squad"),
                        help="corpus and index for the benchmark (reused between runs)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    docs, questions = load_squad(args.data)
    corpus, index = args.workdir / "corpus", args.workdir / "index"
    write_corpus(docs, corpus)
    settings = Settings.load({"corpus_dir": corpus, "index_dir": index}, environ={})
    started = time.perf_counter()
    build = build_index(settings)
    print(f"index: {build.documents} paragraphs, {build.chunks} chunks, {build.embedded} embedded "
          f"in {time.perf_counter() - started:.1f}s (version {build.version})")
    service = QAService(settings).load()
    answerable = sample(questions, args.sample, args.seed, impossible=False)
    unanswerable = sample(questions, args.unanswerable, args.seed, impossible=True)

    rows = {mode: retrieval_metrics(service, answerable, mode) for mode in MODES}
    answers = answer_metrics(service, answerable)
    refusals = answer_metrics(service, unanswerable)["abstained"] if unanswerable else 0.0

    print(f"\nSQuAD 2.0 dev: {len(docs)} paragraphs, {len(answerable)} answerable questions "
          f"(seed {args.seed}); {machine()}; {time.strftime('%Y-%m-%d')}\n")
    print("| retriever | hit@1 | hit@5 | hit@10 | MRR@10 | search p50 ms |")
    print("|---|---|---|---|---|---|")
    for mode, m in rows.items():
        print(f"| {mode} | {m['hit@1']:.3f} | {m['hit@5']:.3f} | {m['hit@10']:.3f} | "
              f"{m['mrr@10']:.3f} | {m['p50_ms']:.1f} |")
    print(f"\nanswer accuracy (hybrid, top answer contains a gold answer): "
          f"{answers['answer_accuracy']:.3f}; abstained on answerable: {answers['abstained']:.3f}; "
          f"abstained on {len(unanswerable)} unanswerable: {refusals:.3f}")
    wins = all(rows["hybrid"][m] > max(rows["dense"][m], rows["lexical"][m])
               for m in ("hit@1", "hit@5"))
    print(f"hybrid beats dense-only and BM25-only on hit@1 and hit@5: {'yes' if wins else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps({"retrieval": rows, "answers": answers,
                                         "unanswerable_abstained": refusals,
                                         "machine": machine(),
                                         "date": time.strftime("%Y-%m-%d")}, indent=2))


if __name__ == "__main__":
    main()
