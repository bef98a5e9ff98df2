"""init: Maelstrom's handshake; names this node (the src of lines it sends unprompted)."""

from __future__ import annotations

from typing import Any

from ..errors import malformed
from ..node import Node
from . import fields

NAME = "init"
MUTATES = False


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    node_id = body.get("node_id")
    if type(node_id) is not str or not node_id:
        raise malformed(f"node_id must be a non-empty string, got {fields._show(node_id)}")
    node_ids = body.get("node_ids", [node_id])
    if type(node_ids) is not list or not all(type(n) is str for n in node_ids):
        raise malformed(f"node_ids must be an array of strings, got {fields._show(node_ids)}")
    return (node_id, node_ids)


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    node.node_id, node.node_ids = args
    return fields.reply("init_ok", msg_id)
