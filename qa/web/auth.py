"""Who may use the admin endpoints and pages.

The JSON API takes ``Authorization: Bearer <admin token>``. The admin pages sign in with the same
token once and then carry a session cookie (HttpOnly, SameSite=Strict, path ``/admin``, signed
with a key derived from the token, so changing the token signs everyone out and every worker
accepts the cookies of the others). The cookie is also Secure when the request came over HTTPS:
on the connection itself, or by ``X-Forwarded-Proto: https`` from a trusted proxy
(``QA_TRUSTED_PROXIES``, the proxies whose ``X-Forwarded-For`` counts too), so that a browser
never sends it back over plain HTTP. Every form of the admin pages carries a CSRF token that
must match the session's. Both are disabled (404) when no admin token is set.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from flask import Flask, request, session
from flask.sessions import SecureCookieSessionInterface

from qa.config import Settings
from qa.errors import NotFoundError, QAError, UnauthorizedError
from qa.proxies import Network, forwarded_https, trusted_networks
from qa.web.state import current

SESSION_HOURS = 8
CSRF_FIELD = "csrf_token"


class CSRFError(QAError):
    """A form arrived without the CSRF token of the session that showed it."""

    code = "csrf_failed"
    http_status = 400


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, Secure whenever the request came over HTTPS."""

    def __init__(self, trusted: list[Network]) -> None:
        self.trusted = trusted

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or forwarded_https(
            request.scheme, request.remote_addr, request.headers.get("X-Forwarded-Proto", ""),
            self.trusted)


def configure_sessions(app: Flask, settings: Settings) -> None:
    if not settings.admin_token:
        return
    app.session_interface = _SessionInterface(trusted_networks(settings.trusted_proxies))
    app.secret_key = hmac.new(settings.admin_token.encode(), b"qa admin session cookie",
                              hashlib.sha256).hexdigest()
    app.config.update(SESSION_COOKIE_NAME="qa_admin", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_PATH="/admin",
                      PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS))


def admin_enabled() -> Settings:
    settings = current().settings
    if not settings.admin_token:
        raise NotFoundError("admin endpoints are disabled (set QA_ADMIN_TOKEN to enable them)")
    return settings


def token_matches(given: str, settings: Settings) -> bool:
    return hmac.compare_digest(given.strip().encode(), settings.admin_token.encode())


def require_bearer() -> Settings:
    """The JSON API's check: the admin token in the Authorization header."""
    settings = admin_enabled()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token_matches(token, settings):
        raise UnauthorizedError("a valid 'Authorization: Bearer <token>' header is required")
    return settings


def signed_in() -> bool:
    admin_enabled()
    return session.get("admin") is True


def sign_in(given: str) -> bool:
    settings = admin_enabled()
    if not token_matches(given, settings):
        return False
    session.clear()  # a fresh session (and CSRF token) after signing in
    session.permanent = True
    session["admin"] = True
    session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return True


def sign_out() -> None:
    session.clear()


def csrf_token() -> str:
    """The session's CSRF token (made on first use, before signing in too)."""
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    expected = session.get(CSRF_FIELD)
    given = request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not hmac.compare_digest(given.encode(), expected.encode()):
        raise CSRFError("the form has expired or did not come from this site: reload the page "
                        "and try again")
