"""Ingest speed: full builds, no-op rebuilds and one added document, against bare model.encode;
and the encoders sentence-transformers' model can run on CPU here (torch, ONNX, ONNX int8).

Every build starts from an empty index directory and embedding cache, so everything is embedded.
The same loaded model serves the pipeline and the bare encode, so model loading is in neither.
Builds and bare encodes alternate (``--rounds``) and the best of each is compared, because this
shared host's speed drifts by 20% from one minute to the next.

    python bench/ingest.py --squad ../shared/bench/squad-v2.0-dev.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
from common import PROJECT, machine, table
from squad import SQUAD_DEV

from qa import store
from qa.config import Settings
from qa.embedding import Embedder
from qa.evaluation import DEFAULT_GOLD, first_hit_rank, load_gold
from qa.indexing import build_index, chunk_embed_text, sentence_embed_text

NEW_DOC = ("# The Selenga Delta Survey\n\nIn 2033 the Selenga Delta Survey counted 212 species of "
           "migratory birds on the delta's wetlands. The survey team of eleven ornithologists "
           "worked from a station near Kabansk for three summers.\n")


def embedded_texts(index_dir: Path) -> list[str]:
    """Exactly what the pipeline embeds: chunk headers + text, and every sentence, each with
    its document's acronyms glossed."""
    reader = store.open_current(index_dir)
    texts = []
    for doc in reader.documents():
        text = reader.document_text(doc["doc_id"]) or ""
        acronyms = reader.document_acronyms(doc["doc_id"])
        texts += [chunk_embed_text(c, acronyms) for c in reader.document_chunks(doc["doc_id"])]
        texts += [sentence_embed_text(text, s["start"], s["end"], acronyms)
                  for s in reader.document_sentences(doc["doc_id"])]
    reader.close()
    return list(dict.fromkeys(texts))  # the cache embeds each distinct text once


def measure_corpus(name: str, corpus: Path, embedder: Embedder, work: Path,
                   rounds: int = 2) -> dict[str, Any]:
    index = work / f"{corpus.name}-index"
    settings = Settings.load({"corpus_dir": corpus, "index_dir": index, "encoder": "torch"},
                             environ={})
    # The host's speed drifts between minutes: full builds (from scratch) and bare encodes are
    # interleaved, and the best of each is compared.
    full_times, bare_times = [], []
    for round_ in range(rounds):
        if round_:
            shutil.rmtree(index)
        started = time.perf_counter()
        full = build_index(settings, embedder=embedder)
        full_times.append(time.perf_counter() - started)
        texts = embedded_texts(index)
        started = time.perf_counter()
        embedder.sentence_transformer.encode(texts, batch_size=32, normalize_embeddings=True,
                                             convert_to_numpy=True, show_progress_bar=False)
        bare_times.append(time.perf_counter() - started)
    full_s, bare_s = min(full_times), min(bare_times)
    started = time.perf_counter()
    noop = build_index(settings, embedder=embedder)
    noop_s = time.perf_counter() - started
    cli = subprocess.run([sys.executable, "-m", "qa.cli", "index", "--json", "--corpus-dir",
                          str(corpus), "--index-dir", str(index), "--encoder", "torch"],
                         capture_output=True, text=True, check=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "qa.cli", "index", "--json", "--corpus-dir",
                    str(corpus), "--index-dir", str(index), "--encoder", "torch"],
                   capture_output=True, text=True, check=True)
    cli_s = time.perf_counter() - started
    (corpus / "zz-added-survey.md").write_text(NEW_DOC)
    added = build_index(settings, embedder=embedder)
    reader = store.open_current(index)
    added_chunks = len(reader.document_chunks("zz-added-survey"))
    reader.close()
    return {
        "name": name, "documents": full.documents, "chunks": full.chunks, "texts": len(texts),
        "full_s": full_s, "bare_s": bare_s, "share": bare_s / full_s, "noop_s": noop_s,
        "round_shares": [b / f for f, b in zip(full_times, bare_times, strict=True)],
        "noop_cli_s": cli_s, "noop_embedded": noop.embedded + json.loads(cli.stdout)["embedded"],
        "added_embedded": added.embedded, "added_chunks": added_chunks,
    }


def squad_corpus(path: Path, limit: int, target: Path) -> Path:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    target.mkdir(parents=True)
    n = 0
    for a, article in enumerate(data):
        for p, para in enumerate(article["paragraphs"]):
            if n >= limit:
                return target
            (target / f"{a:02d}-{p:03d}.txt").write_text(para["context"], encoding="utf-8")
            (target / f"{a:02d}-{p:03d}.meta.json").write_text(
                json.dumps({"title": article["title"].replace("_", " ")}))
            n += 1
    return target


