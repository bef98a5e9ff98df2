"""get_cluster: this node, the leader, the nodes, and how far this node is behind the log."""

from __future__ import annotations

from typing import Any

from ..node import Node
from . import fields

NAME = "get_cluster"
MUTATES = False


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    return ()


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    out = fields.reply("cluster", msg_id)
    if node.cluster is None:  # one process with its own journal: it is the whole monitor
        out.update(
            {
                "node_id": node.node_id,
                "leader": node.node_id,
                "nodes": [node.node_id],
                "role": "embedded",
                "caught_up": True,
            }
        )
        return out
    out.update(node.cluster.info())
    return out
