"""What one command may touch: the store plus the node's identity."""

from __future__ import annotations

from .store import Store


class Node:
    def __init__(self, store: Store, node_id: str = "monitor") -> None:
        self.store = store
        self.node_id = node_id
        self.node_ids: list[str] = [node_id]
