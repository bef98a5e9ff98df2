"""Access to the HTTP API under --token: the Bearer token, or the dashboard's
session cookie (reads only), and the sign-in that sets it."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from aiohttp import web

from .errors import Code
from .httpbodies import error, json_body

# Open under --token: the health check, the page (it holds no data) and its sign-in.
OPEN_PATHS = frozenset({"/healthz", "/", "/api/session"})
# Healthchecks' APIs check their own secrets (the uuid, ping key, badge key, X-Api-Key).
OPEN_PREFIXES = ("/static/", "/ping/", "/badge/", "/api/v1/", "/api/v2/", "/api/v3/")
SESSION_COOKIE = "jobmon_session"


def _raw(text: str) -> bytes:
    """A header value as the bytes that came (aiohttp decodes them with surrogateescape)."""
    return text.encode("utf-8", "surrogateescape")


class Access:
    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token is not None else None
        # The dashboard's cookie carries this, not the token itself.
        self._session = (
            hmac.new(self._token, b"jobmon dashboard session", hashlib.sha256).hexdigest().encode()
            if self._token is not None
            else None
        )

    @web.middleware
    async def authorize(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """--token: every request but the health check and the page's own files
        carries it as ``Authorization: Bearer`` (or the dashboard's cookie)."""
        if (
            self._token is None
            or request.path in OPEN_PATHS
            or request.path.startswith(OPEN_PREFIXES)
        ):
            response: web.StreamResponse = await handler(request)
            return response
        given = request.headers.get("Authorization", "")
        if given.startswith("Bearer "):
            if hmac.compare_digest(_raw(given[7:].strip()), self._token):
                response = await handler(request)
                return response
        elif request.method in ("GET", "HEAD"):
            # The dashboard's cookie reads, never writes: a page on another local
            # port is the same "site" to the browser and could send a form POST
            # carrying it (cross-site request forgery). Writes need the Bearer token.
            try:
                cookie = request.cookies.get(SESSION_COOKIE)
            except Exception:  # an unparseable Cookie header is no cookie
                cookie = None
            assert self._session is not None
            if cookie is not None and hmac.compare_digest(_raw(cookie), self._session):
                response = await handler(request)
                return response
        answer = error(
            401,
            Code.UNAUTHORIZED,
            "this server requires its token: send Authorization: Bearer <token>"
            if not given
            else "the token is wrong",
        )
        answer.headers["WWW-Authenticate"] = 'Bearer realm="jobmon"'
        return answer

    async def session(self, request: web.Request) -> web.Response:
        """The dashboard's sign-in: the token in, a same-site HttpOnly cookie out."""
        body = await json_body(request, {})
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            return error(400, Code.MALFORMED, 'the body must be {"token": "..."}')
        if self._token is None or self._session is None:
            return web.json_response({"type": "session", "required": False})
        if not hmac.compare_digest(token.encode(), self._token):
            return error(401, Code.UNAUTHORIZED, "the token is wrong")
        response = web.json_response({"type": "session", "required": True})
        response.set_cookie(
            SESSION_COOKIE,
            self._session.decode(),
            httponly=True,
            samesite="Strict",
            secure=request.secure,  # over https, never sent back over plain http
            path="/",
        )
        return response
