"""Embedding throughput per core, and the cost of building on Ray, in one run.

For the bundled corpus's chunk texts (as the encoder sees them) and for SQuAD 2.0 dev
paragraphs: chunks per second per core of sentence-transformers' own ``model.encode``, of this
project's batch path on torch and on the ONNX export (same texts, same batch size, the largest
difference of any vector from ``model.encode``'s). Then full builds of the SQuAD paragraphs from
an empty index and cache: locally, and with ``ray_address=local`` (a cluster started in this
process on this machine's cores); the Ray overhead is the difference over the local time.

    python bench/throughput.py --squad ../shared/bench/squad-v2.0-dev.json --paragraphs 2000
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
from squad import SQUAD_DEV, load_squad, machine, write_corpus

from qa import store
from qa.config import Settings
from qa.embedding import Embedder
from qa.indexing import build_index, chunk_embed_text

PROJECT = Path(__file__).resolve().parent.parent


def corpus_chunk_texts(workdir: Path) -> list[str]:
    settings = Settings.load({"corpus_dir": PROJECT / "corpus",
                              "index_dir": workdir / "bundled-index"}, environ={})
    build_index(settings)
    reader = store.open_current(settings.index_dir)
    try:
        return [chunk_embed_text(row, reader.document_acronyms(d["doc_id"]))
                for d in reader.documents() for row in reader.document_chunks(d["doc_id"])]
    finally:
        reader.close()


def rate(encode: object, texts: list[str]) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    vectors = encode(texts)  # type: ignore[operator]
    seconds = time.perf_counter() - started
    return len(texts) / seconds / (os.cpu_count() or 1), np.asarray(vectors)


def compare(name: str, texts: list[str], onnx_dir: Path) -> None:
    torch_embedder = Embedder(backend="torch", threads=os.cpu_count())
    st = torch_embedder.sentence_transformer
    st_rate, reference = rate(lambda t: st.encode(t, batch_size=32, normalize_embeddings=True,
                                                  convert_to_numpy=True,
                                                  show_progress_bar=False), texts)
    onnx_embedder = Embedder(backend="auto", onnx_dir=onnx_dir, threads=os.cpu_count())
    onnx_embedder.ensure_onnx()
    assert onnx_embedder.backend == "onnx"
    print(f"\n{name}: {len(texts)} texts, chunks/s/core (ratio to model.encode; "
          "largest |difference| of a vector component)")
    print(f"  sentence-transformers model.encode: {st_rate:.2f}")
    for label, embedder in (("ours, torch", torch_embedder), ("ours, ONNX", onnx_embedder)):
        got, vectors = rate(lambda t, e=embedder: e.encode(t, batch_size=32), texts)
        print(f"  {label}: {got:.2f} ({got / st_rate:.2f}x; "
              f"{float(np.abs(vectors - reference).max()):.1e})")


def builds(docs: dict[str, tuple[str, str]], workdir: Path) -> None:
    corpus = workdir / "squad-corpus"
    write_corpus(docs, corpus)
    seconds = {}
    for label, ray in (("local", ""), ("ray local", "local")):
        index = workdir / f"squad-index-{label.replace(' ', '-')}"
        shutil.rmtree(index, ignore_errors=True)
        settings = Settings.load({"corpus_dir": corpus, "index_dir": index, "ray_address": ray},
                                 environ={})
        started = time.perf_counter()
        result = build_index(settings)
        seconds[label] = time.perf_counter() - started
        print(f"  build, {label}: {result.chunks} chunks in {seconds[label]:.1f}s "
              f"({result.chunks / seconds[label] / (os.cpu_count() or 1):.2f} chunks/s/core)")
    overhead = seconds["ray local"] / seconds["local"] - 1
    print(f"  Ray overhead: {100 * overhead:+.0f}% of the local build time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad", type=Path, default=SQUAD_DEV)
    parser.add_argument("--paragraphs", type=int, default=2000)
    parser.add_argument("--no-ray", action="store_true", help="skip the two builds")
    args = parser.parse_args()
    print(f"{machine()}; {time.strftime('%Y-%m-%d %H:%M')}")
    with tempfile.TemporaryDirectory(prefix="qa-throughput-") as tmp:
        workdir = Path(tmp)
        compare("bundled corpus chunks", corpus_chunk_texts(workdir), workdir / "onnx")
        docs, _ = load_squad(args.squad)
        # The dev file here has 646 paragraphs: a larger --paragraphs takes them all.
        chosen = dict(list(docs.items())[:args.paragraphs])
        compare("SQuAD 2.0 dev paragraphs", [text for _, text in chosen.values()],
                workdir / "onnx")
        if not args.no_ray:
            builds(chosen, workdir)


if __name__ == "__main__":
    main()
