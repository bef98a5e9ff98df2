"""The HTTP API (aiohttp, same event loop, same engine): every call is one or more
protocol messages answered by the store task, exactly as over TCP.

Errors are JSON ``{"error": {"code": .., "text": ..}}`` with the HTTP status
that fits: 400 bad input, 404 unknown job or path, 405, 409 precondition,
413 body too large, 500 a bug.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from . import httpauth, httplimits, limits, metrics, openapi, sse
from .clock import iso
from .errors import Code
from .hc import routes as hc_routes
from .httpbodies import dumps_text, error, json_body, json_ends_a_line
from .tls_listen import TlsServer

log = logging.getLogger("jobmon.http")

if TYPE_CHECKING:
    from .server import Server

STATUS_OF_CODE = {
    Code.UNAUTHORIZED: 401,
    Code.NOT_SUPPORTED: 400,
    Code.TEMPORARILY_UNAVAILABLE: 503,
    Code.MALFORMED: 400,
    Code.NOT_FOUND: 404,
    Code.PRECONDITION_FAILED: 409,
    Code.CRASH: 500,
}
# aiohttp's own refusals, in the error table's codes (the rest: malformed, 12).
HTTP_CODES = {404: Code.NOT_FOUND, 405: Code.NOT_SUPPORTED}
FAILURE_HOURS_SHOWN = 24
# The dashboard's files, by URL name; nothing else is served from the package.
STATIC_TYPES = {
    "index.html": "text/html",
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
# The page builds its DOM with textContent (it escapes everything it shows);
# this policy stops any script but its own, should that ever slip.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# A batch posted to /api/events: at most this many messages, and replies up to
# about this many bytes (the questions past it are answered with error 12).
MAX_BATCH = 10_000
MAX_BATCH_REPLY_BYTES = 8 << 20
SHORTCUTS = {
    "start": ("update_status", {"status": "running"}),
    "complete": ("job_completed", {}),
    "fail": ("job_failed", {}),
    "heartbeat": ("heartbeat", {}),
}


class HttpApi:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.access = httpauth.Access(server.config.token)
        self.app = web.Application(
            client_max_size=server.config.max_line_bytes,
            middlewares=[
                json_ends_a_line,
                self._errors,
                self.access.authorize,
                httplimits.body_read_in_time(server.config),
            ],
        )
        r = self.app.router
        r.add_post("/api/events", self.post_events)
        r.add_post("/api/jobs/{job_id}/{action}", self.post_shortcut)
        r.add_post("/api/jobs", self.post_job)
        r.add_get("/api/jobs", self.get_jobs)
        r.add_get("/api/jobs/{job_id}", self.get_job)
        r.add_get("/api/stats", self.get_stats)
        r.add_get("/api/alerts", self.get_alerts)
        r.add_get("/api/analytics", self.get_analytics)
        r.add_get("/api/stream", self.stream)
        r.add_get("/api/openapi.json", self.openapi)
        r.add_get("/metrics", self.metrics)
        r.add_get("/", self.dashboard)
        r.add_get("/static/{name}", self.static)
        r.add_post("/api/session", self.access.session)
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        hc_routes.add(self)  # Healthchecks' pinging and management APIs, badges
        self._spec = openapi.spec(list(server.config.allowed_commands))
        static = resources.files("jobmon") / "static"
        self._static = {name: (static / name).read_bytes() for name in STATIC_TYPES}
        self.runner: web.AppRunner | None = None
        self._listener: asyncio.Server | TlsServer | None = None
        self.refusals = limits.RefusalLog("http")
        self.streams: set[sse.StreamSubscriber] = set()
        self.port = 0
        self.accepting = False

    async def start(self, host: str, port: int) -> None:
        self.runner = httplimits.runner(self.app, self.server.config)
        await self.runner.setup()
        self._listener = await httplimits.listen(
            self.runner,
            host,
            port,
            self.server.max_http_connections,
            self.refusals,
            self.server.tls,
            self.server.config.tls_handshake_timeout_s,
        )
        self.port = self._listener.sockets[0].getsockname()[1]
        self.accepting = True

    async def stop(self) -> None:
        self.accepting = False
        if self._listener is not None:
            self._listener.close()
        for subscriber in list(self.streams):  # end the streams, or cleanup waits for them
            subscriber.drop()
        if self.runner is not None:
            await self.runner.cleanup()

    # -- plumbing ------------------------------------------------------------
    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            text = exc.text or exc.reason
            if exc.status == 408:
                text = (
                    f"the request body did not arrive within {self.server.config.http_timeout_ms} "
                    "ms (--http-timeout-ms)"
                )
            elif exc.status == 413:
                text = f"request body too large: at most {self.server.config.max_line_bytes} bytes"
            elif exc.status == 405:
                text = f"{request.method} is not allowed on {request.path}"
            elif exc.status == 404:
                text = f"no such path {request.path}"
            return error(exc.status, HTTP_CODES.get(exc.status, Code.MALFORMED), text)
        except Exception:
            log.exception("bug while handling %s %s", request.method, request.path)
            return error(500, Code.CRASH, "internal error; logged")

    async def ask(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send protocol messages through the engine; their replies, in order."""
        return await self.server.engine.ask(bodies)

    async def ask_one(self, body: dict[str, Any]) -> web.Response:
        """One message; its reply line is the response body as it is (no second encoding)."""
        line = await self.server.engine.ask_raw([body])
        if line.startswith(b'{"type":"error"'):
            return self.answer(orjson.loads(line))
        return web.Response(body=line, content_type="application/json", charset="utf-8")

    @staticmethod
    def answer(reply: dict[str, Any]) -> web.Response:
        if reply.get("type") == "error":
            status = STATUS_OF_CODE.get(reply["code"], 400)
            return error(status, reply["code"], reply["text"])
        return web.json_response(reply, dumps=dumps_text)

    # -- endpoints -------------------------------------------------------------
    async def post_events(self, request: web.Request) -> web.Response:
        body = await json_body(request, None)
        if isinstance(body, dict):
            return await self.ask_one(body)
        if isinstance(body, list) and body and all(isinstance(b, dict) for b in body):
            if len(body) > MAX_BATCH:
                return error(
                    400,
                    Code.MALFORMED,
                    f"a batch holds at most {MAX_BATCH} messages, got {len(body)}: "
                    "send it in parts",
                )
            # Built from the reply lines as they are; past MAX_BATCH_REPLY_BYTES the
            # questions left are answered with error 12 (see batch.BatchSink).
            lines = await self.server.engine.ask_raw(body, MAX_BATCH_REPLY_BYTES)
            return web.Response(
                body=b"[" + b",".join(lines.splitlines()) + b"]\n",
                content_type="application/json",
                charset="utf-8",
            )
        return error(
            400, Code.MALFORMED, "the body must be a message object or a non-empty array of them"
        )

    async def post_job(self, request: web.Request) -> web.Response:
        """Seed 003's POST /jobs: start an allowed command (start_job)."""
        body = await json_body(request, None)
        if not isinstance(body, dict):
            return error(
                400,
                Code.MALFORMED,
                'the body must be an object: {"job_id": .., "command": .., "arguments": [..]}',
            )
        return await self.ask_one({**body, "type": "start_job"})

    async def post_shortcut(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        action = request.match_info["action"]
        if action not in SHORTCUTS:
            return error(
                404, Code.NOT_FOUND, f"no action {action!r}: expected one of {', '.join(SHORTCUTS)}"
            )
        extra = await json_body(request, {})
        if not isinstance(extra, dict):
            return error(400, Code.MALFORMED, "the body, when given, must be a JSON object")
        type_, fixed = SHORTCUTS[action]
        body = {**extra, **fixed, "type": type_, "job_id": job_id}
        (reply,) = await self.ask([body])
        if action == "complete" and reply.get("code") == Code.PRECONDITION_FAILED:
            # A crontab's `curl .../complete` with no start: a completed run,
            # without a duration (as update_status completed).
            (reply,) = await self.ask(
                [{"type": "update_status", "job_id": job_id, "status": "completed"}]
            )
        return self.answer(reply)

    @staticmethod
    def from_query(
        request: web.Request,
        type_: str,
        names: tuple[str, ...],
        counts: tuple[str, ...] = ("limit",),
    ) -> dict[str, Any]:
        """A message from query parameters; ``counts`` are numbers when they read as one
        (else passed on as given, for the command to refuse in its own words)."""
        body: dict[str, Any] = {"type": type_}
        for name in names:
            if name in request.query:
                body[name] = request.query[name]
        for name in counts:
            value = request.query.get(name)
            if value is not None:
                number = value.isascii() and value.isdigit() and len(value) <= 9
                body[name] = int(value) if number else value
        return body

    async def get_jobs(self, request: web.Request) -> web.Response:
        return await self.ask_one(self.from_query(request, "list_jobs", ("status", "q", "cursor")))

    async def get_job(self, request: web.Request) -> web.Response:
        return await self.ask_one({"type": "get_job", "job_id": request.match_info["job_id"]})

    async def get_stats(self, request: web.Request) -> web.Response:
        (reply,) = await self.ask([{"type": "get_stats"}])
        store = self.server.node.store
        reply["by_status"] = {status.value: n for status, n in store.count_by_status.items()}
        hours = store.analytics.failures_last_hours(self.server.clock.now(), FAILURE_HOURS_SHOWN)
        reply["failures_by_hour"] = [
            {"hour": iso(hour * 3600.0), "failures": n} for hour, n in hours
        ]
        return self.answer(reply)

    async def get_alerts(self, request: web.Request) -> web.Response:
        body = self.from_query(request, "get_alerts", ("state", "job_id"), ("limit", "before"))
        return await self.ask_one(body)

    async def get_analytics(self, request: web.Request) -> web.Response:
        body = self.from_query(request, "get_analytics", ("tz", "job_id"), counts=("top",))
        return await self.ask_one(body)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """SSE: ``event: alert`` and ``event: event`` (job events), as the TCP
        topics; ``topics=alerts,events`` chooses (default: both). ``changes``:
        ``event: changed`` at most every sse.CHANGES_EVERY_S after state changed."""
        wanted = request.query.get("topics", "alerts,events").split(",")
        if not wanted or not set(wanted) <= set(sse.STREAM_TOPICS):
            return error(
                400,
                Code.MALFORMED,
                f"topics must be drawn from {', '.join(sse.STREAM_TOPICS)} (comma-separated)",
            )
        return await sse.serve(request, self.server, self.streams, wanted)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(self._spec, dumps=dumps_text)

    async def dashboard(self, request: web.Request) -> web.Response:
        return self._page("index.html")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_TYPES:
            return error(404, Code.NOT_FOUND, f"no such path {request.path}")
        return self._page(name)

    def _page(self, name: str) -> web.Response:
        return web.Response(
            body=self._static[name],
            content_type=STATIC_TYPES[name],
            charset="utf-8",
            headers=PAGE_HEADERS,
        )

    async def metrics(self, request: web.Request) -> web.Response:
        body = await metrics.scrape(self.server)
        return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, dumps=dumps_text)

    async def readyz(self, request: web.Request) -> web.Response:
        if self.accepting and self.server.ready():
            return web.json_response({"status": "ready"}, dumps=dumps_text)
        return web.json_response({"status": "not ready"}, status=503, dumps=dumps_text)
