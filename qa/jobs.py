"""Background rebuild jobs: a small registry that runs one task at a time in a thread.

Owns job ids, states (queued -> running -> succeeded | failed), progress, results and timestamps.
When given a ``state_dir``, each job is also written there as ``<id>.json`` (atomically), so every
worker process of a server can report a job started by another one. A job is claimed by an
exclusive ``flock`` on ``state_dir/.claim``, held while it runs: the kernel releases it when the
process dies, so at most one rebuild runs at a time anywhere, and a job file left "running" by a
killed process (whose pid may be reused) is reported as interrupted and blocks nothing. Knows
nothing of Flask or of how an index is built.
"""

from __future__ import annotations

import contextlib
import fcntl
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
CLAIM_FILE = ".claim"
# A claim attempt retries this long: another worker probing the claim (``get``) holds it for
# microseconds, and that must not look like a running rebuild.
CLAIM_WAIT_SECONDS = 0.5
INTERRUPTED = "interrupted: the process running it ended"


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
            for job in self._jobs.values():
                if job.state in ACTIVE:
                    raise JobRunningError(f"rebuild job {job.id} is still {job.state}")
            claim = self._claim()
            try:
                self._mark_interrupted()
                job = Job(id=uuid.uuid4().hex, full=full, created=time.time(), pid=os.getpid())
                self._jobs[job.id] = job
                while len(self._jobs) > self.keep:
                    self._jobs.popitem(last=False)
                self._save(job)
                thread = threading.Thread(target=self._run, args=(job, task, claim),
                                          name=f"job-{job.id[:8]}", daemon=True)
                thread.start()
            except BaseException:
                _release(claim)
                raise
        return job

    def get(self, job_id: str) -> Job | None:
        """The job with this id, from memory or from ``state_dir`` (None when unknown). A job
        recorded as active while nobody holds the claim is reported as interrupted."""
        if not _JOB_ID.match(job_id):
            return None
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                return Job(**asdict(job))
        found = self._load(job_id)
        if found is not None and found.state in ACTIVE and not self._claimed():
            found.state, found.error = "failed", INTERRUPTED
        return found

    # -- the claim ---------------------------------------------------------------------------
    def _claim(self) -> int | None:
        """Take the exclusive claim (None without a ``state_dir``: this process only), or raise
        JobRunningError naming the job that holds it."""
        if self.state_dir is None:
            return None
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.state_dir / CLAIM_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise JobRunningError(f"cannot claim a rebuild in {self.state_dir.name}/: "
                                  f"{e.strerror or e}") from e
        deadline = time.monotonic() + CLAIM_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    running = self._recorded_active()
                    raise JobRunningError(
                        f"rebuild job {running.id} is still {running.state}" if running
                        else "another rebuild is running") from None
                time.sleep(0.01)

    def _claimed(self) -> bool:
        """Whether some process holds the claim now (a shared lock is refused while it does)."""
        if self.state_dir is None:
            return False
        try:
            fd = os.open(self.state_dir / CLAIM_FILE, os.O_RDONLY)
        except FileNotFoundError:
            return False
        except OSError:
            return True  # cannot tell: do not call a job interrupted
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def _recorded_active(self) -> Job | None:
        if self.state_dir is None or not self.state_dir.is_dir():
            return None
        for path in self.state_dir.glob("*.json"):
            other = self._load(path.stem)
            if other is not None and other.state in ACTIVE:
                return other
        return None

    def _mark_interrupted(self) -> None:
        """With the claim held, any job still recorded as active was left by a dead process."""
        while (stale := self._recorded_active()) is not None:
            stale.state, stale.error, stale.finished = "failed", INTERRUPTED, time.time()
            log.warning("rebuild job %s was interrupted (its process ended)", stale.id)
            if not self._save(stale):
                break

    def _run(self, job: Job, task: Task, claim: int | None = None) -> None:
        try:
            self._work(job, task)
        finally:
            _release(claim)  # after the final state is recorded

    def _work(self, job: Job, task: Task) -> None:
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

    def _save(self, job: Job) -> bool:
        if self.state_dir is None:
            return False
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
            return False
        return True

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


def _release(claim: int | None) -> None:
    if claim is not None:
        with contextlib.suppress(OSError):
            os.close(claim)  # closing the descriptor drops the lock
