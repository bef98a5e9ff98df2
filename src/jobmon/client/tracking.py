"""``track``: a run reported around a block or a function, measured here
(wall time, this process's CPU and memory); a reporting problem never raises."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import resource
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import JobmonError

if TYPE_CHECKING:
    from .messages import Messages

log = logging.getLogger("jobmon.client")
T = TypeVar("T")


class Run:
    """The run inside ``track``: report progress, add resource usage."""

    def __init__(self, client: Messages, job_id: str, attempt: int) -> None:
        self.client = client
        self.job_id = job_id
        self.attempt = attempt
        self.resource_usage: dict[str, float] = {}

    async def progress(self, percent: float) -> None:
        await quietly(self.client.update_status(self.job_id, "running", progress=percent))


class Tracker:
    """``async with client.track(job_id) as run`` or ``@client.track(job_id)``.

    Reports ``running`` on entry; on exit ``job_completed`` with the duration
    and resource usage measured here, or ``job_failed`` with the exception. The
    exception is never swallowed, and a reporting problem never raises.
    As a decorator it also retries: up to ``max_retries`` more attempts,
    ``retry_delay_s`` apart, each failure reported with its ``retries`` count.
    """

    def __init__(
        self,
        client: Messages,
        job_id: str,
        max_retries: int | None,
        attempt: int,
        retry_delay_s: float,
    ) -> None:
        self.client = client
        self.job_id = job_id
        self.max_retries = max_retries
        self.attempt = attempt
        self.retry_delay_s = retry_delay_s
        self._measure: _Measure | None = None
        self._run: Run | None = None

    async def __aenter__(self) -> Run:
        self._measure = _Measure()
        self._run = Run(self.client, self.job_id, self.attempt)
        await quietly(
            self.client.update_status(self.job_id, "running", max_retries=self.max_retries)
        )
        return self._run

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        assert self._measure is not None and self._run is not None
        duration_ms, usage = self._measure.done()
        usage.update(self._run.resource_usage)
        if exc is None:
            await quietly(self.client.completed(self.job_id, duration_ms, usage))
        elif isinstance(exc, Exception):
            error = f"{type(exc).__name__}: {exc}"
            await quietly(self.client.failed(self.job_id, error, self.attempt, self.max_retries))

    def __call__(self, func: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(func)
        async def tracked(*args: Any, **kwargs: Any) -> T:
            limit = self.max_retries or 0
            for attempt in range(limit + 1):
                tracker = Tracker(self.client, self.job_id, self.max_retries, attempt, 0)
                try:
                    async with tracker:
                        return await func(*args, **kwargs)
                except Exception:
                    if attempt == limit:
                        raise
                    await asyncio.sleep(self.retry_delay_s)
            raise AssertionError("unreachable")

        return tracked


class _Measure:
    """Wall time and this process's CPU and memory over a run."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu_started = usage.ru_utime + usage.ru_stime

    def done(self) -> tuple[int, dict[str, float]]:
        wall = time.perf_counter() - self.started
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime - self.cpu_started
        return round(wall * 1000), {
            "cpu_percent": round(cpu / wall * 100, 1) if wall > 0 else 0.0,
            "memory_mb": round(_rss_mb(), 1),
        }


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: the peak, as the OS keeps it (KiB on Linux and BSD)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def quietly(report: Awaitable[Any]) -> None:
    """Monitoring never breaks the job: a refused report is logged, not raised."""
    try:
        await report
    except JobmonError as exc:
        log.warning("jobmon refused a report: %s", exc.text)
