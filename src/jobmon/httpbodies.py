"""JSON in and out of the HTTP API: error bodies, request bodies, and the
newline every JSON body ends with."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def error(status: int, code: int, text: str) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "text": text}}, status=status, dumps=dumps_text
    )


def dumps_text(value: Any) -> str:
    return orjson.dumps(value).decode()


@web.middleware
async def json_ends_a_line(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every JSON body ends with a newline, so that curl's output ends its line
    in a shell (the Healthchecks API's JSON too; its plain-text answers are its own)."""
    response: web.StreamResponse = await handler(request)
    if isinstance(response, web.Response) and response.content_type == "application/json":
        body = response.body
        if isinstance(body, bytes) and body and not body.endswith(b"\n"):
            response.body = body + b"\n"
    return response


async def json_body(request: web.Request, empty: Any) -> Any:
    raw = await request.read()
    if not raw.strip():
        return empty
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"the body is not JSON ({exc})") from None
