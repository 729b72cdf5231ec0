"""Security of what the server sends: headers, no version banner from gunicorn."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROJECT, free_port, stop_server

from qa.config import Settings


@pytest.mark.slow
def test_gunicorn_sends_security_headers_and_no_version(built_tiny: Settings,
                                                        tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "QA_ENCODER": "torch",
           "QA_INDEX_DIR": str(built_tiny.index_dir), "QA_CORPUS_DIR": str(built_tiny.corpus_dir)}
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qa.cli", "serve", "--workers", "1", "--no-build", "--host",
             "127.0.0.1", "--port", str(port)], env=env, cwd=PROJECT, start_new_session=True,
            stdout=out, stderr=subprocess.STDOUT)
    try:
        headers: dict[str, str] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/api/v1/documents")
                response = conn.getresponse()
                response.read()
                headers = {k.lower(): v for k, v in response.getheaders()}
                if response.status == 200:
                    break
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.3)
        assert headers, (f"server did not answer (exit status {proc.poll()}); its log:\n"
                         f"{log.read_text(errors='replace')[-3000:]}")
        server = headers.get("server", "")
        assert "gunicorn" not in server.lower()
        assert not any(ch.isdigit() for ch in server)
        csp = headers["content-security-policy"]
        assert "script-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert headers["x-content-type-options"] == "nosniff"
    finally:
        stop_server(proc, grace=20)
