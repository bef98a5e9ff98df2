"""Running a command as a monitored job: its process tree, output, limits, retries, reports.

``run(spec, report)`` starts ``spec.argv`` (never through a shell) in its own
session, so the whole tree can be stopped; passes its stdout and stderr through
as they come, keeping a tail of stderr; samples the tree's memory and CPU with
psutil; stops the tree (SIGTERM to the process group, SIGKILL 2 s later) on a
timeout or, with ``memory_action="kill"``, over the memory limit; retries
failed attempts. Every protocol message goes through ``report`` (one message
body; ``jobmon.client.Client.send_event`` fits), and a reporting problem is
logged, never raised: monitoring never breaks the job.

    result = await run(RunSpec("nightly-backup", ["pg_dump", "db"], retries=2), client.send_event)

``Runner`` is the same with a handle: ``interrupt(signum)`` forwards a signal
to the running tree and ends the run after the current attempt (reported
``cancelled`` unless the command then exits 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal

from . import proctree
from .proctree import (
    MAXRSS_PER_MB,
    OutputProtocol,
    ProcessTree,
    Sink,
    Tail,
)

log = logging.getLogger("jobmon.runner")

Report = Callable[[dict[str, Any]], Awaitable[object]]
MemoryAction = Literal["kill", "alert"]

SAMPLE_S = 0.05  # the tree is sampled this often for its first second, then every...
SAMPLE_SLOW_S = 0.1
PIPE_GRACE_S = 1.0  # the pipes may stay open this long after the command exits
REPORT_TIMEOUT_S = 5.0  # a report that takes longer is given up on (a queued event still goes)
CANCEL_REPORT_TIMEOUT_S = 1.0  # the last word of a cancelled run (e.g. at a server's shutdown)
OUTPUT_LINES = 40  # ``output``: the stderr tail sent with a failure
OUTPUT_CHARS = 4096  # (the server takes up to 8192)
ERROR_LINES = 5  # the last stderr lines in ``error`` (the alert's text)
ERROR_CHARS = 1000
MAX_ARGUMENTS = 256  # what the server accepts of ``arguments`` (commands/fields.py)
MAX_ARGUMENT_CHARS = 4096
MAX_ARGUMENTS_CHARS = 8192  # all of them together
EXIT_TIMEOUT = 124  # as coreutils timeout
EXIT_NOT_FOUND = 127  # as a shell
EXIT_NOT_EXECUTABLE = 126


def reported_arguments(arguments: list[str]) -> list[str]:
    """What the server keeps of a command's arguments: the first ones, cut to its caps."""
    out: list[str] = []
    room = MAX_ARGUMENTS_CHARS
    for argument in arguments[:MAX_ARGUMENTS]:
        if room <= 0:
            break
        kept = argument[: min(MAX_ARGUMENT_CHARS, room)]
        out.append(kept)
        room -= len(kept)
    return out


@dataclass
class RunSpec:
    """What to run and how to watch it."""

    job_id: str
    argv: list[str]
    retries: int = 0  # attempts after the first, each after retry_delay_ms
    retry_delay_ms: int = 0
    memory_limit_mb: float | None = None
    memory_action: MemoryAction = "alert"
    timeout_s: float | None = None  # per attempt
    heartbeat_ms: int | None = None
    cwd: str | None = None
    env: dict[str, str] | None = None  # None: this process's environment
    inherit_stdin: bool = False  # else the command reads /dev/null
    # Add what the kernel counted for reaped children (RUSAGE_CHILDREN) to the
    # samples: right in `jobmon run` (one child), wrong inside the server, whose
    # other children (other launches, the compaction fork) it would count too.
    count_reaped_children: bool = True

    def __post_init__(self) -> None:
        if not self.argv:
            raise ValueError("RunSpec.argv is empty: nothing to run")
        if self.memory_action not in ("kill", "alert"):
            raise ValueError(f"memory_action must be 'kill' or 'alert', got {self.memory_action!r}")


Outcome = Literal["completed", "failed", "timeout", "memory", "cancelled"]


@dataclass
class Attempt:
    """One execution of the command."""

    retries: int  # 0 for the first attempt
    outcome: Outcome
    exit_code: int  # as a shell reports it: 128+signal when killed, 124 on a timeout
    duration_ms: int
    cpu_percent: float
    memory_mb: float  # peak RSS of the whole tree
    error: str | None  # None when it completed
    output: str  # the stderr tail

    @property
    def resource_usage(self) -> dict[str, float]:
        return {"cpu_percent": self.cpu_percent, "memory_mb": self.memory_mb}


@dataclass
class RunResult:
    exit_code: int  # the last attempt's
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].outcome == "completed"

    @property
    def output(self) -> str:
        return self.attempts[-1].output if self.attempts else ""


