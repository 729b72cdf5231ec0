"""Spreading keep-alive connections evenly over gunicorn's workers.

Each gunicorn worker accepts from the one listening socket it inherited, and a kept-alive connection
stays with the worker that accepted it for as long as the client holds it. Which worker wins an
accept is left to the scheduler: measured with 4 keep-alive clients and 2 workers, all four landed on
one worker in some runs (one core busy, 135 answers/s) and two on each in others (215 answers/s).

``ConnectionBoard`` is a table in shared memory, made by the master before it forks, where every
worker publishes how many connections it holds. ``BalancedThreadWorker`` is gunicorn's threaded
worker that listens for new connections only while it holds no more than any other live worker, so
a new connection goes to the least loaded one. A worker with no connection always listens, and each
worker re-reads the board at least once a second, so a connection is never left waiting for long on
stale counts. A count is only believed while its worker is alive and has published it within
``STALE_AFTER`` seconds: a worker whose event loop is stalled (or not yet reaped) cannot hold the
others back. This module owns that rule and nothing else; ``qa.server`` configures gunicorn.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

from qa.metrics_dir import process_alive

STALE_AFTER = 3.0  # seconds; a worker's loop publishes at least once a second
_FIELDS = 3  # pid, connections, when published (CLOCK_MONOTONIC, ms: one clock for all processes)


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class ConnectionBoard:
    """Connections held by each worker, in shared memory: one (pid, count, time published) seat
    per worker."""

    def __init__(self, seats: int, stale_after: float = STALE_AFTER) -> None:
        self.seats = max(1, seats)
        self.stale_after_ms = int(stale_after * 1000)
        self._table: Any = multiprocessing.get_context("fork").Array("q", _FIELDS * self.seats)

    def claim(self, pid: int) -> int | None:
        """A seat for worker ``pid``: a free one, or one whose worker has exited. None when every
        seat is held by a live worker (more workers than seats); that worker then always listens."""
        with self._table.get_lock():
            for seat in range(self.seats):
                holder = int(self._table[_FIELDS * seat])
                if holder in (0, pid) or not process_alive(holder):
                    self._table[_FIELDS * seat] = pid
                    self.publish(seat, 0)
                    return seat
        return None

    def release(self, seat: int) -> None:
        with self._table.get_lock():
            self._table[_FIELDS * seat:_FIELDS * seat + _FIELDS] = [0] * _FIELDS

    def publish(self, seat: int, connections: int) -> None:
        # Aligned integers, each written whole: no lock. A reader may pair a new count with
        # the previous time, a second old at most.
        self._table[_FIELDS * seat + 1] = connections
        self._table[_FIELDS * seat + 2] = _now_ms()

    def counts(self) -> dict[int, int]:
        """Connections by seat, for the seats of live workers that published lately (one that
        died without releasing its seat, or whose loop is stalled, holds none)."""
        table = self._table[:]
        fresh_since = _now_ms() - self.stale_after_ms
        return {seat: int(table[_FIELDS * seat + 1]) for seat in range(self.seats)
                if table[_FIELDS * seat] != 0 and table[_FIELDS * seat + 2] >= fresh_since
                and process_alive(int(table[_FIELDS * seat]))}

    def least_loaded(self, seat: int) -> bool:
        """Whether the worker in ``seat`` holds no more connections than every other worker."""
        counts = self.counts()
        mine = counts.get(seat, 0)
        return mine == 0 or all(mine <= other for other in counts.values())


class BalancedThreadWorker(ThreadWorker):
    """gunicorn's threaded worker, listening for new connections only while it is the least
    loaded by the board that its application carries as ``connection_board``."""

    board: ConnectionBoard | None = None
    seat: int | None = None

    def init_process(self) -> None:
        board = getattr(self.app, "connection_board", None)
        if isinstance(board, ConnectionBoard):
            self.board = board
            self.seat = board.claim(os.getpid())
        super().init_process()

    def set_accept_enabled(self, enabled: bool) -> None:
        # gunicorn calls this when its own limit (worker_connections) changes its mind, and
        # notify() below calls it once a loop; both pass through the board.
        if self.board is not None and self.seat is not None:
            self.board.publish(self.seat, self.nr_conns)
            enabled = enabled and self.board.least_loaded(self.seat)
        super().set_accept_enabled(enabled)

    def notify(self) -> None:
        """Once per turn of the event loop (and at least once a second): publish this worker's
        count and stop listening when another worker holds fewer connections."""
        super().notify()
        if self._accepting:
            self.set_accept_enabled(self.nr_conns < self.worker_connections)

    def handle_exit(self, sig: Any, frame: Any) -> None:
        if self.board is not None and self.seat is not None:
            self.board.release(self.seat)
            self.seat = None
        super().handle_exit(sig, frame)
