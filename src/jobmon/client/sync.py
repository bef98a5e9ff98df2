"""``SyncClient``: the client for code without an event loop (a private loop in a thread)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

from .core import Client
from .tracking import Run

T = TypeVar("T")


class SyncClient:
    """``Client`` for code without an event loop: a private loop in a thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 7070, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._client: Client = self._call(_make_client(host, port, options))
        self._call(self._client.start(options.get("connect_timeout_s", 5.0)))

    def _call(self, coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # type: ignore[arg-type]

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._call(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def client(self) -> Client:
        return self._client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not inspect.iscoroutinefunction(method):
            return method

        def blocking(*args: Any, **kwargs: Any) -> Any:
            return self._call(method(*args, **kwargs))

        return blocking

    @contextlib.contextmanager
    def track(
        self, job_id: str, max_retries: int | None = None, attempt: int = 0
    ) -> Iterator[SyncRun]:
        tracker = self._client.track(job_id, max_retries, attempt)
        run = self._call(tracker.__aenter__())
        try:
            yield SyncRun(self, run)
        except BaseException as exc:
            self._call(tracker.__aexit__(type(exc), exc, None))
            raise
        self._call(tracker.__aexit__(None, None, None))


class SyncRun:
    def __init__(self, owner: SyncClient, run: Run) -> None:
        self._owner = owner
        self._run = run
        self.resource_usage = run.resource_usage

    def progress(self, percent: float) -> None:
        self._owner._call(self._run.progress(percent))


async def _make_client(host: str, port: int, options: dict[str, Any]) -> Client:
    return Client(host, port, **options)
