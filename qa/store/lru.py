"""A bounded, thread-safe least-recently-used map: the chunk rows and sentences an index reader
keeps in memory (a build never changes, so nothing is ever stale)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any


class LRU:
    """A bounded, thread-safe least-recently-used map."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[int, Any] = OrderedDict()
        self._lock = threading.Lock()

    def fetch(self, keys: Iterable[int],
              load: Callable[[list[int]], dict[int, Any]]) -> dict[int, Any]:
        """The values of ``keys``: cached ones from memory, the others from ``load`` (which gets
        the missing keys, each once) and then kept."""
        found, missing = self._lookup(keys)
        if missing:
            loaded = load(missing)
            with self._lock:
                self._data.update(loaded)
                while len(self._data) > self._size:
                    self._data.popitem(last=False)
            found.update(loaded)
        return found

    def _lookup(self, keys: Iterable[int]) -> tuple[dict[int, Any], list[int]]:
        """(the cached values, the keys not cached)."""
        found: dict[int, Any] = {}
        missing: dict[int, None] = {}
        with self._lock:
            for key in keys:
                if key in self._data:
                    self._data.move_to_end(key)
                    found[key] = self._data[key]
                else:
                    missing[key] = None
        return found, list(missing)