async def run(
    spec: RunSpec,
    report: Report,
    out: Sink | None = None,
    err: Sink | None = None,
) -> RunResult:
    """Run ``spec`` to its end (all attempts). ``out``/``err`` receive the
    command's output as it comes (default: this process's stdout/stderr;
    pass ``discard`` to drop it)."""
    return await Runner(spec, report, out, err).run()


def discard(data: bytes) -> None:
    """A sink that drops output (the stderr tail is kept regardless)."""


def stream_sink(stream: BinaryIO) -> Sink:
    """Write each chunk to ``stream`` and flush; stop writing if the reader has gone."""
    broken = False

    def write(data: bytes) -> None:
        nonlocal broken
        if broken:
            return
        try:
            stream.write(data)
            stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            broken = True  # e.g. ``jobmon run ... | head``: the command keeps running

    return write


class Runner:
    def __init__(
        self,
        spec: RunSpec,
        report: Report,
        out: Sink | None = None,
        err: Sink | None = None,
    ) -> None:
        self.spec = spec
        self.report = report
        self.out = out if out is not None else stream_sink(sys.stdout.buffer)
        self.err = err if err is not None else stream_sink(sys.stderr.buffer)
        self.interrupted: int | None = None  # the signal that ended the run early
        self._tree: ProcessTree | None = None
        self._wake = asyncio.Event()
        self.arguments = reported_arguments(spec.argv[1:])

    def interrupt(self, signum: int = signal.SIGTERM) -> None:
        """Forward ``signum`` to the running command's process group; no more attempts."""
        self.interrupted = signum
        self._wake.set()
        if self._tree is not None:
            self._tree.signal_group(signum)

    async def run(self) -> RunResult:
        spec = self.spec
        result = RunResult(exit_code=0)
        beating: asyncio.Task[None] | None = None
        try:
            for index in range(spec.retries + 1):
                await self._send(
                    {
                        "type": "update_status",
                        "job_id": spec.job_id,
                        "status": "running",
                        "max_retries": spec.retries,
                    }
                )
                if beating is None and spec.heartbeat_ms:
                    beating = asyncio.get_running_loop().create_task(self._heartbeats())
                attempt = await self._attempt(index)
                result.attempts.append(attempt)
                result.exit_code = attempt.exit_code
                if beating is not None:  # no heartbeat may follow the run's outcome
                    beating.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await beating
                    beating = None
                await self._send(self._outcome_report(attempt))
                if attempt.outcome in ("completed", "cancelled") or index == spec.retries:
                    break
                if spec.retry_delay_ms:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), spec.retry_delay_ms / 1000)
                if self.interrupted is not None:  # during the delay: the run is over
                    await self._send(
                        {"type": "update_status", "job_id": spec.job_id, "status": "cancelled"}
                    )
                    break
        except asyncio.CancelledError:
            # Cancelled from outside (a server shutting down): _attempt has stopped
            # the tree; say so, briefly, and go on being cancelled.
            await self._send(
                {"type": "update_status", "job_id": spec.job_id, "status": "cancelled"},
                CANCEL_REPORT_TIMEOUT_S,
            )
            raise
        finally:
            if beating is not None:
                beating.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beating
        return result

    # -- one attempt -------------------------------------------------------------
    async def _attempt(self, index: int) -> Attempt:
        spec = self.spec
        loop = asyncio.get_running_loop()
        tail = Tail()
        protocol = OutputProtocol(self.out, self.err, tail)
        usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        try:
            transport, _ = await loop.subprocess_exec(
                lambda: protocol,
                *spec.argv,
                stdin=None if spec.inherit_stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=spec.cwd,
                env=spec.env,
                start_new_session=True,  # its own process group: the tree can be stopped
            )
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in an argument
            code = EXIT_NOT_FOUND if isinstance(exc, FileNotFoundError) else EXIT_NOT_EXECUTABLE
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            text = f"cannot run {spec.argv[0]!r}: {reason}"
            self.err(f"jobmon run: {text}\n".encode())
            return Attempt(index, "failed", code, 0, 0.0, 0.0, text, text)
        pid = transport.get_pid()
        tree = self._tree = ProcessTree(pid)
        if self.interrupted is not None:
            tree.signal_group(self.interrupted)
        stopping: asyncio.Task[None] | None = None
        stopped_for: Outcome | None = None  # "timeout" or "memory" once the runner stops it
        over_reported = False
        limit = spec.memory_limit_mb
        deadline = None if spec.timeout_s is None else started + spec.timeout_s
        try:
            while not protocol.exited.is_set():
                memory_mb = tree.sample()
                now = time.monotonic()
                if limit is not None and memory_mb > limit and not over_reported:
                    over_reported = True
                    if spec.memory_action == "kill" and stopped_for is None:
                        stopped_for = "memory"
                        tree.over_mb = memory_mb
                        stopping = loop.create_task(tree.terminate(protocol.exited))
                    await self._send(
                        {
                            "type": "update_status",
                            "job_id": spec.job_id,
                            "status": "running",
                            "resource_usage": {"memory_mb": round(memory_mb, 1)},
                            "memory_limit_mb": limit,
                        }
                    )
                if deadline is not None and now >= deadline and stopped_for is None:
                    stopped_for = "timeout"
                    stopping = loop.create_task(tree.terminate(protocol.exited))
                pause = SAMPLE_S if now - started < 1.0 else SAMPLE_SLOW_S
                if deadline is not None and stopped_for is None:
                    pause = max(0.0, min(pause, deadline - now))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(protocol.exited.wait(), pause)
            # Background children may hold the pipes open: give them a moment, then stop reading.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(protocol.closed.wait(), PIPE_GRACE_S)
        except asyncio.CancelledError:
            # The run itself was cancelled (e.g. the server shuts down): stop the tree.
            await asyncio.shield(tree.terminate(protocol.exited))
            transport.close()
            raise
        finally:
            self._tree = None
        if stopping is not None:
            await stopping
        wall = time.monotonic() - started
        returncode = transport.get_returncode()
        transport.close()
        usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = tree.cpu_s()
        peak_mb = tree.peak_mb
        if spec.count_reaped_children:
            # What the samples missed (children that came and went between them)
            # the kernel counted for the children this process has waited for.
            cpu_s = max(
                cpu_s,
                (usage_after.ru_utime + usage_after.ru_stime)
                - (usage_before.ru_utime + usage_before.ru_stime),
            )
            if usage_after.ru_maxrss > usage_before.ru_maxrss:  # the largest single child
                peak_mb = max(peak_mb, usage_after.ru_maxrss / MAXRSS_PER_MB)
        exit_code = proctree.exit_code(returncode)
        output = tail.text(OUTPUT_LINES, OUTPUT_CHARS)
        outcome: Outcome
        if stopped_for == "timeout":
            outcome, exit_code = "timeout", EXIT_TIMEOUT
            error = f"timed out after {spec.timeout_s:g} s"
        elif stopped_for == "memory":
            outcome = "memory"
            error = f"killed: memory {tree.over_mb:.0f} MB over the limit of {limit:g} MB"
        elif returncode == 0:
            outcome, error = "completed", None
        elif self.interrupted is not None:
            outcome = "cancelled"
            error = f"interrupted by {signal.Signals(self.interrupted).name}"
        else:
            outcome = "failed"
            error = proctree.exit_text(returncode)
            last = tail.text(ERROR_LINES, ERROR_CHARS)
            if last:
                error += ": " + last
        return Attempt(
            retries=index,
            outcome=outcome,
            exit_code=exit_code,
            duration_ms=round(wall * 1000),
            cpu_percent=round(cpu_s / wall * 100, 1) if wall > 0 else 0.0,
            memory_mb=round(peak_mb, 1),
            error=error,
            output=output,
        )

    # -- reports ---------------------------------------------------------------------
    def _outcome_report(self, attempt: Attempt) -> dict[str, Any]:
        spec = self.spec
        body: dict[str, Any]
        if attempt.outcome == "completed":
            body = {
                "type": "job_completed",
                "job_id": spec.job_id,
                "duration_ms": attempt.duration_ms,
                "resource_usage": attempt.resource_usage,
                "arguments": self.arguments,
                "exit_code": attempt.exit_code,
            }
        elif attempt.outcome == "cancelled":
            # Stopped from outside (Ctrl-C, a shutdown): not a failure to retry or alert on.
            return {"type": "update_status", "job_id": spec.job_id, "status": "cancelled"}
        else:
            body = {
                "type": "job_failed",
                "job_id": spec.job_id,
                "error": attempt.error,
                "retries": attempt.retries,
                "max_retries": spec.retries,
                "exit_code": attempt.exit_code,
                "arguments": self.arguments,
                "output": attempt.output,
                "resource_usage": attempt.resource_usage,
            }
        if spec.memory_limit_mb is not None:
            body["memory_limit_mb"] = spec.memory_limit_mb
        return body

    async def _heartbeats(self) -> None:
        assert self.spec.heartbeat_ms
        every_s = self.spec.heartbeat_ms / 1000
        ttl_ms = 3 * self.spec.heartbeat_ms
        # for_run: the server stops expecting heartbeats when this run ends.
        body = {"type": "heartbeat", "job_id": self.spec.job_id, "ttl_ms": ttl_ms, "for_run": True}
        while True:
            await self._send(dict(body))
            await asyncio.sleep(every_s)

    async def _send(self, body: dict[str, Any], timeout_s: float = REPORT_TIMEOUT_S) -> None:
        """One report; a problem with it is logged, never raised."""
        try:
            await asyncio.wait_for(self.report(body), timeout_s)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            log.warning(
                "no answer to %s for job %s within %g s", body["type"], body["job_id"], timeout_s
            )
        except Exception as exc:
            log.warning("reporting %s for job %s failed: %s", body["type"], body["job_id"], exc)
