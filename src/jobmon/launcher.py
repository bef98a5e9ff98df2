"""Jobs the server starts itself (``start_job``, ``POST /api/jobs``): only the
commands the operator listed with ``--allow-command NAME=PATH``, with arguments
passed as a list (never through a shell), run by the same runner as
``jobmon run`` and reported through the engine like any worker's events.

Remote code execution by design, so the server refuses to start with allowed
commands and no ``--token``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import runner
    from .engine import Engine

log = logging.getLogger("jobmon.launcher")


class Launcher:
    def __init__(self, engine: Engine, allowed: dict[str, str]) -> None:
        # Imported here, at the start of a server that allows commands (the
        # runner and psutil are a tenth of `serve`'s imports, and most servers
        # allow none), never by a later request.
        global runner
        from . import runner

        self.engine = engine
        self.allowed = allowed  # command name -> executable path
        self.running: dict[asyncio.Task[runner.RunResult], runner.RunSpec] = {}
        self.closed = False  # shutting down: start_job is refused

    def launch(self, spec: runner.RunSpec) -> None:
        """Start the run in the background (called from the store task: no await)."""
        task = asyncio.get_running_loop().create_task(self._run(spec), name=f"job-{spec.job_id}")
        self.running[task] = spec
        task.add_done_callback(self._finished)

    async def _run(self, spec: runner.RunSpec) -> runner.RunResult:
        result = await runner.run(spec, self._report, runner.discard, runner.discard)
        log.info(
            "launched job finished",
            extra={
                "fields": {
                    "job_id": spec.job_id,
                    "exit_code": result.exit_code,
                    "attempts": len(result.attempts),
                }
            },
        )
        return result

    async def _report(self, body: dict[str, Any]) -> object:
        # Stamped like jobmon.client's events: a report sent again applies once.
        (reply,) = await self.engine.ask([{**body, "event_id": uuid.uuid4().hex}])
        return reply

    def _finished(self, task: asyncio.Task[runner.RunResult]) -> None:
        spec = self.running.pop(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("launched job %s failed to run", spec.job_id, exc_info=task.exception())

    async def stop(self) -> int:
        """Shutdown: stop what is still running (the runner stops each process
        tree and reports the run); returns how many were stopped."""
        self.closed = True
        tasks = list(self.running)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        return len(tasks)
