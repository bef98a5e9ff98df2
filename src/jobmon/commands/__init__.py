"""The dispatch table: message type -> the command module that parses and applies it."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple, Protocol

from .. import channels
from ..node import Node
from . import (
    auth,
    get_alerts,
    get_analytics,
    get_cluster,
    get_job,
    get_stats,
    heartbeat,
    init,
    job_completed,
    job_failed,
    list_jobs,
    once,
    pause_job,
    register_job,
    resume_job,
    start_job,
    subscribe,
    unregister_job,
    update_status,
)
from .checks import MODULES as CHECK_MODULES


class Parse(Protocol):
    def __call__(self, body: dict[str, Any]) -> tuple[Any, ...]: ...


class Apply(Protocol):
    def __call__(self, node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]: ...


class Handler(NamedTuple):
    name: str
    mutates: bool  # True: journaled, so replay re-applies it
    parse: Parse
    apply: Apply
    # The hottest messages also declare a msgspec Struct, decoded and checked in
    # C, and how to turn it into parse's arguments (protocol.decode's fast path).
    wire: type | None
    from_wire: Callable[[Any], tuple[Any, ...]] | None
    # Connection-scoped commands (subscribe) get the request's framing as their
    # last argument, to frame what they push later the same way.
    wants_frame: bool
    # The journal record's name: the type, except for an event with an event_id (once).
    record: str
    # The --notify channel names a job-setting message picks (``channels_of(args)``),
    # for the check made before a cluster proposes it (``unknown_channels``).
    channels_of: Callable[[Any], Any] | None


def _handler(module: ModuleType) -> Handler:
    return Handler(
        module.NAME,
        module.MUTATES,
        module.parse,
        module.apply,
        getattr(module, "Wire", None),
        getattr(module, "from_wire", None),
        getattr(module, "WANTS_FRAME", False),
        module.NAME,
        getattr(module, "channels_of", None),
    )


def unknown_channels(handler: Handler, args: Any, configured: frozenset[str]) -> None:
    """Refuse (RequestError) a message naming a channel this server lacks. A
    node applies what the log holds unchecked (its apply sees ``node.channels``
    None), so a cluster checks here, before proposing; the embedded engine checks
    in the apply itself, which costs the other messages nothing."""
    if handler.channels_of is not None:
        inner = args[2] if handler.record == once.RECORD else args
        channels.known(configured, handler.channels_of(inner))


HANDLERS: dict[str, Handler] = {
    h.name: h
    for h in map(
        _handler,
        (
            init,
            auth,
            get_analytics,
            update_status,
            job_completed,
            job_failed,
            get_stats,
            get_job,
            list_jobs,
            heartbeat,
            register_job,
            unregister_job,
            pause_job,
            resume_job,
            start_job,
            subscribe,
            get_alerts,
            *CHECK_MODULES,
            get_cluster,
        ),
    )
}

# A state-changing message that carries event_id: counted under its own type,
# applied (and journaled) as commands.once.
ONCE: dict[str, Handler] = {
    h.name: h._replace(apply=once.apply, record=once.RECORD, wire=None, from_wire=None)
    for h in HANDLERS.values()
    if h.mutates
}
once.TARGETS.update((name, HANDLERS[name]) for name in ONCE)

# The fast path of a hot event with a run_id (commands.run_ids): its Wire
# struct's arguments as the event's ``parse`` makes them.
RUN_WIRES: dict[str, Callable[[Any], tuple[Any, ...]]] = {
    module.NAME: module.from_run_wire
    for module in (update_status, job_completed, job_failed, heartbeat)
}
