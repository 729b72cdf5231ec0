"""Index scale: build time, memory, load time, search latency and recall of FAISS index types on
synthetic passages, with BM25 (SQLite FTS5) and fused hybrid retrieval over the same rows.

Vectors are 384-d unit vectors around 1,000 seeded gaussian cluster centres (like sentence
embeddings, which are far from uniform); text is drawn from a Zipf-distributed vocabulary.
Recall@10 is measured against exact inner-product search.

    python bench/scale.py --sizes 100000,1000000
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import faiss
import numpy as np
from common import machine, percentile, table
from threadpoolctl import threadpool_limits

from qa import store

CLUSTERS = 1000
VOCAB = 20_000


def vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, dim)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        size = min(100_000, n - start)
        block = centres[rng.integers(0, CLUSTERS, size)] + 0.6 * rng.standard_normal(
            (size, dim)).astype(np.float32)
        out[start:start + size] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def queries(base: np.ndarray, count: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picked = base[rng.integers(0, len(base), count)]
    noisy = picked + 0.3 * rng.standard_normal(picked.shape).astype(np.float32) / np.sqrt(
        base.shape[1])
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_search(index: Any, qs: np.ndarray, k: int = 10) -> tuple[list[float], np.ndarray]:
    """One query at a time on one thread, as a server worker runs them."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    times, found = [], []
    for q in qs:
        started = time.perf_counter()
        _, ids = index.search(q.reshape(1, -1), k)
        times.append((time.perf_counter() - started) * 1000)
        found.append(ids[0])
    faiss.omp_set_num_threads(threads)
    return times, np.array(found)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def build_fts(path: Path, n: int, seed: int = 2) -> sqlite3.Connection:
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(VOCAB)])
    ranks = np.arange(1, VOCAB + 1)
    p = (1 / ranks) / (1 / ranks).sum()
    db = sqlite3.connect(path)
    db.execute("CREATE VIRTUAL TABLE t USING fts5(text, tokenize='porter unicode61')")
    for start in range(0, n, 50_000):
        size = min(50_000, n - start)
        picks = rng.choice(VOCAB, size=(size, 60), p=p)
        db.executemany("INSERT INTO t(rowid, text) VALUES (?, ?)",
                       ((start + i, " ".join(words[row])) for i, row in enumerate(picks)))
        db.commit()
    return db


def fts_queries(count: int, seed: int = 3) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" OR ".join(f'"w{w}"' for w in rng.integers(50, 5000, rng.integers(3, 6)))
            for _ in range(count)]


def hybrid(index: Any, db: sqlite3.Connection, q: np.ndarray, match: str) -> list[int]:
    _, ids = index.search(q.reshape(1, -1), 50)
    lexical = [r[0] for r in db.execute(
        "SELECT rowid FROM t WHERE t MATCH ? ORDER BY bm25(t) LIMIT 50", (match,))]
    fused: dict[int, float] = {}
    for ranked in (ids[0].tolist(), lexical):
        for rank, rowid in enumerate(ranked, 1):
            fused[rowid] = fused.get(rowid, 0.0) + 1 / (60 + rank)
    return sorted(fused, key=lambda r: -fused[r])[:10]


def run_size(n: int, dim: int, n_queries: int, work: Path) -> list[tuple[Any, ...]]:
    base = vectors(n, dim)
    qs = queries(base, n_queries)
    exact = faiss.IndexFlatIP(dim)
    exact.add(base)
    _, truth = exact.search(qs, 10)
    rows = []
    candidates: list[tuple[str, Any]] = [("flat", None)]
    candidates += [("hnsw32", ef) for ef in (64, 128)]
    hnsw = None
    for kind, ef in candidates:
        gc.collect()
        before = rss_mb()
        started = time.perf_counter()
        if kind == "flat":
            index: Any = faiss.IndexFlatIP(dim)
            index.add(base)
        else:
            if hnsw is None:
                hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
                hnsw.hnsw.efConstruction = 80
                hnsw.add(base)
            index = hnsw
            index.hnsw.efSearch = ef
        build_s = time.perf_counter() - started if kind == "flat" or ef == 64 else float("nan")
        path = work / f"{kind}-{n}.faiss"
        if not path.exists():
            faiss.write_index(index, str(path))
        started = time.perf_counter()
        loaded = faiss.read_index(str(path))
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        mapped = store.read_faiss(path)  # what the server does: vectors memory-mapped
        mmap_s = f"{time.perf_counter() - started:.2f}"
        del mapped
        del loaded
        if kind != "flat":
            index.hnsw.efSearch = ef
        times, found = time_search(index, qs)
        rows.append((f"{n:,}", f"{kind}" + (f" ef={ef}" if ef else ""), build_s, load_s, mmap_s,
                     path.stat().st_size / 2**20, percentile(times, 50), percentile(times, 95),
                     recall(found, truth), rss_mb() - before))
    db = build_fts(work / f"fts-{n}.sqlite", n)
    matches = fts_queries(n_queries)
    fts_times = []
    for m in matches:
        started = time.perf_counter()
        db.execute("SELECT rowid FROM t WHERE t MATCH ? ORDER BY bm25(t) LIMIT 50", (m,)).fetchall()
        fts_times.append((time.perf_counter() - started) * 1000)
    assert hnsw is not None
    hnsw.hnsw.efSearch = 128
    hybrid_times = []
    faiss.omp_set_num_threads(1)
    for q, m in zip(qs, matches, strict=True):
        started = time.perf_counter()
        hybrid(hnsw if n >= 200_000 else exact, db, q, m)
        hybrid_times.append((time.perf_counter() - started) * 1000)
    db.close()
    rows.append((f"{n:,}", "FTS5 BM25", "", "", "", (work / f"fts-{n}.sqlite").stat().st_size / 2**20,
                 percentile(fts_times, 50), percentile(fts_times, 95), "", ""))
    rows.append((f"{n:,}", "hybrid (dense top-50 + BM25 top-50, RRF)", "", "", "", "",
                 percentile(hybrid_times, 50), percentile(hybrid_times, 95), "", ""))
    return rows


