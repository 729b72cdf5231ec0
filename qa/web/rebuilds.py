"""Starting a background rebuild, for the admin API and the admin page alike: the job runs
``QAService.index`` and its outcome and duration are counted in the metrics."""

from __future__ import annotations

import time
from typing import Any

from qa.jobs import Job
from qa.web.state import WebState


def start_rebuild(state: WebState, full: bool) -> Job:
    """Start a rebuild job (JobRunningError, 409, while another one runs anywhere)."""
    service, metrics = state.service, state.metrics

    def rebuild(progress: Any) -> dict[str, Any]:
        started = time.monotonic()
        try:
            result = service.index(full=full, progress=progress).to_dict()
        except Exception:
            metrics.observe_rebuild("failed", time.monotonic() - started)
            raise
        metrics.observe_rebuild("succeeded", time.monotonic() - started)
        return result

    return state.jobs.start(rebuild, full=full)
