"""The server's side of TLS: a listener for either port whose every connection
does its handshake under a timeout, a failure being one log line.

Given an SSL context, ``loop.create_server`` drops a connection whose handshake
fails without a word (only the loop's debug mode tells). So a TLS port is a
listener of our own: it accepts, then upgrades each connection with
``loop.connect_accepted_socket`` under ``ssl_handshake_timeout`` (a peer that
connects and sends nothing is closed then) and logs a failure as one line with
the port, the peer and the reason, never a traceback. The application's
protocol (a ``Connection``, aiohttp's request handler) only hears of
connections that made it, exactly as it hears of plain ones.

Before the handshake the listener waits (under the same timeout) for the
peer's first byte, reading nothing: a peer that closes without one is a TCP
health check, logged at debug level only, not a failed handshake worth a warning.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

log = logging.getLogger("jobmon.tls")

HANDSHAKE_TIMEOUT_S = 10.0
# Handshakes going at once, per port (the server passes its connection cap).
MAX_PENDING = 1024
ACCEPT_RETRY_S = 0.5  # out of file descriptors: accept again after this, not in a busy loop
# OpenSSL's reasons for the usual mistakes, in words an operator can act on.
HINTS = {
    "HTTP_REQUEST": "plain HTTP sent to a TLS port: use https://",
    "WRONG_VERSION_NUMBER": "not TLS: a client without --tls on a TLS port?",
    "TLSV1_ALERT_UNKNOWN_CA": "the client does not trust the CA that signed this certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the client rejected this certificate (its name or dates?)",
    "UNSUPPORTED_PROTOCOL": "the client offers no TLS version this server accepts (1.2 or newer)",
}


class TlsServer(asyncio.AbstractServer):
    """What ``create_server`` returns, for a TLS port: ``sockets``, ``close``, ``wait_closed``."""

    def __init__(
        self,
        factory: Callable[[], asyncio.BaseProtocol],
        context: ssl.SSLContext,
        port_name: str,
        sockets: list[socket.socket],
        timeout_s: float,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.factory = factory
        self.max_pending = max_pending
        self.refused = 0  # connections closed at once: max_pending handshakes were going
        self.context = context
        self.port_name = port_name
        self.sockets = sockets
        self.timeout_s = timeout_s
        self.completed = 0
        self.failed = 0
        self._loop = asyncio.get_running_loop()
        self._accepting = [
            self._loop.create_task(self._accept(sock), name=f"jobmon-accept-{port_name}")
            for sock in sockets
        ]
        self._handshakes: set[asyncio.Task[None]] = set()

    async def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, peer = await self._loop.sock_accept(sock)
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: the next accept may work
                log.error(
                    "accept failed",
                    extra={"fields": {"port": self.port_name, "error": str(exc)}},
                )
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            if len(self._handshakes) >= self.max_pending:
                # Each waits up to two timeouts holding a descriptor: past the cap the
                # next is closed unheard, or silent peers would take every descriptor.
                conn.close()
                self.refused += 1
                if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
                    log.warning(
                        "tls connection refused: too many handshakes going",
                        extra={
                            "fields": {
                                "port": self.port_name,
                                "max_pending": self.max_pending,
                                "refused": self.refused,
                            }
                        },
                    )
                continue
            task = self._loop.create_task(self._handshake(conn, peer), name="jobmon-tls")
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: socket.socket, peer: Any) -> None:
        address = _address(peer)
        try:
            async with asyncio.timeout(self.timeout_s):
                spoke = await self._first_byte(conn)
        except BaseException as exc:
            conn.close()
            if not isinstance(exc, TimeoutError):
                raise  # shutting down
            self._failed(address, f"sent nothing in {self.timeout_s:g} s", logging.WARNING)
            return
        if not spoke:  # a TCP health check (load balancer, probe): not worth a warning
            conn.close()
            self._failed(address, "closed before sending anything", logging.DEBUG)
            return
        try:
            # From here the loop owns the socket, and closes it if this fails.
            await self._loop.connect_accepted_socket(
                lambda: _NoHalfClose(self.factory()),
                conn,
                ssl=self.context,
                ssl_handshake_timeout=self.timeout_s,
            )
        except Exception as exc:  # whatever the peer did, it costs this connection only
            self._failed(address, _reason(exc), logging.WARNING)
            return
        self.completed += 1

    async def _first_byte(self, conn: socket.socket) -> bool:
        """Wait for the peer's first byte (True) or its close (False), reading nothing."""
        conn.setblocking(False)
        while True:
            readable = self._loop.create_future()
            self._loop.add_reader(conn, _set_once, readable)
            try:
                await readable
            finally:
                self._loop.remove_reader(conn)
            try:
                return bool(conn.recv(1, socket.MSG_PEEK))
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:  # reset
                return False

    def _failed(self, peer: str, why: str, level: int) -> None:
        self.failed += 1
        log.log(
            level,
            "tls handshake failed",
            extra={"fields": {"port": self.port_name, "peer": peer, "error": why}},
        )

    # -- asyncio.AbstractServer -------------------------------------------------
    def close(self) -> None:
        """Stop accepting; give up the handshakes still going (their connections close)."""
        for task in (*self._accepting, *self._handshakes):
            task.cancel()
        for sock in self.sockets:
            sock.close()
        log.info(
            "tls port closed",
            extra={
                "fields": {
                    "port": self.port_name,
                    "handshakes_completed": self.completed,
                    "handshakes_failed": self.failed,
                    "refused_pending": self.refused,
                }
            },
        )

    async def wait_closed(self) -> None:
        await asyncio.gather(*self._accepting, *self._handshakes, return_exceptions=True)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return any(not task.done() for task in self._accepting)

    async def start_serving(self) -> None:
        pass  # serving from the start

    async def serve_forever(self) -> None:
        await asyncio.gather(*self._accepting)


