"""Healthchecks' pinging API: ``/ping/<uuid>[/start|/fail|/log|/<exit-status>]``
and ``/ping/<ping-key>/<slug>[...]`` (``?create=1``: made on its first ping),
by HEAD, GET or POST; ``?rid=<uuid>`` names the run. No token: the uuid, or the ping
key, is the secret. Answers as Healthchecks does, in plain text: ``OK``,
``Created`` (201), ``not found`` (404), ``ambiguous slug`` (409),
``invalid url format`` / ``invalid uuid format`` (400).
"""

from __future__ import annotations

import asyncio
import hmac
import uuid as uuidlib
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import channels, httplimits
from ..errors import Code
from .model import PING_BODY_LIMIT

if TYPE_CHECKING:
    from ..http import HttpApi

ACTIONS = ("start", "fail", "log")
HEADERS = {
    "Ping-Body-Limit": str(PING_BODY_LIMIT),
    "Access-Control-Allow-Origin": "*",
    "Cache-Control": "no-store",
}


def text(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, headers=HEADERS)


def canonical_uuid(value: str) -> str | None:
    try:
        parsed = uuidlib.UUID(value)
    except ValueError:
        return None
    return str(parsed) if str(parsed) == value.lower() else None


async def read_body(request: web.Request, limit_s: float | None) -> str | None:
    """The first PING_BODY_LIMIT bytes of the body (the rest is not kept, as in
    Healthchecks), as text, read within ``limit_s`` (--http-timeout-ms: 408
    past it); None when there is none."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(limit_s):
            while size < PING_BODY_LIMIT:
                chunk = await request.content.read(PING_BODY_LIMIT - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except TimeoutError:
        raise web.HTTPRequestTimeout() from None
    if not size:
        return None
    return b"".join(chunks).decode("utf-8", errors="replace")


class Pinging:
    def __init__(self, http: HttpApi) -> None:
        self.http = http
        key = http.server.config.ping_key
        self.ping_key = key.encode() if key else None
        http.app.router.add_get("/ping/{tail:.+}", self.ping)  # and HEAD
        http.app.router.add_post("/ping/{tail:.+}", self.ping)

    async def ping(self, request: web.Request) -> web.Response:
        parts = request.match_info["tail"].split("/")
        message: dict[str, Any] = {"type": "ping_check"}
        check = canonical_uuid(parts[0])
        if check is not None:
            message["check"] = check
            action = parts[1:]
        else:
            if len(parts) < 2 or not self._key_matches(parts[0]):
                return text("not found", 404)
            slug = parts[1]
            if slug != slug.lower():
                return text("invalid url format", 400)
            message["slug"] = slug
            action = parts[2:]
            if request.query.get("create") == "1":
                configured = channels.parse_all(self.http.server.config.notify)
                named = [c.name for c in configured if c.name is not None]
                message["create"] = {"uuid": str(uuidlib.uuid4()), "channels": named}
        if len(action) > 1:
            return text("not found", 404)
        if action and action[0] in ACTIONS:
            message["kind"] = action[0]
        elif action and action[0].isascii() and action[0].isdigit():
            if int(action[0]) > 255:
                return text("invalid url format", 400)
            message["exit_status"] = int(action[0])
        elif action and action[0]:
            return text("not found", 404)
        rid = request.query.get("rid")
        if rid is not None:
            if canonical_uuid(rid) is None:
                return text("invalid uuid format", 400)
            message["rid"] = canonical_uuid(rid)
        message["scheme"] = request.headers.get("X-Forwarded-Proto", request.scheme)
        message["remote_addr"] = request.remote or ""
        message["method"] = request.method
        message["ua"] = request.headers.get("User-Agent", "")
        body = await read_body(request, httplimits.timeout_s(self.http.server.config))
        if body is not None:
            message["body"] = body
        (reply,) = await self.http.ask([message])
        if reply["type"] == "check_pinged":
            return text("Created", 201) if reply["created"] else text("OK")
        if reply["code"] == Code.NOT_FOUND:
            return text("not found", 404)
        if reply["code"] == Code.PRECONDITION_FAILED and reply["text"].startswith("ambiguous"):
            return text("ambiguous slug", 409)
        if reply["code"] == Code.PRECONDITION_FAILED:  # no room for another check
            return text("not found", 404)
        return text(reply["text"], 400)

    def _key_matches(self, given: str) -> bool:
        return self.ping_key is not None and hmac.compare_digest(given.encode(), self.ping_key)
