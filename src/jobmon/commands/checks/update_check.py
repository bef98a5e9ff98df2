"""update_check: change the settings it names; the rest stay."""

from __future__ import annotations

from typing import Any

from ... import channels
from ...node import Node
from .. import fields
from . import spec

NAME = "update_check"
MUTATES = True


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    return (spec.check_uuid(body, "check"), spec.settings(body))


def channels_of(args: Any) -> Any:
    return args[1].get("channels")


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    key, settings = args
    channels.known(node.channels, channels_of(args))
    check = spec.found(node, key)
    node.store.checks.update(now, check, settings)
    out = fields.reply("check", msg_id)
    out["check"] = spec.record(node, check)
    return out
