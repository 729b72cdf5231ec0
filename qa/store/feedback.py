"""Answer feedback in one small SQLite file outside the index builds (``index/feedback.sqlite``
by default), kept across rebuilds. The storage only: what a valid feedback record is, and how
it becomes gold-set candidates, is ``qa.feedback``'s business.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qa.errors import IndexWriteError

_SCHEMA = ("CREATE TABLE IF NOT EXISTS feedback (id INTEGER PRIMARY KEY, created REAL NOT NULL, "
           "rating TEXT NOT NULL, question TEXT NOT NULL, answer TEXT, comment TEXT, "
           "index_version TEXT NOT NULL, citations TEXT NOT NULL)")


class FeedbackStore:
    """Append and read feedback rows; one short transaction per write, every worker process
    writing to the same file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._ready = False
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "db", None)
        if conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=10, isolation_level=None,
                                       check_same_thread=False)
                conn.row_factory = sqlite3.Row
                with self._lock:
                    if not self._ready:
                        conn.execute("PRAGMA journal_mode=WAL")
                        conn.execute(_SCHEMA)
                        self._ready = True
            except (OSError, sqlite3.Error) as e:
                raise IndexWriteError(f"feedback cannot be kept in {self.path}: {e}; make the "
                                      "directory writable or set QA_FEEDBACK_DB") from e
            self._local.db = conn
        return conn

    def add(self, rating: str, question: str, answer: str | None, comment: str | None,
            index_version: str, citations: list[dict[str, Any]]) -> int:
        try:
            cursor = self._connect().execute(
                "INSERT INTO feedback (created, rating, question, answer, comment, index_version, "
                "citations) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), rating, question, answer, comment, index_version,
                 json.dumps(citations)))  # ASCII: a lone surrogate is escaped, not refused
        except sqlite3.Error as e:
            raise IndexWriteError(f"feedback cannot be written to {self.path}: {e}") from e
        return int(cursor.lastrowid or 0)

    def rows(self, rating: str | None = None) -> Iterator[dict[str, Any]]:
        """Every stored row, oldest first (only those of ``rating`` when given)."""
        if not self.path.exists():
            return
        sql = "SELECT * FROM feedback"
        args: tuple[Any, ...] = ()
        if rating is not None:
            sql, args = sql + " WHERE rating = ?", (rating,)
        try:
            with contextlib.closing(self._connect().execute(sql + " ORDER BY id", args)) as cur:
                for row in cur:
                    item = dict(row)
                    item["citations"] = json.loads(item["citations"])
                    yield item
        except sqlite3.Error as e:
            raise IndexWriteError(f"feedback cannot be read from {self.path}: {e}") from e
