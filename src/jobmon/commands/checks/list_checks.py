"""list_checks: every check, or those with all the ``tags`` given and the ``slug``."""

from __future__ import annotations

from typing import Any

from ...errors import malformed
from ...hc.model import MAX_SLUG_CHARS, MAX_TAGS_CHARS
from ...node import Node
from .. import fields
from . import spec

NAME = "list_checks"
MUTATES = False


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    tags = body.get("tags", [])
    if (
        type(tags) is not list
        or len(tags) > 32
        or not all(type(t) is str and len(t) <= MAX_TAGS_CHARS for t in tags)
    ):
        raise malformed(f"tags must be an array of at most 32 strings of {MAX_TAGS_CHARS} or fewer")
    slug = body.get("slug")
    if slug is not None and (type(slug) is not str or len(slug) > MAX_SLUG_CHARS):
        raise malformed(f"slug must be a string of at most {MAX_SLUG_CHARS} characters")
    return (tags, slug or None)


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    tags, slug = args
    out = fields.reply("checks", msg_id)
    out["checks"] = [spec.record(node, c) for c in node.store.checks.matching(tags, slug)]
    return out
