"""Kept-alive connections spread evenly over gunicorn's workers (qa.worker_balance)."""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import served_tiny_env, serving

from qa.config import Settings
from qa.worker_balance import ConnectionBoard


def _exited_pid() -> int:
    """The pid of a child that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


def test_the_least_loaded_worker_listens_and_others_wait() -> None:
    board = ConnectionBoard(seats=3)
    me, other = board.claim(os.getpid()), board.claim(os.getppid())
    assert me is not None and other is not None and me != other
    board.publish(me, 2)
    board.publish(other, 1)
    assert not board.least_loaded(me)
    assert board.least_loaded(other)
    board.publish(other, 2)
    assert board.least_loaded(me) and board.least_loaded(other)  # ties: both listen
    board.publish(other, 5)
    board.publish(me, 0)
    assert board.least_loaded(me)


def test_a_worker_without_connections_always_listens() -> None:
    board = ConnectionBoard(seats=2)
    me, other = board.claim(os.getpid()), board.claim(os.getppid())
    assert me is not None and other is not None
    board.publish(other, 0)
    board.publish(me, 0)
    assert board.least_loaded(me)


def test_a_dead_workers_seat_counts_for_nothing_and_is_claimed_again() -> None:
    board = ConnectionBoard(seats=2)
    me = board.claim(os.getpid())
    dead = board.claim(_exited_pid())
    assert me is not None and dead is not None
    board.publish(dead, 0)
    board.publish(me, 3)
    assert board.least_loaded(me), "a worker that died with no connection must not hold back the rest"
    assert set(board.counts()) == {me}
    assert board.claim(os.getppid()) == dead


def test_a_count_not_published_lately_is_not_believed() -> None:
    board = ConnectionBoard(seats=2, stale_after=0.2)
    me, stalled = board.claim(os.getpid()), board.claim(os.getppid())
    assert me is not None and stalled is not None
    board.publish(stalled, 0)
    board.publish(me, 3)
    assert not board.least_loaded(me)
    time.sleep(0.3)  # the other worker's loop publishes nothing meanwhile
    board.publish(me, 3)
    assert board.least_loaded(me), "a worker whose loop has stalled must not hold back the rest"
    board.publish(stalled, 0)
    assert not board.least_loaded(me)


def test_more_workers_than_seats_get_none_and_a_released_seat_is_free() -> None:
    board = ConnectionBoard(seats=1)
    seat = board.claim(os.getpid())
    assert seat == 0
    assert board.claim(os.getppid()) is None
    board.release(seat)
    assert board.counts() == {}
    assert board.claim(os.getppid()) == 0


def _established_by_process(pids: list[int], port: int) -> dict[int, int]:
    """How many established TCP connections to ``port`` each process holds (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
                inodes.add(fields[9])
    held = {}
    for pid in pids:
        count = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                count += 1
        held[pid] = count
    return held


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc (Linux)")
def test_four_kept_alive_clients_are_held_two_by_each_of_two_workers(
        built_tiny: Settings, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with serving("--workers", "2", "--no-build", log=log,
                 env=served_tiny_env(built_tiny)) as (port, proc):
        workers = _loaded_workers(proc, port)
        assert len(workers) == 2, (f"two workers did not come up (exit status {proc.poll()}); "
                                   f"its log:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.ExitStack() as open_connections:
            for _ in range(4):  # one after another, each kept open after its answer
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                open_connections.callback(conn.close)
                conn.request("GET", "/api/v1/documents")
                response = conn.getresponse()
                response.read()
                assert response.status == 200
                assert response.getheader("connection", "").lower() != "close"
            held: dict[int, int] = {}
            for _ in range(20):  # /proc may lag the accepts by a moment
                held = _established_by_process(workers, port)
                if sorted(held.values()) == [2, 2]:
                    break
                time.sleep(0.1)
        assert sorted(held.values()) == [2, 2], held


def _loaded_workers(proc: subprocess.Popen[bytes], port: int) -> list[int]:
    """The pids of the server's two workers once both run their event loops (their app loaded)
    and it answers; fewer when that does not happen within two minutes."""
    deadline = time.monotonic() + 120
    looping: set[int] = set()  # workers seen waiting in their event loop
    while time.monotonic() < deadline and proc.poll() is None:
        found = [int(pid) for pid in subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True,
            check=False).stdout.split()]
        looping |= {pid for pid in found if _waiting_for_events(pid)}
        if len(found) == 2 and looping >= set(found) and _ready(port):
            return found
        time.sleep(0.05)
    return []


def _waiting_for_events(pid: int) -> bool:
    """Whether the process sleeps in epoll (a gunicorn worker that has loaded its app and runs
    its event loop; until then another worker must not wait for its count)."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text() in ("do_epoll_wait", "ep_poll")
    except OSError:
        return False


def _ready(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/readyz")
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except OSError:
        return False
    finally:
        conn.close()
