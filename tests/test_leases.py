"""Leases on builds: a build a serving process holds is never deleted, and a released snapshot
closes every thread's SQLite connection."""

from __future__ import annotations

import gc
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qa import store
from qa.config import Settings
from qa.embedding import Embedder
from qa.errors import IndexCorruptError
from qa.service import QAService

NEW_DOC = ("The Zonal Trade Agreement\n\nThe Zonal Trade Agreement (ZTA) was signed in Tashkent "
           "in 2034. It lowers tariffs on cotton and grain between the five signatories.\n")


def test_a_released_snapshot_closes_every_threads_connection(built_tiny: Settings) -> None:
    reader = store.open_current(built_tiny.index_dir)
    connections: list[sqlite3.Connection] = []

    def open_one() -> None:
        connections.append(reader.db)

    threads = [threading.Thread(target=open_one) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    open_one()
    assert len({id(c) for c in connections}) == 4
    reader.close()
    for conn in connections:
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")


def test_the_service_closes_the_snapshot_it_switched_away_from(tiny_settings: Settings,
                                                               embedder: Embedder) -> None:
    service = QAService(tiny_settings.replace(reload_interval=0.05), embedder=embedder)
    service.index()
    old = service.reader()
    connections: list[sqlite3.Connection] = []
    worker = threading.Thread(target=lambda: connections.append(service.reader().db))
    worker.start()
    worker.join()
    connections.append(old.db)
    del old
    (tiny_settings.corpus_dir / "zonal-trade.txt").write_text(NEW_DOC)
    second = service.index().version
    time.sleep(0.1)
    assert service.reader().version == second
    gc.collect()
    for conn in connections:
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")


def _builds(settings: Settings) -> list[str]:
    return sorted(p.name for p in store.Layout(settings.index_dir).builds.iterdir()
                  if not p.name.startswith("."))


def test_a_build_still_served_is_never_deleted(tiny_settings: Settings,
                                               embedder: Embedder) -> None:
    # A server with a long reload interval keeps serving the first build while four more are
    # published and cleaned up after (more than the newest builds kept by count).
    server = QAService(tiny_settings.replace(reload_interval=3600), embedder=embedder)
    server.index()
    served = server.reader().version
    builder = QAService(tiny_settings, embedder=embedder)
    for n in range(store.KEEP_BUILDS + 1):
        (tiny_settings.corpus_dir / f"extra-{n}.txt").write_text(f"{NEW_DOC}\nEdition {n}.\n")
        builder.index()
    assert served in _builds(tiny_settings)
    assert len(_builds(tiny_settings)) == store.KEEP_BUILDS + 1  # the newest ones and the leased

    # A thread that opens its first connection to the old build now still gets answers.
    serving = {"server": server}
    del server
    answers: list[dict[str, object]] = []
    worker = threading.Thread(target=lambda: answers.append(serving["server"].ask(
        "How many members does the Joint Water Commission have?", use_cache=False)))
    worker.start()
    worker.join(timeout=120)
    assert answers and answers[0]["index_version"] == served

    # Once the server lets go of it, the next cleanup removes it.
    serving.clear()
    gc.collect()
    (tiny_settings.corpus_dir / "extra-last.txt").write_text(NEW_DOC)
    builder.index()
    assert served not in _builds(tiny_settings)
    assert len(_builds(tiny_settings)) == store.KEEP_BUILDS


HOLDER = """
import sys, time
from pathlib import Path
from qa import store
layout = store.Layout(Path(sys.argv[1]))
lease = store.Lease(layout, sys.argv[2])
print("holding", flush=True)
time.sleep(120)
"""


def test_a_lease_dies_with_its_process(tmp_path: Path) -> None:
    layout = store.Layout(tmp_path)
    names = [f"2030010{n}T000000-aaaaaa" for n in range(1, 5)]
    for name in names:
        (layout.builds / name).mkdir(parents=True)
    store.publish(layout, names[-1])
    with subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), names[0]],
                          stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
            assert sorted(store.clean_leftovers(layout, keep=1)) == names[1:3]
            assert [p.name for p in sorted(layout.builds.iterdir())] == [names[0], names[3]]
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=30)
    assert store.clean_leftovers(layout, keep=1) == [names[0]]
    assert [p.name for p in layout.builds.iterdir()] == [names[3]]
    assert not (layout.leases / names[0]).exists()


def test_a_leased_build_removed_before_the_lease_is_reported_missing(tmp_path: Path) -> None:
    layout = store.Layout(tmp_path)
    layout.builds.mkdir(parents=True)
    with pytest.raises(IndexCorruptError, match="missing"):
        store.open_leased(layout, "20300101T000000-aaaaaa")
    # the failed open left no lease behind: cleanup can take the lock
    assert store.clean_leftovers(layout) == []


def test_a_read_only_index_is_served_without_a_lease(built_tiny: Settings, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(self: store.Lease, layout: store.Layout, version: str) -> None:
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(store.Lease, "__init__", refused)
    layout = store.Layout(built_tiny.index_dir)
    version = layout.current_version()
    assert version is not None
    reader = store.open_leased(layout, version)
    try:
        assert reader.version == version and reader.documents()
    finally:
        reader.close()
