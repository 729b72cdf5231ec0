"""Compressed token vectors: the late-interaction store of large builds.

A build's int8 token vectors (``tokens.quantize_tokens``, 384 bytes a word piece with this
model) are encoded with a FAISS quantizer described by a factory string (``CODEC``; product
quantization by default), trained on a seeded sample of the build's own pieces; ``decode`` gives
unit float32 rows back for the few chunks a question reranks. ColBERTv2 compresses its token
vectors for the same reason. The codec chosen and the one measured against it (PQ64) are in
bench/RESULTS.md ("Issue #17, second round", from ``bench/token_store.py``, which also takes a
rotation first, ``OPQ96,PQ96``, or ColBERTv2-like centroid-plus-residual codes, ``IVF256,PQ96``;
neither was measured to the end). Plain numpy and faiss; the writer and the reader own the
files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from qa.store.tokens import TOKEN_SCALE

# FAISS index_factory string of the token codec: 96 sub-vectors of 4 dimensions, 8 bits each
# (96 bytes a piece; 11.1 KB a chunk with the pieces' starts on the bundled corpus). Chosen by
# bench/token_store.py on the gold tuning half and SQuAD's training articles, where it ranks as
# the int8 store does; PQ64 (7.6 KB a chunk) lost one tuning question at hit@1.
CODEC = "PQ96"
# Pieces the quantizer is trained on at most (a seeded sample of the build's pieces): FAISS uses
# at most 256 points a centroid per sub-space anyway; more only costs training time.
TRAIN_SAMPLE = 65_536
# FAISS asks for 39 training points a centroid (256 a sub-quantizer, or a coarse list): a build
# with fewer pieces keeps int8 vectors whatever the setting.
POINTS_PER_CENTROID = 39
ENCODE_BLOCK = 65_536
SEED = 1234


def min_train(codec: str = CODEC) -> int:
    """Pieces needed to train ``codec``: 39 a centroid of its largest k-means."""
    coarse = re.search(r"IVF(\d+)", codec)
    return POINTS_PER_CENTROID * max(256, int(coarse.group(1)) if coarse else 0)


def subvectors(codec: str = CODEC) -> int:
    """The number of PQ sub-vectors a ``codec`` splits a vector into."""
    found = re.search(r"PQ(\d+)", codec)
    return int(found.group(1)) if found else 1


MIN_TRAIN = min_train()


def can_train(n_pieces: int, dim: int, codec: str = CODEC) -> bool:
    """True when ``codec`` can be trained on this many pieces of this dimension."""
    return n_pieces >= min_train(codec) and dim % subvectors(codec) == 0


def train(sample: np.ndarray, codec: str = CODEC) -> Any:
    """A quantizer (FAISS index_factory ``codec``) trained on int8 token vectors (rows of
    ``sample``), deterministic for the same rows: every k-means in it is seeded."""
    import faiss

    floats = _unit(sample)
    index = faiss.index_factory(floats.shape[1], codec, faiss.METRIC_INNER_PRODUCT)
    for part in _parts(index):
        # index_factory's PQ reorders its codes for Hamming search ("polysemous" training):
        # minutes of annealing that change no decoded vector.
        if hasattr(part, "do_polysemous_training"):
            part.do_polysemous_training = False
        for clustering in ("cp", "pq.cp"):  # a PQ's k-means, and a coarse quantizer's
            holder: Any = part
            for name in clustering.split("."):
                holder = getattr(holder, name, None)
            if holder is not None:
                holder.seed = SEED
    index.train(floats)
    return index


def _parts(index: Any) -> list[Any]:
    """An index and the one inside it when it is a rotation first (OPQ)."""
    import faiss

    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        return [index, *_parts(index.index)]
    return [index]


def code_size(codec: Any) -> int:
    """Bytes a piece's code takes."""
    return int(codec.sa_code_size())


def sample_rows(n_rows: int) -> np.ndarray:
    """The ascending rows, out of ``n_rows``, a quantizer is trained on (seeded)."""
    if n_rows <= TRAIN_SAMPLE:
        return np.arange(n_rows)
    rng = np.random.default_rng(SEED)
    return np.sort(rng.choice(n_rows, TRAIN_SAMPLE, replace=False))


def encode(codec: Any, vectors: np.ndarray) -> np.ndarray:
    """uint8 codes (n x ``code_size``) of int8 token vectors."""
    out = np.empty((len(vectors), code_size(codec)), dtype=np.uint8)
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
    if not codec.is_trained or codec.ntotal or code_size(codec) <= 0:
        raise ValueError(f"{path.name} is not a trained token codec")
    return codec


def _unit(vectors: np.ndarray, scale: float = TOKEN_SCALE) -> np.ndarray:
    floats = np.asarray(vectors, dtype=np.float32) / scale
    norms = np.linalg.norm(floats, axis=1, keepdims=True)
    return np.ascontiguousarray(floats / np.maximum(norms, 1e-12), dtype=np.float32)
