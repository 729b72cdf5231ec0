"""The rate limit holds: every route that runs a question counts (GET /?q= too), every worker
of a server sees the same counts (a SQLite file by default, Redis when configured, tested against
a real redis-server), and X-Forwarded-For names the client only behind a trusted proxy."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from flask import Flask

from qa.config import Settings
from qa.errors import ConfigError, IndexWriteError
from qa.service import QAService
from qa.web import create_app

JWC = "How many members does the Joint Water Commission have?"


def _settings(service: QAService, tmp_path: Path, **extra: Any) -> Settings:
    # Counts live next to the index by default: each test gets its own index directory (a
    # copy of the session's built one) so that counts never leak between tests.
    index = tmp_path / "index"
    shutil.copytree(service.settings.index_dir, index,
                    ignore=shutil.ignore_patterns("ratelimit.sqlite*", "leases", ".lock"))
    return service.settings.replace(index_dir=index, **extra)


def _app(settings: Settings, service: QAService) -> Flask:
    return create_app(settings, QAService(settings, embedder=service.embedder))


def _ask(client: Any, **environ: str) -> int:
    response = client.post("/api/v1/answer", json={"question": JWC},
                           environ_base=environ)
    return int(response.status_code)


def test_the_question_page_is_limited_like_the_api(tiny_service: QAService,
                                                   tmp_path: Path) -> None:
    settings = _settings(tiny_service, tmp_path, rate_limit=2)
    client = _app(settings, tiny_service).test_client()
    assert client.get("/", query_string={"q": JWC}).status_code == 200
    assert client.get("/", query_string={"q": JWC}).status_code == 200
    page = client.get("/", query_string={"q": JWC})
    assert page.status_code == 429
    assert int(page.headers["Retry-After"]) >= 1
    assert "too many requests" in page.get_data(as_text=True)
    # the API shares the same count; the form without a question and other pages do not count
    assert _ask(client) == 429
    assert client.get("/").status_code == 200
    assert client.get("/documents").status_code == 200


def test_every_worker_sees_the_same_counts(tiny_service: QAService, tmp_path: Path) -> None:
    settings = _settings(tiny_service, tmp_path, rate_limit=3)
    workers = [_app(settings, tiny_service).test_client() for _ in range(3)]
    assert [_ask(worker) for worker in workers] == [200, 200, 200]
    assert [_ask(worker) for worker in workers] == [429, 429, 429]
    assert _ask(workers[0], REMOTE_ADDR="10.0.0.7") == 200  # another client has its own


def test_forwarded_for_counts_only_behind_a_trusted_proxy(tiny_service: QAService,
                                                          tmp_path: Path) -> None:
    untrusted = _app(_settings(tiny_service, tmp_path / "a", rate_limit=1),
                     tiny_service).test_client()
    assert _ask(untrusted, HTTP_X_FORWARDED_FOR="198.51.100.1") == 200
    # a client cannot get a fresh count by naming another address itself
    assert _ask(untrusted, HTTP_X_FORWARDED_FOR="198.51.100.2") == 429

    proxied = _app(_settings(tiny_service, tmp_path / "b", rate_limit=1,
                             trusted_proxies="127.0.0.1"), tiny_service).test_client()
    # behind the proxy (REMOTE_ADDR 127.0.0.1), clients are told apart by the header
    assert _ask(proxied, HTTP_X_FORWARDED_FOR="198.51.100.1") == 200
    assert _ask(proxied, HTTP_X_FORWARDED_FOR="198.51.100.2") == 200
    assert _ask(proxied, HTTP_X_FORWARDED_FOR="198.51.100.1") == 429
    # a client prepending a forged entry is still counted as itself
    assert _ask(proxied, HTTP_X_FORWARDED_FOR="203.0.113.9, 198.51.100.2") == 429


def test_bad_proxy_and_storage_settings_are_refused(tiny_service: QAService) -> None:
    with pytest.raises(ConfigError, match="trusted_proxies"):
        tiny_service.settings.replace(trusted_proxies="10.0.0.0/8, proxy.example")
    with pytest.raises(ConfigError, match="rate_limit_storage"):
        tiny_service.settings.replace(rate_limit_storage="mysql://db/limits")


# -- a real Redis ------------------------------------------------------------------------------
@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A redis-server of its own on 127.0.0.1 (no persistence), stopped after the test."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; `make test` "
                    "installs it when run as root)")
    import redis

    port = free_port()
    with subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no", "--dir", str(tmp_path)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as server:
        try:
            client = redis.Redis(host="127.0.0.1", port=port)
            deadline = time.monotonic() + 20
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    assert time.monotonic() < deadline, "redis-server did not start"
                    time.sleep(0.05)
            client.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait(timeout=30)


def test_counts_are_shared_through_a_real_redis(tiny_service: QAService, tmp_path: Path,
                                                redis_url: str) -> None:
    import redis

    workers = [_app(_settings(tiny_service, tmp_path / f"worker-{n}", rate_limit=2,
                              rate_limit_storage=redis_url), tiny_service).test_client()
               for n in range(2)]  # separate index directories: only Redis is shared
    assert [_ask(workers[0]), _ask(workers[1])] == [200, 200]
    assert [_ask(workers[0]), _ask(workers[1])] == [429, 429]
    with redis.Redis.from_url(redis_url) as client:
        assert [k for k in client.keys("*") if b"127.0.0.1" in k]  # the counts are in Redis
    assert not (tmp_path / "worker-0" / "index" / "ratelimit.sqlite").exists()


def test_an_unwritable_counts_file_is_refused_with_what_to_do(tiny_service: QAService,
                                                              tmp_path: Path) -> None:
    settings = _settings(tiny_service, tmp_path, rate_limit=5)
    (settings.index_dir / "ratelimit.sqlite").mkdir()  # in the way of the counts file
    with pytest.raises(IndexWriteError, match="QA_RATE_LIMIT_STORAGE"):
        _app(settings, tiny_service)
