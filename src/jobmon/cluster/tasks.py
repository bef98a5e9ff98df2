"""Stopping the cluster's tasks, which spend their lives in calls to Redis.

On Python 3.11, ``asyncio.wait_for`` returns normally when the call it waits
for finished in the same step as its task was cancelled: the cancellation is
lost (fixed in 3.12, where ``wait_for`` is built on ``asyncio.timeout``).
redis-py wraps every socket write in ``wait_for``, so a task cancelled just as
it sends a command carries on as if nothing had happened. A loop of Redis calls
would then never end, and a node stopping would wait for it forever (a clean
stop hung about once in thirty under load). So every loop also checks a flag
before each round, and ``cancel_and_wait`` cancels again until the tasks end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

log = logging.getLogger("jobmon.cluster")
RECANCEL_S = 0.05  # how often a task that has not ended is cancelled again


async def cancel_and_wait(tasks: Iterable[asyncio.Task[None]], timeout_s: float) -> None:
    """Cancel the tasks and wait for them to end, cancelling again while one
    carries on; gives up (and says which) after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    while pending:
        left = deadline - loop.time()
        if left <= 0:
            log.error(
                "tasks did not stop when cancelled",
                extra={"fields": {"tasks": sorted(t.get_name() for t in pending)}},
            )
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_S, left))
    for task in tasks:  # retrieved, so that none is reported as never retrieved
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("a cluster task had failed", exc_info=task.exception())
