"""Per-client rate limiting of every route that runs a question, with Flask-Limiter.

Owns the limiter's configuration: which requests count (the JSON API and the question page
``GET /?q=``), who the client is (the connection's address, or the address a trusted reverse
proxy reports in ``X-Forwarded-For``), and where the counts live: a storage every worker process
sees, Redis when ``rate_limit_storage`` names one, else a SQLite file in the index directory
(``store.RateCounters``). The web layer turns a refusal into its one error shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from flask import Flask, request
from flask_limiter import Limiter
from limits.storage import Storage

from qa import store
from qa.config import Settings
from qa.proxies import client_address, trusted_networks

log = logging.getLogger(__name__)

SQLITE_SCHEME = "qa+sqlite"
COUNTS_FILE = "ratelimit.sqlite"

class SharedFileStorage(Storage):
    """A ``limits`` storage over ``store.RateCounters``: ``qa+sqlite:///path/to/file``."""

    STORAGE_SCHEME = [SQLITE_SCHEME]  # noqa: RUF012 (the name limits' registry reads)

    def __init__(self, uri: str, wrap_exceptions: bool = False, **options: Any) -> None:
        self.counters = store.RateCounters(Path(unquote(urlparse(uri).path)))
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return store.RateCounters.ERRORS

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self.counters.incr(key, expiry, amount)

    def get(self, key: str) -> int:
        return self.counters.get(key)

    def get_expiry(self, key: str) -> float:
        return self.counters.expiry(key)

    def check(self) -> bool:
        return self.counters.check()

    def reset(self) -> int | None:
        return self.counters.reset()

    def clear(self, key: str) -> None:
        self.counters.clear(key)


def storage_uri(settings: Settings) -> str:
    """Where counts live: ``rate_limit_storage`` when set, else a file in the index directory."""
    if settings.rate_limit_storage:
        return settings.rate_limit_storage
    return f"{SQLITE_SCHEME}://{(settings.index_dir / COUNTS_FILE).resolve()}"


# Form posts that count like questions: answer feedback and admin sign-in attempts.
LIMITED_FORMS = ("pages.feedback", "admin.login")


def runs_question() -> bool:
    """Whether the current request is rate limited: every JSON API call, the question page
    when it asks (``GET /?q=``), the feedback form and the admin sign-in. (The API docs page
    and its assets are not API calls.)"""
    return (request.path.startswith("/api/v1/") or request.endpoint in LIMITED_FORMS
            or (request.endpoint == "pages.ask" and "q" in request.args))


def install(app: Flask, settings: Settings) -> Limiter | None:
    """Limit ``app``'s question routes to ``settings.rate_limit`` a minute per client, all
    limited routes sharing one count (None when the limit is off)."""
    if not settings.rate_limit:
        return None
    trusted = trusted_networks(settings.trusted_proxies)
    key: Callable[[], str] = lambda: client_address(  # noqa: E731
        request.remote_addr, request.headers.getlist("X-Forwarded-For"), trusted)
    limiter = Limiter(
        key_func=key,
        app=app,
        storage_uri=storage_uri(settings),
        application_limits=[f"{settings.rate_limit} per minute"],
        application_limits_exempt_when=lambda: not runs_question(),
        strategy="fixed-window",
        headers_enabled=True,
        key_prefix="qa",
        # An unreachable storage lets requests through (and logs), rather than failing them.
        swallow_errors=True,
    )
    return limiter