PIECES_PER_CHUNK = 111  # content word pieces a chunk stores, measured on the bundled corpus


def token_store_rows(chunks: int, dim: int, n_queries: int, work: Path) -> list[tuple[Any, ...]]:
    """The late-interaction token store of ``chunks`` synthetic chunks, int8 and PQ, through
    the real writer and reader: bytes a chunk, build and load time, and the time of one
    question's token match (10 question pieces against 35 candidate chunks, as in a rerank)."""
    rng = np.random.default_rng(5)
    base = vectors(chunks * PIECES_PER_CHUNK, dim, seed=6)
    tokens = [(rng.integers(0, 30_000, PIECES_PER_CHUNK).astype(np.int32),
               np.arange(PIECES_PER_CHUNK, dtype=np.int32),
               store.quantize_tokens(base[i * PIECES_PER_CHUNK:(i + 1) * PIECES_PER_CHUNK]))
              for i in range(chunks)]
    del base
    rows = []
    for kind in ("int8", "pq"):
        layout = store.Layout(work / f"tokens-{kind}")
        writer = store.BuildWriter(layout, store.new_version())
        writer.add_document({"doc_id": "d", "path": "d.txt", "title": "D", "authors": [],
                             "content_hash": "h"}, "x", "x", [0], [0], [], chunks)
        writer.add_chunks([{"chunk_id": f"d#{i}", "doc_id": "d", "ordinal": i, "start": 0,
                            "end": 1, "text": "x", "section": None, "page": None,
                            "n_tokens": 1, "content_key": f"k{i}", "header": "",
                            "context": ""} for i in range(chunks)])
        started = time.perf_counter()
        writer.finish(vectors(chunks, dim, seed=7), np.zeros((0, dim), dtype=np.float32),
                      {"dimension": dim, "counts": {"documents": 1}}, tokens, token_store=kind)
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        reader = store.open_current(layout.root)
        load_s = time.perf_counter() - started
        names = [n for n in reader.manifest["files"] if n.startswith("token")]
        size = sum((reader.dir / n).stat().st_size for n in names)
        # A PQ store is matched two ways, question by question in turn so that both see the
        # same load: by lookup tables (what the reader does) and by decoding the codes first
        # (what it did before; the reader falls back to it for codecs without a scorer).
        ways = ["lookup tables", "decoded"] if kind == "pq" else [""]
        for limit in (None, 1):
            times: dict[str, list[float]] = {way: [] for way in ways}
            with threadpool_limits(limits=limit):
                for q in range(n_queries):
                    query = queries(reader.faiss.reconstruct_n(0, 100), 10, seed=q)
                    candidates = rng.integers(0, chunks, 35).tolist()
                    for way in ways:
                        reader._token_scorer = ((reader.token_codec, None) if way == "decoded"
                                                else (None, None))
                        started = time.perf_counter()
                        reader.match_tokens(query, candidates)
                        times[way].append((time.perf_counter() - started) * 1000)
            for way in ways:
                threads = f"{os.cpu_count()} (default)" if limit is None else "1"
                rows.append((f"{chunks:,}", f"{kind}, {way}" if way else kind,
                             f"{size / chunks / 1024:.1f}", f"{build_s:.1f}", f"{load_s:.2f}",
                             threads, f"{percentile(times[way], 50):.2f}",
                             f"{percentile(times[way], 95):.2f}"))
        reader.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated row counts")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="FAISS threads for building (search is timed one query at a time)")
    parser.add_argument("--token-chunks", type=int, default=0,
                        help="also measure the late-interaction token store (int8 and PQ) of "
                             "this many synthetic chunks; 0: skip")
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    if args.token_chunks:
        with tempfile.TemporaryDirectory() as tmp:
            token_rows = token_store_rows(args.token_chunks, args.dim, args.queries, Path(tmp))
        print(f"\n{machine()}; token store, {PIECES_PER_CHUNK} pieces a chunk\n")
        print(table(["chunks", "store, match", "KB a chunk", "build s", "load s",
                     "BLAS/OpenMP threads", "match p50 ms", "match p95 ms"], token_rows))
    rows = []
    if not args.sizes:
        return
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            rows += run_size(n, args.dim, args.queries, Path(tmp))
            print(f"done {n:,} rows; peak RSS so far {peak_mb():.0f} MB", file=sys.stderr)
    print(f"\n{machine()}; {args.queries} queries, k=10\n")
    print(table(["rows", "index", "build s", "load s", "server load s", "file MB", "p50 ms",
                 "p95 ms", "recall@10", "RSS +MB"], rows))
    print(f"\npeak RSS of the whole run: {peak_mb():.0f} MB")


if __name__ == "__main__":
    main()
