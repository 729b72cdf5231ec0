"""Per-client rate limiting for the JSON API: one token bucket per client key.

A client may burst up to ``per_minute`` requests and then gets one more every ``60 / per_minute``
seconds. Thread-safe (one lock), memory-bounded (least recently seen clients are evicted past
``max_clients``; a bucket idle for a full window is full again and is simply dropped). Knows
nothing of Flask: the web layer passes the client key and turns a refusal into a 429.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

WINDOW_SECONDS = 60.0


class RateLimiter:
    def __init__(self, per_minute: int, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 0:
            raise ValueError("per_minute must be >= 0")
        self.per_minute = per_minute
        self.max_clients = max_clients
        self._clock = clock
        self._rate = per_minute / WINDOW_SECONDS  # tokens per second
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> tokens, t
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def acquire(self, key: str) -> int:
        """Take one token for ``key``: 0 when allowed, else the seconds to wait (>= 1)."""
        if not self.enabled:
            return 0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * self._rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0
            else:
                self._buckets[key] = (tokens, now)
                wait = max(1, math.ceil((1.0 - tokens) / self._rate))
            self._evict(now)
        return wait

    def _evict(self, now: float) -> None:
        # Oldest-touched first: drop buckets that have refilled completely, then any overflow.
        while self._buckets:
            key, (_, last) = next(iter(self._buckets.items()))
            if now - last >= WINDOW_SECONDS or len(self._buckets) > self.max_clients:
                del self._buckets[key]
            else:
                break

    def __len__(self) -> int:
        return len(self._buckets)
