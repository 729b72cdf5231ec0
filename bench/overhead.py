"""What the web layer adds to every request, in-process, without the model: the time of
``GET /healthz`` through Flask's test client (routing, hooks, headers, and since issue #18 the
request id, the request log line and the metrics), over an app whose index is not built.

Run it on two checkouts to compare them (``PYTHONPATH=other/checkout python bench/overhead.py``).

    python bench/overhead.py --requests 5000
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()

    import qa
    from qa.config import Settings
    from qa.service import QAService
    from qa.web import create_app

    logging.disable(logging.WARNING)  # "serving without an index" is expected here
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.load({"corpus_dir": Path(tmp) / "corpus",
                                  "index_dir": Path(tmp) / "index"}, environ={})
        app = create_app(settings, QAService(settings))
        logging.disable(logging.NOTSET)
        # The request log goes where a server's would; here nowhere, as under `qa serve` with
        # stderr sent to /dev/null by bench/latency.py.
        for name in ("qa.requests",):
            for handler in logging.getLogger(name).handlers:
                handler.setStream(open("/dev/null", "w"))  # type: ignore[attr-defined]  # noqa: SIM115
        client = app.test_client()
        for _ in range(200):  # warm up
            client.get("/healthz")
        times = []
        for _ in range(args.requests):
            started = time.perf_counter()
            client.get("/healthz")
            times.append((time.perf_counter() - started) * 1e6)
    times.sort()
    print(f"{machine()}; {Path(qa.__file__).parent}")
    print(f"GET /healthz x {args.requests}: p50 {statistics.median(times):.0f} us, "
          f"p90 {times[int(len(times) * 0.9)]:.0f} us, mean {statistics.fmean(times):.0f} us")


if __name__ == "__main__":
    main()
