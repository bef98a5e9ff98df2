"""init: Maelstrom's handshake; names this node (the src of lines it sends unprompted)."""

from __future__ import annotations

from typing import Any

from ..errors import malformed
from ..node import Node
from . import fields

NAME = "init"
MUTATES = False
# node_id is the src of every enveloped reply: kept short.
MAX_NODE_ID_CHARS = fields.MAX_JOB_ID_CHARS
MAX_NODES = 1024


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    node_id = body.get("node_id")
    if type(node_id) is not str or not 0 < len(node_id) <= MAX_NODE_ID_CHARS:
        raise malformed(
            f"node_id must be a non-empty string of at most {MAX_NODE_ID_CHARS} characters, "
            f"got {fields._show(node_id)}"
        )
    node_ids = body.get("node_ids", [node_id])
    if (
        type(node_ids) is not list
        or len(node_ids) > MAX_NODES
        or not all(type(n) is str and len(n) <= MAX_NODE_ID_CHARS for n in node_ids)
    ):
        raise malformed(
            f"node_ids must be an array of at most {MAX_NODES} strings of at most "
            f"{MAX_NODE_ID_CHARS} characters, got {fields._show(node_ids)}"
        )
    return (node_id, node_ids)


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    node.node_id, node.node_ids = args
    return fields.reply("init_ok", msg_id)
