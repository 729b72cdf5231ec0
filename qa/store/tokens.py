"""Late-interaction token vectors as a build and the embedding cache keep them: int8 word-piece
vectors (``quantize_tokens``), the ``StoredTokens`` triple, and ``TokenMatch``, the cosines of a
question's pieces against some chunks' stored ones. Plain numpy; no file, no SQL.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOKEN_SCALE = 127.0

# Word-piece ids (int32), their start offsets (int32), their vectors (int8, n x dim).
StoredTokens = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class TokenMatch:
    """A question's token vectors against some chunks' stored ones: ``sims`` holds the cosines
    (question pieces x stored pieces); chunk ``rowids[i]``'s pieces are the columns
    ``bounds[i]:bounds[i + 1]``, starting at ``starts`` in its text."""

    rowids: np.ndarray
    bounds: np.ndarray
    sims: np.ndarray
    starts: np.ndarray


def quantize_tokens(vectors: np.ndarray) -> np.ndarray:
    """Unit-length float token vectors as int8 (cosines keep about two decimal places)."""
    return np.clip(np.rint(np.asarray(vectors) * TOKEN_SCALE), -127, 127).astype(np.int8)