def compare_encoders(index_dir: Path, work: Path) -> list[tuple[Any, ...]]:
    """Speed, agreement with torch and dense hit@5 on the gold set for each encoder."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    reader = store.open_current(index_dir)
    rows = reader.chunks(list(range(reader.faiss.ntotal)))
    reader.close()
    chunk_ids = sorted(rows)
    texts = [f"{rows[i]['header']}\n{rows[i]['text']}" for i in chunk_ids]
    gold = [g for g in load_gold(DEFAULT_GOLD) if g.answerable]
    torch_embedder = Embedder(backend="torch", threads=os.cpu_count())
    onnx_dir = work / "onnx"
    exporter = Embedder(backend="auto", onnx_dir=onnx_dir, threads=os.cpu_count())
    exporter.ensure_onnx()
    fp32 = exporter.onnx_path()
    assert fp32 is not None
    int8 = work / "model-int8.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)

    def session(path: Path) -> Any:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = os.cpu_count() or 1
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    encoders = {
        "torch": lambda batch: torch_embedder.encode(batch, batch_size=32),
        "onnx fp32": _onnx_encoder(exporter, session(fp32)),
        "onnx int8": _onnx_encoder(exporter, session(int8)),
    }
    reference = None
    out = []
    for name, encode in encoders.items():
        encode(texts[:32])  # warm up
        started = time.perf_counter()
        vectors = np.vstack([encode(texts[i:i + 32]) for i in range(0, len(texts), 32)])
        rate = len(texts) / (time.perf_counter() - started)
        questions = np.vstack([encode([g.question]) for g in gold])
        top = np.argsort(-(questions @ vectors.T), axis=1)[:, :5]
        hits = sum(bool(first_hit_rank([texts[j] for j in top[n]], g.quote or ""))
                   for n, g in enumerate(gold))
        if reference is None:
            reference = vectors
        cosine = (vectors * reference).sum(axis=1)
        out.append((name, rate, float(cosine.mean()), float(cosine.min()), hits / len(gold)))
    return out


def _onnx_encoder(embedder: Embedder, session: Any) -> Any:
    def encode(batch: list[str]) -> np.ndarray:
        order = sorted(range(len(batch)), key=lambda k: len(batch[k]))
        vectors = np.empty((len(batch), embedder.dimension), dtype=np.float32)
        vectors[order] = embedder._run_onnx(session, [batch[k] for k in order])[0]
        return vectors

    return encode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad", type=Path, default=SQUAD_DEV)
    parser.add_argument("--squad-limit", type=int, default=646, help="paragraphs to index")
    parser.add_argument("--skip-encoders", action="store_true", help="skip the encoder comparison")
    parser.add_argument("--rounds", type=int, default=2,
                        help="full builds and bare encodes, interleaved; the best of each counts")
    args = parser.parse_args()

    embedder = Embedder(backend="torch", threads=os.cpu_count())
    embedder.encode(["warm up"])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundled = work / "bundled"
        shutil.copytree(PROJECT / "corpus", bundled)
        results = [measure_corpus("bundled corpus", bundled, embedder, work, args.rounds)]
        if args.squad.is_file() and args.squad_limit > 0:
            corpus = squad_corpus(args.squad, args.squad_limit, work / "squad")
            results.append(measure_corpus(f"SQuAD dev ({args.squad_limit} paragraphs)", corpus,
                                          embedder, work, args.rounds))
        print(f"\n{machine()}\n")
        print(table(["corpus", "docs", "chunks", "texts embedded", "full build s",
                     "bare encode s", "pipeline vs bare", "no-op s (in-process)", "no-op s (CLI)",
                     "added doc: embedded / its chunks"],
                    [(r["name"], r["documents"], r["chunks"], r["texts"], r["full_s"], r["bare_s"],
                      f"{100 * r['share']:.0f}%", r["noop_s"], r["noop_cli_s"],
                      f"{r['added_embedded']} / {r['added_chunks']}") for r in results]),
              flush=True)
        for r in results:
            rounds = ", ".join(f"{100 * x:.0f}%" for x in r["round_shares"])
            print(f"{r['name']}: pipeline vs bare in each round {rounds} (best build and best "
                  "bare encode compared above)")
        encoders = [] if args.skip_encoders else compare_encoders(work / "bundled-index", work)
    if encoders:
        print("\nEncoders on the bundled corpus's chunk texts (batch 32, all cores):\n")
        print(table(["encoder", "texts/s", "cosine vs torch (mean)", "min", "dense hit@5 (gold)"],
                    encoders))


if __name__ == "__main__":
    main()
