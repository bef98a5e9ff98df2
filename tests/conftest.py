"""Fixtures: a real server on an ephemeral port, in this process (so the clock can be fake)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from helpers import LineClient
from jobmon.clock import FakeClock
from jobmon.config import Config
from jobmon.server import Server, running


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def start_server(
    clock: FakeClock,
) -> Callable[..., AbstractAsyncContextManager[Server]]:
    """``async with start_server(fsync="always", data_dir=...) as server:``; in memory by default."""

    def start(**overrides: Any) -> AbstractAsyncContextManager[Server]:
        settings: dict[str, Any] = {"port": 0, "in_memory": "data_dir" not in overrides}
        settings.update(overrides)
        return running(Config(**settings), clock)

    return start


@pytest.fixture
async def server(
    start_server: Callable[..., AbstractAsyncContextManager[Server]],
) -> AsyncIterator[Server]:
    async with start_server() as srv:
        yield srv


@pytest.fixture
async def client(server: Server) -> AsyncIterator[LineClient]:
    conn = await LineClient.connect(server.port)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
