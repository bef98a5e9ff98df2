"""How many connections the server holds, and the open files they need.

As Redis does with ``maxclients``: at start the process's soft limit on open
files is raised toward its hard limit, to fit ``--max-connections`` TCP
clients, ``--max-http-connections`` HTTP clients and some headroom (the
journal, snapshots, webhook and Alertmanager sockets, launched jobs' pipes).
If the hard limit is too low, the connection caps shrink to fit, with a warning.
A client past its cap is answered with one error and closed, so the server
never runs out of descriptors: ``/healthz`` and a new worker still get in.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from dataclasses import dataclass
from typing import cast

import orjson

from .errors import Code

log = logging.getLogger("jobmon.limits")

# Descriptors kept free for everything but client connections (Redis keeps 128).
FD_HEADROOM = 256
# A refusal is logged at most this often (with how many there were since).
REFUSAL_LOG_EVERY_S = 10.0
# A refused connection waits this long for the client to read its error and
# close; so many may wait at once (a quarter of the headroom).
LINGER_S = 1.0
MAX_LINGERING = FD_HEADROOM // 4


@dataclass
class Fitted:
    tcp: int  # the TCP cap in force
    http: int  # the HTTP cap in force
    soft: int  # RLIMIT_NOFILE's soft limit, after raising it
    hard: int


def fit_open_files(max_tcp: int, max_http: int) -> Fitted:
    """Raise the soft limit on open files to fit the caps (never above the hard
    limit); shrink the caps if it cannot. Logs what it got."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_tcp + max_http + FD_HEADROOM
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
            soft = ceiling
        except (ValueError, OSError) as exc:  # e.g. above fs.nr_open
            log.warning("could not raise the open-file limit to %d: %s", ceiling, exc)
    tcp, http = max_tcp, max_http
    usable = (wanted if soft == resource.RLIM_INFINITY else soft) - FD_HEADROOM
    if tcp + http > usable:
        # Keep the HTTP share (health checks, the dashboard) at an eighth at least.
        http = min(max_http, max(usable // 8, 1 if max_http else 0))
        tcp = max(usable - http, 1)
        log.warning(
            "open-file limit too low for the connection caps: raise the hard limit "
            "(ulimit -Hn, LimitNOFILE=) to serve more",
            extra={
                "fields": {
                    "open_file_limit": soft,
                    "wanted": wanted,
                    "max_connections": tcp,
                    "max_http_connections": http,
                }
            },
        )
    log.info(
        "open-file limit",
        extra={
            "fields": {
                "soft": soft,
                "hard": hard,
                "max_connections": tcp,
                "max_http_connections": http,
            }
        },
    )
    return Fitted(tcp, http, soft, hard)


class Refused(asyncio.Protocol):
    """A connection past the cap: one error, then closed (Redis's "max number
    of clients reached"). Closing a socket with unread input resets it, and the
    reset can overtake the error, so it reads (and drops) what the client still
    sends until the client closes, for at most LINGER_S; and only up to
    MAX_LINGERING at once, so refusals cannot use up the descriptors kept free."""

    lingering = 0

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.answer)
        if Refused.lingering >= MAX_LINGERING or not self.transport.can_write_eof():
            self.transport.close()
            return
        Refused.lingering += 1
        self.transport.write_eof()
        self.timer = asyncio.get_running_loop().call_later(LINGER_S, self.transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # refused: what it sent is not read

    def eof_received(self) -> bool:
        return False  # the client is done too: close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            Refused.lingering -= 1


def tcp_refusal(cap: int) -> bytes:
    return orjson.dumps(
        {
            "type": "error",
            "code": int(Code.TEMPORARILY_UNAVAILABLE),
            "text": f"max number of clients reached (--max-connections {cap}): try again later",
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


def http_refusal(cap: int) -> bytes:
    body = orjson.dumps(
        {
            "error": {
                "code": int(Code.TEMPORARILY_UNAVAILABLE),
                "text": f"max number of HTTP clients reached (--max-http-connections {cap}): "
                "try again later",
            }
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class RefusalLog:
    """Counts refused connections; says so at most every REFUSAL_LOG_EVERY_S."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.total = 0
        self._unlogged = 0
        self._logged_at = float("-inf")

    def refused(self, cap: int) -> None:
        self.total += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= REFUSAL_LOG_EVERY_S:
            log.warning(
                "connection refused: at the cap",
                extra={"fields": {"listener": self.what, "cap": cap, "refused": self._unlogged}},
            )
            self._logged_at = now
            self._unlogged = 0
