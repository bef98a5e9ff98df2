"""The TCP server's lifecycle: recover, listen, serve, and a phased shutdown with a deadline."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING

from . import accel, limits, tls, tls_listen
from .analytics import CostModel
from .channels import parse_all
from .clock import Clock, SystemClock
from .config import Config
from .connection import Connection
from .engine import Engine
from .integrations import build as build_integrations
from .launcher import Launcher

if TYPE_CHECKING:
    from .cluster.node import Member
    from .http import HttpApi
from .node import Node
from .notifiers import Fanout
from .notify import Notifier
from .persistence import DataDir
from .store import Store

log = logging.getLogger("jobmon.server")


class Server:
    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.tls = tls.server_context(config.tls_cert, config.tls_key)  # both ports, or neither
        self.clock = clock or SystemClock()
        self.node = Node(Store(config.max_retries), config.node_id)
        self.node.token = config.token
        analytics = self.node.store.analytics
        analytics.slow_run_factor = config.slow_run_factor
        analytics.cost_model = CostModel(**config.cost_model)
        self.node.store.lost_grace_ms = config.lost_grace_ms
        self.node.store.seen_events.max_kept = config.event_ids_kept
        self.data_dir = (
            None
            if config.in_memory or config.clustered
            else DataDir(config.data_dir, config.compact_min_bytes)
        )
        self.notifier = Notifier(
            config.webhooks,
            config.alertmanager,
            config.alertmanager_resend_s,
            config.notify_backoff_s,
        )
        self.apprise = None
        if config.notify:  # --notify: alerts through Apprise
            from .notify_apprise import AppriseNotifier

            self.apprise = AppriseNotifier(
                parse_all(config.notify), self.node.store, self.public_url, config.notify_backoff_s
            )
        self.notifiers = Fanout([self.notifier, *([self.apprise] if self.apprise else [])])
        self.cluster: Member | None = None
        if config.clustered:  # the log is a Redis Stream shared with other nodes
            from .cluster.node import Member

            self.cluster = Member(config, self.node, self.clock, self.notifiers)
            self.node.cluster = self.cluster
            self.engine: Engine = self.cluster.engine
        else:
            self.engine = Engine(self.node, self.clock, self.data_dir, config.fsync)
        self.engine.notifier = self.notifiers
        if config.allowed_commands:
            if not config.token:
                raise ValueError(
                    "--allow-command lets clients run programs on this machine, so it "
                    "needs --token (or JOBMON_TOKEN) too"
                )
            for name, path in config.allowed_commands.items():
                if not os.access(path, os.X_OK):
                    raise ValueError(
                        f"--allow-command {name}={path}: {path} is not an executable file"
                    )
            self.node.launcher = Launcher(self.engine, config.allowed_commands)
        if config.realert_ms:
            self.engine.realert_s = config.realert_ms / 1000
        # --celery...: event sources inside the server (integrations/).
        self.integrations = build_integrations(config, self.engine)
        self.connections: set[Connection] = set()
        self.connections_total = 0
        # Set at start, once the open-file limit is known (see limits).
        self.max_connections = config.max_connections
        self.max_http_connections = config.max_http_connections
        self.refusals = limits.RefusalLog("tcp")
        self.port = config.port
        self._listener: asyncio.AbstractServer | None = None
        self.http: HttpApi | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self.data_dir is not None:
            report = self.data_dir.recover(self.node, self.node.store.settings())
            log.info(
                "recovered",
                extra={
                    "fields": {
                        "data_dir": str(self.config.data_dir),
                        "jobs": len(self.node.store.jobs),
                        "snapshot_generation": report.snapshot_generation,
                        "records_replayed": report.records_replayed,
                        "seconds": round(report.seconds, 3),
                    }
                },
            )
            # Alerts rebuilt by replay were delivered before the restart.
            self.node.store.drain_alerts()
            if report.snapshot_generation is not None or report.records_replayed:
                self.engine.restarted_at = self.clock.now()
                # The restart closed every connection that was reporting a run.
                self.engine.orphaned_jobs = self.node.store.running_monitored_jobs()
        # Job records live for the life of the process: move them out of the
        # collector's sight, and collect the young generation less often, or a
        # full collection over a million jobs stalls every connection.
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        named = frozenset(c.name for c in parse_all(self.config.notify) if c.name is not None)
        if self.cluster is not None:
            self.cluster.engine.channels = named  # checked before a write is proposed
        else:
            self.node.channels = named  # checked in the apply (never on replay)
        firing = [a for a in self.node.store.recent_alerts() if a.resolved_at is None]
        await self.notifiers.start(firing)
        if self.engine.realert_s is not None:
            now = self.clock.now()
            self.engine.realerts.extend((now + self.engine.realert_s, a) for a in firing)
        fitted = limits.fit_open_files(
            max(self.config.max_connections, 1),
            self.config.max_http_connections if self.config.http_port else 0,
        )
        self.max_connections, self.max_http_connections = fitted.tcp, fitted.http
        self._refusal = limits.tcp_refusal(self.max_connections)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self.engine.run(), name="jobmon-store"))
        self._tasks.append(loop.create_task(self.engine.deadline_timer(), name="jobmon-timer"))
        if self.data_dir is not None and self.config.fsync == "everysec":
            self._tasks.append(
                loop.create_task(self.data_dir.fsync_every_second(), name="jobmon-fsync")
            )
        self._listener = await tls_listen.listen(
            self._new_connection,
            self.tls,
            "tcp",
            self.config.host,
            self.config.port,
            backlog=1024,
            timeout_s=self.config.tls_handshake_timeout_s,
            max_pending=self.max_connections,
        )
        self.port = self._listener.sockets[0].getsockname()[1]
        if self.cluster is not None:  # join: the snapshot, then the log after it
            await self.cluster.start(self.config.host, self.port, self.config.http_port)
        if self.config.http_port:
            from .http import HttpApi

            self.http = HttpApi(self)
            await self.http.start(self.config.host, self.config.http_port)
        for integration in self.integrations:
            await integration.start()

    def public_url(self) -> str:
        """Where users reach this server (--public-url, else its HTTP address)."""
        port = self.http.port if self.http is not None else self.config.http_port
        return self.config.public_url or f"http://{self.config.host}:{port}"

    def ready(self) -> bool:
        """/readyz: accepting, and (in a cluster) caught up with the log and
        reaching Redis (without it, writes are refused: send them elsewhere)."""
        return self.cluster is None or (self.cluster.caught_up and self.cluster.redis_up)

    def _new_connection(self) -> asyncio.Protocol:
        if len(self.connections) >= self.max_connections:
            self.refusals.refused(self.max_connections)
            return limits.Refused(self._refusal)
        self.connections_total += 1
        conn_id = self.connections_total
        if self.cluster is not None:  # unique across the cluster's nodes
            conn_id = (self.cluster.incarnation << 32) | conn_id
        return Connection(
            self.engine,
            self.config.max_line_bytes,
            self.connections,
            conn_id,
            self.config.auth_timeout_ms / 1000 if self.node.token is not None else 0.0,
        )

    async def stop(self) -> None:
        """Stop accepting, answer what was received, flush and fsync the journal."""
        started = time.perf_counter()
        deadline = self.config.shutdown_timeout
        if self._listener is not None:
            self._listener.close()
        if self.http is not None:
            await self.http.stop()
        # Integrations stop receiving; what they had received goes to the engine.
        for integration in self.integrations:
            await integration.stop()
        # Launched jobs still running are stopped; their runs are reported cancelled.
        launched_stopped = await self.node.launcher.stop() if self.node.launcher else 0
        open_connections = len(self.connections)
        for conn in list(self.connections):
            conn.stop_reading()
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.engine.wait_idle(), deadline)
        await self.engine.stop()
        for task in self._tasks:
            if not task.done() and task.get_name() != "jobmon-store":
                task.cancel()
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), deadline)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        await self.notifiers.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        if self._listener is not None:
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._listener.wait_closed(), 1.0)
        if self.data_dir is not None:
            self.data_dir.close()
        log.info(
            "stopped",
            extra={
                "fields": {
                    "connections_open_at_stop": open_connections,
                    "connections_total": self.connections_total,
                    "connections_refused": self.refusals.total,
                    "requests_handled": self.engine.requests_handled,
                    "connection_turns": self.engine.connection_turns,
                    "store_turns": self.engine.turns,
                    "jobs": len(self.node.store.jobs),
                    "launched_jobs_stopped": launched_stopped,
                    "seconds": round(time.perf_counter() - started, 3),
                }
            },
        )


@asynccontextmanager
async def running(config: Config, clock: Clock | None = None) -> AsyncIterator[Server]:
    """Start a server and always stop it (the test helper, as uvicorn's run_server)."""
    server = Server(config, clock)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def serve(config: Config) -> None:
    server = Server(config)
    await server.start()
    # Before "listening": whoever waits for that line may signal at once, and must get a clean stop.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    over = " (TLS)" if server.tls is not None else ""
    if server.http is not None:
        print(
            f"jobmon http listening on {config.host}:{server.http.port}{over}",
            file=sys.stderr,
            flush=True,
        )
    print(f"jobmon {accel.describe()}", file=sys.stderr, flush=True)
    print(f"jobmon listening on {config.host}:{server.port}{over}", file=sys.stderr, flush=True)
    store_task = server._tasks[0]
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait([waiter, store_task], return_when=asyncio.FIRST_COMPLETED)
    if store_task.done() and not store_task.cancelled() and store_task.exception() is not None:
        # The journal could not be written: replies were withheld; stop without acking more.
        log.critical("store task failed; stopping", exc_info=store_task.exception())
        waiter.cancel()
        raise SystemExit(1)
    log.info("shutting down")
    await server.stop()
