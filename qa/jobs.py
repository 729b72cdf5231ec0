"""Background rebuild jobs: a small registry that runs one task at a time in a thread.

Owns job ids, states (queued -> running -> succeeded | failed), progress, results and timestamps.
When given a ``state_dir``, each job is also written there as ``<id>.json`` (atomically), so every
worker process of a server can report a job started by another one and refuse a second rebuild
while one is running anywhere. Knows nothing of Flask or of how an index is built.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qa.errors import QAError, redact_paths

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
Task = Callable[[Progress], dict[str, Any]]

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
ACTIVE = ("queued", "running")


class JobRunningError(QAError):
    """A rebuild is already running; only one runs at a time."""

    code = "job_running"
    http_status = 409


@dataclass
class Job:
    id: str
    full: bool
    state: str = "queued"
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    pid: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["pid"]
        return data


class JobRegistry:
    def __init__(self, state_dir: Path | None = None, keep: int = 20) -> None:
        self.state_dir = state_dir
        self.keep = keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.RLock()  # re-entered when start() records the new job

    def start(self, task: Task, full: bool = False) -> Job:
        """Run ``task(progress)`` in a daemon thread; raises JobRunningError if one is active."""
        with self._lock:
            running = self._active_job()
            if running is not None:
                raise JobRunningError(f"rebuild job {running.id} is still {running.state}")
            job = Job(id=uuid.uuid4().hex, full=full, created=time.time(), pid=os.getpid())
            self._jobs[job.id] = job
            while len(self._jobs) > self.keep:
                self._jobs.popitem(last=False)
            self._save(job)
        thread = threading.Thread(target=self._run, args=(job, task), name=f"job-{job.id[:8]}",
                                  daemon=True)
        thread.start()
        return job

    def get(self, job_id: str) -> Job | None:
        """The job with this id, from memory or from ``state_dir`` (None when unknown)."""
        if not _JOB_ID.match(job_id):
            return None
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                return Job(**asdict(job))
        return self._load(job_id)

    def _run(self, job: Job, task: Task) -> None:
        last_saved = 0.0

        def progress(stage: str, done: int, total: int) -> None:
            nonlocal last_saved
            with self._lock:
                job.progress = {"stage": stage, "done": int(done), "total": int(total)}
            now = time.monotonic()
            if now - last_saved > 0.5:
                last_saved = now
                self._save(job)

        with self._lock:
            job.state, job.started = "running", time.time()
        self._save(job)
        try:
            result = task(progress)
        except Exception as e:  # a job reports every failure rather than dying silently
            log.exception("rebuild job %s failed", job.id)
            with self._lock:
                # Read over the admin API: what went wrong, without the server's paths.
                job.state, job.error = "failed", redact_paths(str(e)) or type(e).__name__
                job.finished = time.time()
        else:
            with self._lock:
                job.state, job.result, job.finished = "succeeded", result, time.time()
        self._save(job)

    def _active_job(self) -> Job | None:
        for job in self._jobs.values():
            if job.state in ACTIVE:
                return job
        if self.state_dir is None or not self.state_dir.is_dir():
            return None
        for path in self.state_dir.glob("*.json"):
            other = self._load(path.stem)
            if other is not None and other.state in ACTIVE and _alive(other.pid):
                return other
        return None

    def _save(self, job: Job) -> None:
        if self.state_dir is None:
            return
        with self._lock:
            data = json.dumps(asdict(job))
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.state_dir / f".{job.id}.{threading.get_ident()}.tmp"
            tmp.write_text(data)
            os.replace(tmp, self.state_dir / f"{job.id}.json")
            self._prune()
        except OSError as e:
            log.warning("cannot record job %s in %s: %s", job.id, self.state_dir, e)

    def _prune(self) -> None:
        assert self.state_dir is not None
        files = sorted(self.state_dir.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for path in files[:-self.keep]:
            path.unlink(missing_ok=True)

    def _load(self, job_id: str) -> Job | None:
        if self.state_dir is None or not _JOB_ID.match(job_id):
            return None
        try:
            return Job(**json.loads((self.state_dir / f"{job_id}.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
