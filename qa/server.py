"""Production serving: gunicorn started programmatically for ``qa serve``.

Owns the gunicorn configuration: threaded workers that share kept-alive connections evenly
(``qa.worker_balance``), each building its own app (and so loading its own model and index) after
the fork, and a Server header that names no version. Each worker picks
up newly published index versions by itself through QAService. Also the count of requests in
flight across the workers (made in the master, before the fork), by which the query encoder
chooses its threads.
"""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from qa import metrics_dir
from qa.config import Settings
from qa.onnx_sessions import LoadGauge
from qa.worker_balance import ConnectionBoard

log = logging.getLogger(__name__)

SERVER_NAME = "qa"


def hide_server_version() -> None:
    """Make gunicorn send ``Server: qa`` and ``SERVER_SOFTWARE=qa`` instead of its name/version."""
    import gunicorn
    import gunicorn.http.wsgi

    for module in (gunicorn, gunicorn.http.wsgi):
        module.SERVER = SERVER_NAME
        module.SERVER_SOFTWARE = SERVER_NAME


def gunicorn_options(host: str, port: int, workers: int, threads: int = 4,
                     access_log: bool = False) -> dict[str, Any]:
    return {
        "bind": f"{host}:{port}",
        "workers": max(1, workers),
        # gunicorn's gthread worker, listening only while it holds the fewest connections
        # (qa.worker_balance): kept-alive clients are spread evenly over the workers.
        "worker_class": "qa.worker_balance.BalancedThreadWorker",
        "threads": threads,
        "timeout": 60,
        "graceful_timeout": 30,
        "keepalive": 5,
        "preload_app": False,  # the factory runs in each worker, after the fork
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "qa-serve",
        "limit_request_line": 8190,
        # gunicorn >= 25 opens a runtime control socket in $HOME; qa serve does not use it and
        # two servers on one machine would share its path. Unknown keys are skipped on older ones.
        "control_socket_disable": True,
    }


class CountRequests:
    """WSGI middleware: each request counts in ``gauge`` while the app handles it."""

    def __init__(self, app: Any, gauge: LoadGauge) -> None:
        self.app = app
        self.gauge = gauge

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        with self.gauge.request():
            return self.app(environ, start_response)


class QAApplication(BaseApplication):
    """A gunicorn application whose workers each call ``create_app(settings)``."""

    def __init__(self, settings: Settings, options: dict[str, Any],
                 metrics_path: Path | None = None) -> None:
        self.settings = settings
        self.options = options
        self.metrics_path = metrics_path
        # In shared memory, made before gunicorn forks: every worker sees every worker's load.
        self.gauge = LoadGauge(shared=True)
        # Read by each BalancedThreadWorker; seats to spare for workers added by TTIN.
        self.connection_board = ConnectionBoard(seats=2 * int(options.get("workers") or 1) + 2)
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self) -> Any:
        from threadpoolctl import threadpool_limits

        from qa.service import QAService
        from qa.web import create_app

        app = create_app(self.settings, QAService(self.settings, gauge=self.gauge),
                         metrics_dir=self.metrics_path)
        app.wsgi_app = CountRequests(app.wsgi_app, self.gauge)  # type: ignore[method-assign]
        # One request is served by one thread. A BLAS that spreads each matrix product (late
        # interaction's) over every core makes concurrent requests wait on each other's threads:
        # measured 38 answers/s at 4 clients instead of 111. FAISS's OpenMP pool likewise: its
        # threads spin after every search, taking the other core. Set after the app has loaded
        # its libraries, so that every BLAS and OpenMP runtime in the process is limited.
        threadpool_limits(limits=1)
        freeze_loaded_objects()
        return app


def freeze_loaded_objects() -> None:
    """Move every object alive now (the model, the index, the app: they live as long as the
    worker) out of the garbage collector's view. A full collection otherwise walked them all
    once in the first few dozen requests: about 20 ms added to one answer (measured in-process,
    one in each of three fresh services; none after freezing)."""
    gc.collect()
    gc.freeze()


def run_gunicorn(settings: Settings, host: str = "127.0.0.1", port: int = 8000,
                 workers: int = 2, threads: int = 4, access_log: bool = False) -> None:
    """Serve until interrupted (blocks)."""
    hide_server_version()
    log.info("serving on http://%s:%d with %d workers", host, port, workers)
    # Every worker's metrics go to files in one directory per run, so that a scrape answered
    # by any worker counts them all.
    metrics_path = metrics_dir.prepare()
    options = {**gunicorn_options(host, port, workers, threads, access_log),
               **metrics_dir.gunicorn_hooks(metrics_path)}
    master = os.getpid()
    try:
        QAApplication(settings, options, metrics_path).run()
    finally:
        # A worker leaves run() through this frame too (gunicorn forks inside it): only the
        # master removes the directory.
        if os.getpid() == master:
            metrics_dir.remove(metrics_path)
