"""What the cluster tests share: in-process nodes over one Redis (a cluster name
of each test's own, so a module's tests can share one redis-server), waits that
are always bounded and say what they waited for and what they saw, and an HTTP
receiver that records every POST by path (one path per node: who sent it)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import redis
from aiohttp import web

from helpers import LineClient
from jobmon.config import Config
from jobmon.server import Server, running
from test_notify import serving

LEASE_MS = 1000  # not the subject where it is used: a dead node's lease is not waited for
T = TypeVar("T")


@dataclass(frozen=True)
class Where:
    """A Redis and a cluster name: the nodes started with both form one cluster."""

    url: str
    cluster: str

    @property
    def log_key(self) -> str:
        return "{" + self.cluster + "}:log"

    def flags(self) -> list[str]:
        return ["--redis", self.url, "--cluster-name", self.cluster]


HTTP_TIMEOUT = aiohttp.ClientTimeout(total=30)  # every HTTP call of a test is bounded


def redis_client(url: str, **options: Any) -> redis.Redis:
    """A client for looking at Redis from a test; its calls are bounded too."""
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10, **options)


def stream_id(text: str) -> tuple[int, int]:
    """A stream entry ID ("ms-seq") as a pair, for comparing positions."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def cluster_name(test_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", test_name)[-80:]


async def eventually(
    probe: Callable[[], T | Awaitable[T]],
    ok: Callable[[T], bool],
    what: str,
    timeout_s: float = 30.0,
    every_s: float = 0.01,
) -> T:
    """Probe until ``ok`` says yes, within ``timeout_s``; the last state seen.
    On time out: a failure naming what was awaited and the last state seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = probe()
        if inspect.isawaitable(state):
            state = await state
        if ok(state):  # type: ignore[arg-type]
            return state  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout_s} s for {what}; last seen: {state!r:.2000}")
        await asyncio.sleep(every_s)


async def until(
    condition: Callable[[], bool],
    what: str,
    seen: Callable[[], Any] = lambda: None,
    timeout_s: float = 30.0,
) -> None:
    """Wait for a condition of in-process nodes' state (``seen``: what to show if not)."""
    await eventually(lambda: (condition(), seen()), lambda s: s[0], what, timeout_s)


# -- in-process nodes ------------------------------------------------------------------
def node_config(where: Where, name: str, **overrides: Any) -> Config:
    settings: dict[str, Any] = {
        "port": 0,
        "redis": where.url,
        "cluster_name": where.cluster,
        "node_id": name,
        "lease_ms": LEASE_MS,
        "lost_grace_ms": 300,
    }
    settings.update(overrides)
    return Config(**settings)


def member(server: Server) -> Any:
    assert server.cluster is not None
    return server.cluster


def roles(servers: list[Server]) -> dict[str, bool]:
    return {member(s).name: member(s).lease.held() for s in servers}


@contextlib.asynccontextmanager
async def nodes(
    where: Where,
    count: int,
    each: Callable[[str], dict[str, Any]] = lambda name: {},
    **overrides: Any,
) -> AsyncIterator[list[Server]]:
    """``count`` nodes, n1 first (so n1 leads); yields once there is a leader.
    ``each``: settings of a node's own, by its name."""
    async with contextlib.AsyncExitStack() as stack:
        servers = []
        for i in range(count):
            name = f"n{i + 1}"
            config = node_config(where, name, **overrides, **each(name))
            servers.append(await stack.enter_async_context(running(config)))
        await until(
            lambda: any(member(s).lease.held() for s in servers),
            "a leader",
            lambda: roles(servers),
        )
        yield servers


def leader_of(servers: list[Server]) -> Server:
    held = [s for s in servers if member(s).lease.held()]
    assert len(held) == 1, f"not one leader: {roles(servers)}"
    return held[0]


async def converged(servers: list[Server]) -> None:
    """Every node has applied everything any node has."""

    def state() -> dict[str, Any]:
        return {
            member(s).name: (member(s).position, len(member(s).engine.entries)) for s in servers
        }

    def same() -> bool:
        seen = state().values()
        return len({position for position, _ in seen}) == 1 and not any(n for _, n in seen)

    await until(same, "every node to apply the same log (position, unapplied)", state)


async def ask(server: Server, *bodies: dict[str, Any]) -> list[dict[str, Any]]:
    conn = await LineClient.connect(server.port)
    try:
        return await conn.pipeline(list(bodies))
    finally:
        await conn.close()


# -- an HTTP receiver ----------------------------------------------------------------------
class Posts:
    """A real HTTP server's handler recording every JSON POST as (path, body),
    whatever the path. ``refuse``: answer 503 (the sender retries); ``holds``: keep each
    request to that path waiting until its event is set."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.attempts: list[str] = []  # paths, refused or not
        self.refused: list[tuple[str, dict[str, Any]]] = []  # what was answered 503
        self.refuse = False
        self.holds: dict[str, asyncio.Event] = {}  # by path
        self.url = ""  # set by test_notify.serving
        self.base = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts.append(request.path)
        if self.refuse:
            self.refused.append((request.path, await request.json()))
            return web.Response(status=503, text="try later")
        hold = self.holds.get(request.path)
        if hold is not None:
            await hold.wait()
        post = (request.path, await request.json())
        self.log.append(post)
        await self.received.put(post)
        return web.Response(status=204)

    async def next(self, what: str, timeout_s: float = 30.0) -> tuple[str, dict[str, Any]]:
        try:
            return await asyncio.wait_for(self.received.get(), timeout_s)
        except TimeoutError:
            raise AssertionError(
                f"no POST within {timeout_s} s ({what}); attempts so far: {self.attempts}"
            ) from None

    def target(self, path: str, scheme: str = "http") -> str:
        """Where to send: ``scheme`` json for Apprise's JSON posts."""
        return f"{scheme}://{self.base}/{path}"


def apprise_alert_id(body: dict[str, Any]) -> int:
    """The alert id in an Apprise JSON post's message (its "Alert id:" line)."""
    found = re.search(r"^Alert id: (\d+)$", body["message"], re.MULTILINE)
    assert found, f"no alert id in {body['message']!r}"
    return int(found.group(1))


@contextlib.asynccontextmanager
async def posts() -> AsyncIterator[Posts]:
    box = Posts()
    async with serving(box, "/{path:.*}"):  # type: ignore[arg-type]
        box.base = box.url.split("/")[2]  # host:port
        try:
            yield box
        finally:
            for hold in box.holds.values():
                hold.set()
