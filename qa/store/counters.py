"""Rate-limit counters shared by every worker process: fixed windows in one SQLite file
(``index/ratelimit.sqlite`` by default). The storage only; which requests count, and the limits,
are the business of ``qa.ratelimit``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from pathlib import Path

from qa.errors import IndexWriteError


class RateCounters:
    """Fixed-window counters (key -> count until an expiry time) in one SQLite file, so that
    every worker process of a server counts the same requests. Each change is one short
    IMMEDIATE transaction; expired rows are dropped as they are met and every so often."""

    PRUNE_EVERY = 1000
    ERRORS: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._writes = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(self._connect()) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, "
                             "count INTEGER NOT NULL, expires REAL NOT NULL)")
        except (OSError, sqlite3.Error) as e:
            raise IndexWriteError(
                f"rate-limit counts cannot be kept in {path}: {e}; make the index directory "
                "writable or set QA_RATE_LIMIT_STORAGE to a redis:// URI") from e

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10, isolation_level=None,
                               check_same_thread=False)

    @property
    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "db", None)
        if conn is None:
            conn = self._local.db = self._connect()
        return conn

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Add ``amount`` to ``key`` (a fresh window of ``expiry`` seconds when it has none)."""
        now = time.time()
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT count, expires FROM counters WHERE key = ?",
                             (key,)).fetchone()
            if row is None or row[1] <= now:
                count, expires = amount, now + expiry
            else:
                count, expires = int(row[0]) + amount, float(row[1])
            db.execute("INSERT OR REPLACE INTO counters (key, count, expires) VALUES (?, ?, ?)",
                       (key, count, expires))
            self._writes += 1
            if self._writes % self.PRUNE_EVERY == 0:
                db.execute("DELETE FROM counters WHERE expires <= ?", (now,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return count

    def get(self, key: str) -> int:
        row = self.db.execute("SELECT count FROM counters WHERE key = ? AND expires > ?",
                              (key, time.time())).fetchone()
        return 0 if row is None else int(row[0])

    def expiry(self, key: str) -> float:
        """When ``key``'s window ends (now when it has none)."""
        row = self.db.execute("SELECT expires FROM counters WHERE key = ? AND expires > ?",
                              (key, time.time())).fetchone()
        return time.time() if row is None else float(row[0])

    def clear(self, key: str) -> None:
        self.db.execute("DELETE FROM counters WHERE key = ?", (key,))

    def reset(self) -> int:
        return int(self.db.execute("DELETE FROM counters").rowcount)

    def check(self) -> bool:
        try:
            self.db.execute("SELECT 1 FROM counters LIMIT 1")
        except sqlite3.Error:
            return False
        return True
