"""Memory and load time of `qa serve` on a large published index built from synthetic passages.

Writes a real build (the same `store.BuildWriter` the indexer uses: SQLite rows and FTS5, FAISS
index chosen by size, sentence vectors, manifest with checksums) of N synthetic chunks, starts
`qa serve --workers 2` on it, asks the gold questions, and reports the load time (with the
load-time checks and with the full `qa verify` hash), the time to ready, and the memory of the
master and workers: RSS, PSS (shared pages split between processes; the PSS sum is what the
server occupies) and private memory.

    python bench/serve_memory.py --chunks 1000000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from common import children, env_for, gold_questions, machine, memory_mb, request, served
from scale import vectors

from qa import store
from qa.config import Settings
from qa.indexing import build_params

PER_DOC = 1000
WORDS = [f"w{i}" for i in range(5000)]


def write_build(index_dir: Path, n: int) -> None:
    rng = np.random.default_rng(4)
    layout = store.Layout(index_dir)
    layout.ensure_writable()
    writer = store.BuildWriter(layout, store.new_version())
    docs = {}
    for d in range(0, n, PER_DOC):
        doc_id = f"synthetic-{d // PER_DOC:05d}"
        texts = [" ".join(rng.choice(WORDS, 12)) for _ in range(min(PER_DOC, n - d))]
        body = "\n\n".join(texts)
        rows, offset = [], 0
        for i, text in enumerate(texts):
            rows.append({"chunk_id": f"{doc_id}-c{i:04d}", "doc_id": doc_id, "ordinal": i,
                         "start": offset, "end": offset + len(text), "text": text,
                         "section": None, "page": None, "n_tokens": 24, "content_key": "-",
                         "header": doc_id, "context": doc_id})
            offset += len(text) + 2
        meta = {"doc_id": doc_id, "path": f"{doc_id}.txt", "title": doc_id, "authors": [],
                "content_hash": doc_id}
        writer.add_document(meta, body, "", [0], [], [], len(rows))
        writer.add_chunks(rows)
        docs[doc_id] = doc_id
    settings = Settings.load({"index_dir": index_dir}, environ={})
    writer.finish(vectors(n, 384), np.zeros((0, 384), dtype=np.float32), {
        "model": settings.model, "params": build_params(settings, "all-MiniLM-L6-v2"),
        "dimension": 384, "documents": docs, "counts": {"documents": len(docs)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        started = time.perf_counter()
        write_build(index, args.chunks)
        build_s = time.perf_counter() - started
        reader = store.open_current(index)
        kind = reader.manifest["index_type"]
        reader.close()
        t0 = time.perf_counter()
        reader = store.open_current(index)
        load_s = time.perf_counter() - t0
        reader.close()
        t0 = time.perf_counter()
        store.open_current(index, verify="full").close()
        full_s = time.perf_counter() - t0
        started = time.perf_counter()
        with served(env_for(index), workers=args.workers, ready_timeout=600) as (port, proc):
            ready_s = time.perf_counter() - started
            pids = [proc.pid, *children(proc.pid)]
            idle = memory_mb(pids)
            errors = 0
            for q in gold_questions():
                status, _ = request(port, "POST", "/api/v1/answer", {"question": q})
                errors += status != 200
            busy = memory_mb([proc.pid, *children(proc.pid)])
            master = memory_mb([proc.pid])
    print(f"\n{machine()}\n")
    print(f"{args.chunks:,} chunks, index type {kind}: build {build_s:.0f} s; IndexReader load "
          f"{load_s:.2f} s (load-time checks), {full_s:.1f} s (full hash, as `qa verify`); "
          f"qa serve --workers {args.workers} ready in {ready_s:.1f} s; "
          f"{len(gold_questions())} answers, {errors} errors")
    print("memory of master + workers (MB): " + "; ".join(
        f"{when}: RSS {m['rss']:.0f}, PSS {m['pss']:.0f}, private {m['private']:.0f}"
        for when, m in (("at ready", idle), ("after answers", busy))) +
        f"; master alone after answers: PSS {master['pss']:.0f}")


if __name__ == "__main__":
    main()
