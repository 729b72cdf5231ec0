"""Compressed token vectors: the late-interaction store of large builds.

A build's int8 token vectors (``tokens.quantize_tokens``, 384 bytes a word piece with this
model) are encoded with a FAISS quantizer described by a factory string (``CODEC``; product
quantization by default), trained on a seeded sample of the build's own pieces. A question's
pieces are matched against the codes without decoding them (``CodeScorer``: per question piece,
a table of inner products with each sub-quantizer's centroids, FAISS's asymmetric distance
computation, as ColBERTv2/PLAID score their codes); ``decode`` gives unit float32 rows back, for
codecs without a scorer. ColBERTv2 compresses its token vectors for the same reason. The codec
chosen and the one measured against it (PQ64) are in bench/RESULTS.md ("Issue #17, second
round", from ``bench/token_store.py``, which also takes a rotation first, ``OPQ96,PQ96``, or
ColBERTv2-like centroid-plus-residual codes, ``IVF256,PQ96``; neither was measured to the end).
Plain numpy and faiss; the writer and the reader own the files.
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


class CodeScorer:
    """Cosines between unit question rows and the decoded, renormalized vectors of PQ codes,
    read from lookup tables instead of decoded vectors.

    A code picks one centroid in each of the M sub-spaces, which split the dimensions between
    them, so the inner product of a question piece with the decoded vector is the sum over
    sub-spaces of the piece's inner product with the centroid picked there (a table of M x 256
    per piece, ``ProductQuantizer.compute_inner_prod_table``), and the decoded vector's squared
    norm is the sum of the picked centroids' squared norms (one table, computed here once). Both
    sums are taken in one gather per sub-space; their quotient is what ``decode`` then a product
    gives, within float rounding."""

    def __init__(self, codec: Any) -> None:
        import faiss

        self.codec = codec
        self.pq: Any = faiss.downcast_index(codec).pq  # type: ignore[attr-defined]
        centroids = faiss.vector_to_array(self.pq.centroids).reshape(
            self.pq.M, self.pq.ksub, self.pq.dsub)
        self._norms2 = (centroids.astype(np.float64) ** 2).sum(axis=2).astype(np.float32)

    def cosines(self, query: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """(question pieces x codes) cosines; ``codes`` is n x M uint8."""
        import faiss

        q = np.ascontiguousarray(query, dtype=np.float32)
        n_pieces, m, ksub = len(q), self.pq.M, self.pq.ksub
        if not len(codes) or not n_pieces:
            return np.zeros((n_pieces, len(codes)), dtype=np.float32)
        tables = np.empty((n_pieces, m, ksub), dtype=np.float32)
        # One piece at a time: compute_inner_prod_tables runs an OpenMP loop over the pieces,
        # whose threads cost more to wake on a busy host than the 25k products they share.
        for piece in range(n_pieces):
            self.pq.compute_inner_prod_table(faiss.swig_ptr(q[piece]),
                                             faiss.swig_ptr(tables[piece]))
        # Sub-space first, then centroid, then the pieces and the squared norm: each gather
        # copies one short contiguous row per code.
        lookup = np.concatenate([tables.transpose(1, 2, 0), self._norms2[:, :, None]], axis=2)
        by_space = np.ascontiguousarray(np.asarray(codes, dtype=np.uint8).T)
        total = lookup[0].take(by_space[0], axis=0)
        picked = np.empty_like(total)
        for space in range(1, m):
            lookup[space].take(by_space[space], axis=0, out=picked, mode="clip")
            total += picked
        norms = np.sqrt(np.maximum(total[:, -1], 1e-24))
        return np.ascontiguousarray((total[:, :-1] / norms[:, None]).T)


def scorer(codec: Any) -> CodeScorer | None:
    """A ``CodeScorer`` for a plain product quantizer of 8-bit codes (``CODEC``); None for any
    other codec (a rotation first, coarse lists), whose codes are decoded instead."""
    import faiss

    index = faiss.downcast_index(codec)
    if isinstance(index, faiss.IndexPQ) and index.pq.nbits == 8:
        return CodeScorer(codec)
    return None


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
