"""The embedding cache: chunk and sentence vectors (and token vectors) keyed by model and content
hash in ``index/cache/embeddings.sqlite``, so that a rebuild embeds only new text. It survives
crashes and failed builds; it is never part of a published build.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qa.store.tokens import StoredTokens


class EmbeddingCache:
    """Vectors keyed by (model, content hash) in SQLite; survives crashes and failed builds."""

    def __init__(self, path: Path, model_key: str, dimension: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.model_key = model_key
        self.dimension = dimension
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS vectors (model TEXT, key TEXT, vector BLOB, "
            "PRIMARY KEY (model, key))"
        )
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS token_vectors (model TEXT, key TEXT, ids BLOB, "
            "starts BLOB, vectors BLOB, PRIMARY KEY (model, key))"
        )

    def _rows(self, columns: str, table: str, keys: Sequence[str]) -> Iterator[Any]:
        """``SELECT key, <columns> FROM <table>`` for this model's ``keys``, 500 keys a query."""
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), 500):
            batch = unique[i:i + 500]
            marks = ",".join("?" * len(batch))
            yield from self.db.execute(
                f"SELECT key, {columns} FROM {table} WHERE model = ? AND key IN ({marks})",
                [self.model_key, *batch])

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for key, blob in self._rows("vector", "vectors", keys):
            vec = np.frombuffer(blob, dtype=np.float32)
            if vec.shape[0] == self.dimension:
                found[key] = vec
        return found

    def put_many(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO vectors (model, key, vector) VALUES (?, ?, ?)",
                [(self.model_key, k, np.asarray(v, dtype=np.float32).tobytes())
                 for k, v in zip(keys, vectors, strict=True)],
            )

    def get_tokens(self, keys: Sequence[str]) -> dict[str, StoredTokens]:
        found: dict[str, StoredTokens] = {}
        for key, ids_blob, starts_blob, vectors_blob in self._rows(
                "ids, starts, vectors", "token_vectors", keys):
            ids = np.frombuffer(ids_blob, dtype=np.int32)
            starts = np.frombuffer(starts_blob, dtype=np.int32)
            vectors = np.frombuffer(vectors_blob, dtype=np.int8)
            if vectors.size == ids.size * self.dimension and starts.size == ids.size:
                found[key] = (ids, starts, vectors.reshape(ids.size, self.dimension))
        return found

    def put_tokens(self, items: Sequence[tuple[str, StoredTokens]]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO token_vectors (model, key, ids, starts, vectors) "
                "VALUES (?, ?, ?, ?, ?)",
                [(self.model_key, k, np.asarray(ids, dtype=np.int32).tobytes(),
                  np.asarray(starts, dtype=np.int32).tobytes(),
                  np.asarray(vectors, dtype=np.int8).tobytes())
                 for k, (ids, starts, vectors) in items],
            )

    def close(self) -> None:
        self.db.close()


def content_key(model_key: str, text: str) -> str:
    return hashlib.sha256(f"{model_key}\0{text}".encode()).hexdigest()[:32]
