"""Who may call the app: a bearer token (or a session cookie made from it), or your own check.

With a token, every route but `/health` needs `Authorization: Bearer <token>`. A browser cannot
send that header when it opens the chat page, so `/` without it answers 401 with a small form;
posting the token there (`POST /login`) sets an HttpOnly, SameSite=Strict cookie holding an HMAC
of the token (never the token itself), which then authorizes the page's own requests. A request
authorized by the cookie that changes something must come from the app's own origin.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
from collections.abc import Awaitable, Callable

from starlette.requests import Request

COOKIE = "beluga_session"
#: A pluggable check: `auth(request) -> bool` (sync or async); True lets the request in.
AuthCheck = Callable[[Request], bool | Awaitable[bool]]


class TokenAuth:
    """The bearer-token check (a `SecretStr` works too: only its value is used, never shown)."""

    def __init__(self, token: str) -> None:
        if not isinstance(token, str) or len(token) < 8:
            raise ValueError("token must be a string of at least 8 characters (or None: no auth)")
        self._token = token.encode()
        self._session = hmac.new(self._token, b"prefect-beluga-session", hashlib.sha256).hexdigest()

    def matches(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self._token)

    @property
    def session(self) -> str:
        """The cookie value: an HMAC of the token, so the cookie never holds the token."""
        return self._session

    def __call__(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value and self.matches(value.strip()):
            return True
        cookie = request.cookies.get(COOKIE)
        if cookie and hmac.compare_digest(cookie.encode(), self._session.encode()):
            return request.method in ("GET", "HEAD") or _same_origin(request)
        return False

    def __repr__(self) -> str:
        return "TokenAuth(token=***)"


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser's cross-site request (those carry Origin on POST)
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


async def allowed(check: AuthCheck | None, request: Request) -> bool:
    if check is None:
        return True
    verdict = check(request)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    return bool(verdict)


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in · prefect-beluga</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:16px system-ui,sans-serif;display:grid;place-items:center;height:100vh;margin:0;background:#f5f6f8}}
form{{background:#fff;padding:2rem;border-radius:12px;box-shadow:0 2px 12px #0002;display:grid;gap:.8rem;width:20rem}}
input,button{{font:inherit;padding:.5rem}}button{{background:#2459e0;color:#fff;border:0;border-radius:6px}}
.err{{color:#b00020}}</style></head>
<body><form method="post" action="/login"><h1>Sign in</h1>{error}
<label>App token <input id="token" name="token" type="password" autocomplete="current-password" required></label>
<button id="sign-in" type="submit">Sign in</button></form></body></html>"""
