"""Rebuild jobs are claimed through a lock the kernel releases when its process dies: a job file
left "running" never blocks a rebuild, and at most one rebuild runs at a time anywhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from qa.jobs import Job, JobRegistry, JobRunningError


def _wait(jobs: JobRegistry, job_id: str, state: str) -> Job:
    deadline = time.monotonic() + 30
    while True:
        job = jobs.get(job_id)
        assert job is not None
        if job.state == state:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.01)


def test_a_job_left_running_does_not_block_a_rebuild_when_its_pid_is_reused(
        tmp_path: Path) -> None:
    state_dir = tmp_path / "jobs"
    state_dir.mkdir()
    left = Job(id=uuid.uuid4().hex, full=False, state="running", created=time.time(),
               started=time.time(), pid=os.getpid())  # a pid that is alive: reused
    (state_dir / f"{left.id}.json").write_text(json.dumps(left.__dict__))
    jobs = JobRegistry(state_dir)
    job = jobs.start(lambda progress: {"ok": True})
    assert _wait(jobs, job.id, "succeeded").result == {"ok": True}
    stale = jobs.get(left.id)
    assert stale is not None and stale.state == "failed"
    assert stale.error is not None and "interrupted" in stale.error


def _claim(registry: JobRegistry, task: Any, barrier: threading.Barrier, started: list[Job],
           refused: list[JobRunningError]) -> None:
    barrier.wait()
    try:
        started.append(registry.start(task))
    except JobRunningError as e:
        refused.append(e)


def test_two_workers_never_start_two_rebuilds(tmp_path: Path) -> None:
    release = threading.Event()

    def task(progress: Any) -> dict[str, Any]:
        release.wait(30)
        return {}

    for _ in range(10):
        workers = [JobRegistry(tmp_path / "jobs") for _ in range(2)]
        barrier = threading.Barrier(2)
        started: list[Job] = []
        refused: list[JobRunningError] = []

        threads = [threading.Thread(target=_claim, args=(w, task, barrier, started, refused))
                   for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(started) == 1 and len(refused) == 1
        release.set()
        owner = next(w for w in workers if w.get(started[0].id) is not None)
        _wait(owner, started[0].id, "succeeded")
        release.clear()


WORKER = """
import sys, threading
from pathlib import Path
from qa.jobs import JobRegistry
jobs = JobRegistry(Path(sys.argv[1]))
job = jobs.start(lambda progress: threading.Event().wait(120) or {})
print(job.id, flush=True)
threading.Event().wait(120)
"""


def test_a_killed_worker_releases_its_claim(tmp_path: Path) -> None:
    state_dir = tmp_path / "jobs"
    with subprocess.Popen([sys.executable, "-c", WORKER, str(state_dir)],
                          stdout=subprocess.PIPE, text=True) as worker:
        try:
            assert worker.stdout is not None
            job_id = worker.stdout.readline().strip()
            jobs = JobRegistry(state_dir)
            with pytest.raises(JobRunningError, match=job_id):
                jobs.start(lambda progress: {})
            running = jobs.get(job_id)
            assert running is not None and running.state in ("queued", "running")
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)
    killed = jobs.get(job_id)
    assert killed is not None and killed.state == "failed"
    job = jobs.start(lambda progress: {"ok": True})
    assert _wait(jobs, job.id, "succeeded").result == {"ok": True}
