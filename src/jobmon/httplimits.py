"""What an HTTP client may take: connections, time, and log lines.

- ``--max-http-connections``: past it, a connection is answered 503 and closed
  before aiohttp sees it (see ``limits``).
- ``--http-timeout-ms``, as nginx's ``client_header_timeout``: aiohttp arms its
  keep-alive timer when a connection opens and again after each response, and
  closes the connection if no whole request (line and headers) has arrived by
  then (``RequestHandler._process_keepalive``), so its ``keepalive_timeout`` is
  our header timeout and the idle time of a kept-alive connection alike.
- The same time again for the body, as nginx's ``client_body_timeout`` (for the
  whole body, not each read): the body is read in a middleware (at most
  ``client_max_size`` bytes), so every route finds it read; late: 408.
- A malformed request aiohttp answers itself (400) is logged as one line, not
  a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from . import limits, tls_listen
from .config import Config

NO_TIMEOUT_S = 3630.0  # aiohttp's own keep-alive default, for --http-timeout-ms 0
LINGER_S = 2.0  # reading what a refused request still sends, before closing


class _OneLineLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger: a malformed request is the client's doing, logged
    as one line with its reason; anything else keeps its traceback."""

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            peer = args[0] if args else None  # aiohttp's "... from %s", request.remote
            self.logger.info(
                "bad HTTP request: %s",
                exc_info.message or type(exc_info).__name__,
                extra={"fields": {"peer": str(peer)}},
            )
            return
        self.logger.error(msg, *args, exc_info=exc_info, **kwargs)


def timeout_s(config: Config) -> float | None:
    return config.http_timeout_ms / 1000 if config.http_timeout_ms else None


def runner(app: web.Application, config: Config) -> web.AppRunner:
    return web.AppRunner(
        app,
        access_log=None,
        logger=_OneLineLogger(logging.getLogger("aiohttp.server"), {}),
        keepalive_timeout=timeout_s(config) or NO_TIMEOUT_S,
        lingering_time=LINGER_S,
        # Streams end at stop; nothing else may hold the shutdown longer.
        shutdown_timeout=config.shutdown_timeout,
    )


async def listen(
    app_runner: web.AppRunner,
    host: str,
    port: int,
    cap: int,
    refusals: limits.RefusalLog,
    context: ssl.SSLContext | None = None,
    handshake_timeout_s: float = tls_listen.HANDSHAKE_TIMEOUT_S,
) -> asyncio.Server | tls_listen.TlsServer:
    """The listener (instead of aiohttp's TCPSite): aiohttp's handler for each
    connection, or past ``cap`` open ones, a 503 and close; over TLS with a
    ``context`` (see ``tls_listen``)."""
    server = app_runner.server
    assert server is not None, "setup() first"
    refusal = limits.http_refusal(cap)

    def new_connection() -> asyncio.BaseProtocol:
        if len(server.connections) >= cap:
            refusals.refused(cap)
            return limits.Refused(refusal)
        return server()

    return await tls_listen.listen(
        new_connection, context, "http", host, port, 1024, handshake_timeout_s, max_pending=cap
    )


# Routes that read their own bodies (the first part only, under the same
# timeout): a Healthchecks ping may be any size, and keeps its first 100 KB.
STREAMED_PREFIXES = ("/ping/",)


def body_read_in_time(config: Config) -> Any:
    """The middleware that reads a request's body within the timeout."""
    limit_s = timeout_s(config)

    @web.middleware
    async def read_body(request: web.Request, handler: Any) -> web.StreamResponse:
        if (
            request.body_exists
            and limit_s is not None
            and not request.path.startswith(STREAMED_PREFIXES)
        ):
            try:
                async with asyncio.timeout(limit_s):
                    await request.read()
            except TimeoutError:
                raise web.HTTPRequestTimeout() from None
        response: web.StreamResponse = await handler(request)
        return response

    return read_body