async def listen(
    factory: Callable[[], asyncio.BaseProtocol],
    context: ssl.SSLContext | None,
    port_name: str,
    host: str | None,
    port: int,
    backlog: int = 1024,
    timeout_s: float = HANDSHAKE_TIMEOUT_S,
    max_pending: int = MAX_PENDING,
) -> asyncio.Server | TlsServer:
    """A listening port: plain (``create_server``) without a context; with one,
    every address ``host`` names bound as ``create_server`` binds them, serving TLS
    with at most ``max_pending`` handshakes going at once."""
    loop = asyncio.get_running_loop()
    if context is None:
        return await loop.create_server(factory, host, port, backlog=backlog)
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as create_server: IPv4 is its own socket
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"error while attempting to bind on address {address!r}: "
                    f"{(exc.strerror or errno.errorcode.get(exc.errno or 0, '')).lower()}",
                ) from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return TlsServer(factory, context, port_name, sockets, timeout_s, max_pending)


class _NoHalfClose(asyncio.Protocol):
    """The application's protocol behind the TLS transport, every callback passed
    on, but ``eof_received`` answers False: asyncio ends a TLS connection at the
    peer's close_notify whatever it answers (it keeps no half-open TLS), and True
    would only log a warning for every connection that closes. (A BufferedProtocol
    reading into one shared buffer, to spare asyncio's 256 KiB allocation per
    read, measured no cheaper: bench/README.md.)"""

    def __init__(self, target: asyncio.BaseProtocol) -> None:
        assert isinstance(target, asyncio.Protocol)
        self.target = target

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.target.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.target.data_received(data)

    def eof_received(self) -> bool:
        self.target.eof_received()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.target.connection_lost(exc)

    def pause_writing(self) -> None:
        self.target.pause_writing()

    def resume_writing(self) -> None:
        self.target.resume_writing()


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():  # readable again before the waiter ran
        future.set_result(None)


def _address(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        hint = HINTS.get(exc.reason or "")
        text = f"{exc.library or 'SSL'}: {exc.reason}" if exc.reason else str(exc)
        return f"{text} ({hint})" if hint else text
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "closed by the peer during the handshake (did it refuse this certificate?)"
    return str(exc) or type(exc).__name__
