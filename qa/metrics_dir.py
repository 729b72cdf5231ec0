"""The directory where the gunicorn workers of ``qa serve`` keep their Prometheus metrics
(prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``).

Owned by the serving master: a fresh directory per server run under the system's temp folder,
made before any worker starts (and before prometheus_client is imported, which reads the
variable once); directories left by earlier runs whose master is gone are removed on start; a
worker that exits is marked dead, so that its live gauges drop out of the scrape while its
counters still count; the directory is removed when the server stops. Imports
prometheus_client only inside the worker-exit hook.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "qa-metrics-"
VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(base: Path) -> list[Path]:
    """Remove the metrics directories of earlier runs whose master process has ended."""
    removed = []
    for path in base.glob(f"{PREFIX}*"):
        pid_text = path.name[len(PREFIX):].split("-", 1)[0]
        if path.is_dir() and pid_text.isdigit() and not process_alive(int(pid_text)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def prepare(base: Path | None = None) -> Path:
    """Make this run's directory and point prometheus_client at it (for the master and the
    workers it forks)."""
    base = Path(tempfile.gettempdir()) if base is None else base
    remove_stale(base)
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=base))
    os.environ[VARIABLE] = str(path)
    return path


def worker_exited(path: Path, pid: int) -> None:
    """gunicorn's ``child_exit``: the worker's live gauges no longer count."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(path))


def remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(path)


def gunicorn_hooks(path: Path) -> dict[str, Any]:
    """The gunicorn settings that tie the directory's life to the server's."""

    def child_exit(server: Any, worker: Any) -> None:
        worker_exited(path, worker.pid)

    master = os.getpid()

    def on_exit(server: Any) -> None:
        if os.getpid() == master:
            remove(path)

    return {"child_exit": child_exit, "on_exit": on_exit}
