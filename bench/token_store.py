"""Token store codecs compared on retrieval quality, on tuning questions only.

Builds the bundled corpus and the SQuAD 2.0 dev paragraphs once with int8 token vectors, then,
for each candidate codec (a FAISS index_factory string, ``store.compression``), trains it as a
build would (a seeded sample of the build's pieces), encodes every stored piece, puts the codes in
place of the int8 rows of the open index and asks: the gold set's tuning half (hit@1, hit@5,
MRR@10 of hybrid search, as `qa eval` ranks) and answerable questions of SQuAD's training
articles (never the held-out ones: bench/squad.py's HELD_OUT). Also the bytes a chunk of each
store and the time to train and encode. The choice of ``compression.CODEC`` is made on these
figures. ``--held-out`` asks the gold held-out half and every answerable question of SQuAD's
held-out articles instead: run once, after the choice, to report it.

    python bench/token_store.py --codecs "int8;PQ64;PQ96;OPQ96,PQ96;IVF256,PQ96"
    python bench/token_store.py --codecs "int8;PQ96" --held-out
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
from squad import HELD_OUT, SQUAD_DEV, load_squad, machine, write_corpus

from qa.config import Settings
from qa.evaluation import DEFAULT_GOLD, first_hit_rank, load_gold
from qa.indexing import build_index
from qa.service import QAService
from qa.store import compression

PROJECT = Path(__file__).resolve().parent.parent
STARTS_BYTES = 4  # token_starts.npy: one int32 a piece, whatever the store
OFFSET_BYTES = 8  # token_offsets.npy: one int64 a chunk


def int8_service(corpus: Path, index: Path) -> QAService:
    settings = Settings.load({"corpus_dir": corpus, "index_dir": index, "token_store": "int8"},
                             environ={})
    build_index(settings)
    return QAService(settings).load()


def use_codec(service: QAService, int8_rows: np.ndarray, name: str) -> dict[str, float]:
    """Put ``name``'s codes of the index's int8 rows in their place (or the int8 rows back)."""
    reader = service.reader()
    if name == "int8":
        reader.token_vectors, reader.token_codec = int8_rows, None
        return {"code_bytes": int8_rows.shape[1], "train_s": 0.0, "encode_s": 0.0}
    started = time.perf_counter()
    codec = compression.train(int8_rows[compression.sample_rows(len(int8_rows))], name)
    trained = time.perf_counter()
    codes = compression.encode(codec, int8_rows)
    encoded = time.perf_counter()
    reader.token_vectors, reader.token_codec = codes, codec
    import faiss

    return {"code_bytes": compression.code_size(codec), "train_s": trained - started,
            "encode_s": encoded - trained,
            "codec_bytes": int(faiss.serialize_index(codec).size)}


def chunk_bytes(service: QAService, code_bytes: int) -> float:
    reader = service.reader()
    assert reader.token_offsets is not None
    chunks = len(reader.token_offsets) - 1
    pieces = int(reader.token_offsets[-1])
    return (pieces * (code_bytes + STARTS_BYTES) + (chunks + 1) * OFFSET_BYTES) / chunks


def ranks(service: QAService, questions: list[tuple[str, Any]], hit: Any) -> list[int | None]:
    out = []
    for question, gold in questions:
        passages = service.search(question, k=10, mode="hybrid")["passages"]
        out.append(hit(passages, gold))
    return out


def summary(found: list[int | None]) -> dict[str, float]:
    n = len(found)
    return {"hit@1": sum(r == 1 for r in found) / n,
            "hit@5": sum(bool(r and r <= 5) for r in found) / n,
            "mrr@10": sum(1 / r for r in found if r and r <= 10) / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad", type=Path, default=SQUAD_DEV)
    parser.add_argument("--codecs", default="int8;PQ64;PQ96;OPQ96,PQ96;IVF256,PQ96",
                        help="';'-separated FAISS factory strings, and int8")
    parser.add_argument("--squad-questions", type=int, default=800,
                        help="answerable questions of the training articles asked (seeded)")
    parser.add_argument("--held-out", action="store_true",
                        help="ask the held-out questions (report once, after the choice)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/qa-bench-token-store"))
    args = parser.parse_args()
    codecs = args.codecs.split(";")
    print(f"{machine()}; {time.strftime('%Y-%m-%d %H:%M')}; codecs {codecs}")

    gold_service = int8_service(PROJECT / "corpus", args.workdir / "bundled-index")
    split = "held_out" if args.held_out else "tuning"
    tuning = [(q.question, q.quote) for q in load_gold(DEFAULT_GOLD)
              if q.split == split and q.answerable]
    docs, questions = load_squad(args.squad)
    write_corpus(docs, args.workdir / "squad-corpus")
    squad_service = int8_service(args.workdir / "squad-corpus", args.workdir / "squad-index")
    pool = sorted((q for q in questions if (q["article"] in HELD_OUT) == args.held_out
                   and not q["impossible"]), key=lambda q: q["id"])
    asked = (pool if args.held_out
             else random.Random(0).sample(pool, min(args.squad_questions, len(pool))))
    squad_questions = [(q["question"], q["doc"]) for q in asked]

    def gold_hit(passages: list[dict[str, Any]], quote: str) -> int | None:
        return first_hit_rank((p["text"] for p in passages), quote)

    def squad_hit(passages: list[dict[str, Any]], doc: str) -> int | None:
        return next((r for r, p in enumerate(passages, 1) if p["doc_id"] == doc), None)

    originals = {}
    for service in (gold_service, squad_service):
        rows = service.reader().token_vectors
        assert rows is not None and service.reader().token_codec is None
        originals[id(service)] = rows
    articles = "held-out" if args.held_out else "training"
    print(f"gold {split} half: {len(tuning)} answerable questions; SQuAD: {len(squad_questions)} "
          f"of {len(pool)} answerable questions of the {articles} articles (seed 0)\n")
    print("| codec | bytes a piece | bytes a chunk, bundled / SQuAD | codec file | train + encode "
          "s (bundled) | gold hit@1 / hit@5 / MRR | SQuAD hit@1 / hit@5 / MRR |")
    print("|---|---|---|---|---|---|---|")
    for name in codecs:
        costs = use_codec(gold_service, originals[id(gold_service)], name)
        use_codec(squad_service, originals[id(squad_service)], name)
        gold = summary(ranks(gold_service, tuning, gold_hit))
        squad = summary(ranks(squad_service, squad_questions, squad_hit))
        print(f"| {name} | {costs['code_bytes'] + STARTS_BYTES} | "
              f"{chunk_bytes(gold_service, costs['code_bytes']):,.0f} / "
              f"{chunk_bytes(squad_service, costs['code_bytes']):,.0f} | "
              f"{costs.get('codec_bytes', 0) / 1024:.0f} KB | "
              f"{costs['train_s']:.1f} + {costs['encode_s']:.1f} | "
              f"{gold['hit@1']:.3f} / {gold['hit@5']:.3f} / {gold['mrr@10']:.3f} | "
              f"{squad['hit@1']:.3f} / {squad['hit@5']:.3f} / {squad['mrr@10']:.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
