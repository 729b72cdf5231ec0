"""Security of what the server sends: headers, no version banner from gunicorn."""

from __future__ import annotations

import http.client
import time
from pathlib import Path

import pytest
from conftest import served_tiny_env, serving

from qa.config import Settings


@pytest.mark.slow
def test_gunicorn_sends_security_headers_and_no_version(built_tiny: Settings,
                                                        tmp_path: Path) -> None:
    with serving("--workers", "1", "--no-build", log=tmp_path / "server.log",
                 env=served_tiny_env(built_tiny)) as (port, proc):
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
                         f"{(tmp_path / 'server.log').read_text(errors='replace')[-3000:]}")
        server = headers.get("server", "")
        assert "gunicorn" not in server.lower()
        assert not any(ch.isdigit() for ch in server)
        csp = headers["content-security-policy"]
        assert "script-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert headers["x-content-type-options"] == "nosniff"
