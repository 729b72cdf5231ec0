"""Product-quantized token vectors: the late-interaction store of large builds.

A build's int8 token vectors (``tokens.quantize_tokens``, 384 bytes a word piece with this
model) are encoded with a FAISS product quantizer (``PQ_SUBSPACES`` sub-vectors of 8 bits each,
64 bytes a piece), trained on a seeded sample of the build's own pieces; ``decode`` gives unit
float32 rows back for the few chunks a question reranks. ColBERTv2 compresses its token vectors
for the same reason; the choice of PQ over its centroid-plus-residual codes at equal size is
measured in bench/RESULTS.md. Plain numpy and faiss; the writer and the reader own the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qa.store.tokens import TOKEN_SCALE

PQ_SUBSPACES = 64
PQ_BITS = 8
# Pieces the quantizer is trained on at most (a seeded sample of the build's pieces): FAISS uses
# at most 256 points a centroid per sub-space anyway; more only costs training time.
TRAIN_SAMPLE = 65_536
# Fewer pieces than this train 256 centroids a sub-space badly (FAISS asks for 39 a centroid):
# a build that small keeps int8 vectors whatever the setting.
MIN_TRAIN = 256 * 39
ENCODE_BLOCK = 65_536
SEED = 1234


def can_train(n_pieces: int, dim: int) -> bool:
    """True when a quantizer can be trained on this many pieces of this dimension."""
    return n_pieces >= MIN_TRAIN and dim % PQ_SUBSPACES == 0


def train(sample: np.ndarray) -> Any:
    """A product quantizer trained on int8 token vectors (rows of ``sample``), deterministic for
    the same rows: FAISS's k-means is seeded."""
    import faiss

    floats = _unit(sample)
    dim = floats.shape[1]
    codec = faiss.IndexPQ(dim, PQ_SUBSPACES, PQ_BITS, faiss.METRIC_INNER_PRODUCT)
    codec.pq.cp.seed = SEED
    codec.train(floats)
    return codec


def sample_rows(n_rows: int) -> np.ndarray:
    """The ascending rows, out of ``n_rows``, a quantizer is trained on (seeded)."""
    if n_rows <= TRAIN_SAMPLE:
        return np.arange(n_rows)
    rng = np.random.default_rng(SEED)
    return np.sort(rng.choice(n_rows, TRAIN_SAMPLE, replace=False))


def encode(codec: Any, vectors: np.ndarray) -> np.ndarray:
    """uint8 codes (n x PQ_SUBSPACES) of int8 token vectors."""
    out = np.empty((len(vectors), PQ_SUBSPACES), dtype=np.uint8)
    for i in range(0, len(vectors), ENCODE_BLOCK):
        out[i:i + ENCODE_BLOCK] = codec.sa_encode(_unit(vectors[i:i + ENCODE_BLOCK]))
    return out


def decode(codec: Any, codes: np.ndarray) -> np.ndarray:
    """Unit float32 rows from codes (the decoded vectors are renormalized: cosines stay cosines)."""
    if not len(codes):
        return np.zeros((0, codec.d), dtype=np.float32)
    return _unit(codec.sa_decode(np.ascontiguousarray(codes, dtype=np.uint8)), scale=1.0)


def save(codec: Any, path: Path) -> None:
    import faiss

    faiss.write_index(codec, str(path))


def load(path: Path) -> Any:
    import faiss

    codec = faiss.read_index(str(path))
    if not isinstance(codec, faiss.IndexPQ):
        raise ValueError(f"{path.name} is not a product quantizer")
    return codec


def _unit(vectors: np.ndarray, scale: float = TOKEN_SCALE) -> np.ndarray:
    floats = np.asarray(vectors, dtype=np.float32) / scale
    norms = np.linalg.norm(floats, axis=1, keepdims=True)
    return np.ascontiguousarray(floats / np.maximum(norms, 1e-12), dtype=np.float32)
