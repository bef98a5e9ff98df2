"""start_job: run an allowed command on the server's machine as a monitored job."""

from __future__ import annotations

from typing import Any

from ..errors import Code, RequestError, malformed
from ..node import Node
from . import fields

NAME = "start_job"
MUTATES = False  # the launch is not replayed; the run's own reports are journaled


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    job_id = fields.job_id(body)
    command = body.get("command")
    if type(command) is not str or not 0 < len(command) <= fields.MAX_JOB_ID_CHARS:
        raise malformed(
            f"command must be the name of an allowed command, got {fields._show(command)}"
        )
    info = fields.run_info({"arguments": body.get("arguments", [])})
    arguments = info["arguments"] if info else []
    retries = fields.integer(body, "max_retries") or 0
    retry_delay_ms = fields.span_ms(body, "retry_delay_ms", 0) or 0
    memory_limit_mb = fields.number(body, "memory_limit_mb", 1)
    action = body.get("memory_action", "alert")
    if action not in ("alert", "kill"):
        raise malformed(f"memory_action must be alert or kill, got {fields._show(action)}")
    timeout_ms = fields.span_ms(body, "timeout_ms")
    heartbeat_ms = fields.span_ms(body, "heartbeat_ms")
    return (
        job_id,
        command,
        arguments,
        retries,
        retry_delay_ms,
        memory_limit_mb,
        action,
        None if timeout_ms is None else timeout_ms / 1000,
        heartbeat_ms,
    )


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    job_id, command, arguments, retries, delay_ms, memory_mb, action, timeout_s, beat_ms = args
    launcher = node.launcher
    if launcher is not None and launcher.closed:
        raise RequestError(
            Code.PRECONDITION_FAILED, "the server is shutting down: it starts no more jobs"
        )
    allowed = launcher.allowed if launcher is not None else {}
    path = allowed.get(command)
    if launcher is None or path is None:
        if not allowed:
            raise RequestError(
                Code.NOT_SUPPORTED,
                f"command {command!r} is not allowed: this server allows no commands "
                "(its operator allows them with --allow-command NAME=PATH, with --token)",
            )
        raise RequestError(
            Code.NOT_SUPPORTED,
            f"command {command!r} is not allowed: this server runs only the commands "
            f"its operator listed with --allow-command NAME=PATH "
            f"(allowed: {', '.join(sorted(allowed))})",
        )
    from ..runner import RunSpec  # imported at start by the Launcher (launcher.py)

    launcher.launch(
        RunSpec(
            job_id=job_id,
            argv=[path, *arguments],
            retries=retries,
            retry_delay_ms=delay_ms,
            memory_limit_mb=memory_mb,
            memory_action=action,
            timeout_s=timeout_s,
            heartbeat_ms=beat_ms,
            count_reaped_children=False,  # the server has other children
        )
    )
    out = fields.reply("job_started", msg_id)
    out["job_id"] = job_id
    out["command"] = command
    out["arguments"] = arguments
    return out
