"""ping_check: one ping of Healthchecks' pinging API, by the check's uuid or by
its slug (``create``: made on its first ping, with the uuid and channels the
edge chose). It is kept in the check's log and told to its job as the event
it stands for: ``start`` (running), ``success`` (completed, its duration since
its start), ``fail`` (failed, final), ``log`` (only kept); ``rid`` names the
run (run_id), so overlapping runs are measured apart."""

from __future__ import annotations

from typing import Any

from ... import channels
from ...errors import Code, RequestError, malformed
from ...hc import model
from ...node import Node
from .. import fields, run_ids
from . import spec

NAME = "ping_check"
MUTATES = True
KINDS = ("success", "start", "fail", "log")
_META = (("scheme", 16), ("remote_addr", 64), ("method", 16), ("ua", model.MAX_UA_CHARS))


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    if "slug" in body:
        slug = body["slug"]
        if type(slug) is not str or not slug or not spec.SLUG.fullmatch(slug):
            raise malformed("slug must be a non-empty string of a-z, 0-9, hyphens, underscores")
        target = ["slug", slug]
    else:
        target = ["uuid", spec.check_uuid(body, "check")]
    kind = body.get("kind", "success")
    if kind not in KINDS:
        raise malformed(f"kind must be one of {', '.join(KINDS)}, got {fields._show(kind)}")
    exit_status = body.get("exit_status")
    if exit_status is not None:
        if type(exit_status) is not int or not 0 <= exit_status <= 255:
            raise malformed(
                f"exit_status must be an integer 0-255, got {fields._show(exit_status)}"
            )
        kind = "success" if exit_status == 0 else "fail"
    meta = []
    for name, limit in _META:
        value = body.get(name, "")
        if type(value) is not str:
            raise malformed(f"{name} must be a string")
        meta.append(value[:limit])
    text = body.get("body")
    if text is not None and (type(text) is not str or len(text) > model.PING_BODY_LIMIT):
        raise malformed(f"body must be a string of at most {model.PING_BODY_LIMIT} characters")
    create = None
    if body.get("create") is not None:
        given = body["create"]
        if type(given) is not dict:
            raise malformed('create must be {"uuid": .., "channels": [..]}')
        create = [spec.check_uuid(given), channels.names(given.get("channels"))]
    rid = run_ids.parse({"run_id": body["rid"]}) if body.get("rid") is not None else None
    return (target, kind, rid, exit_status, meta, text or None, create)


def channels_of(args: Any) -> Any:
    return args[6][1] if args[6] is not None else None


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    (how, key), kind, rid, exit_status, meta, text, create = args
    # A create's channels are refused whether or not the check exists, as a cluster does.
    channels.known(node.channels, channels_of(args))
    checks = node.store.checks
    created = False
    if how == "uuid":
        check = checks.get(key)
    else:
        matches = checks.by_slug(key)
        if len(matches) > 1:
            raise RequestError(Code.PRECONDITION_FAILED, f"ambiguous slug: {len(matches)} checks")
        if matches:
            check = matches[0]
        elif create is not None:
            settings = {"name": key, "slug": key, "channels": create[1]}
            check, created = checks.upsert(now, create[0], settings, [])
        else:
            raise RequestError(Code.NOT_FOUND, f"no check with slug {key!r}")
    ping = checks.ping(now, check, kind, rid, exit_status, meta, text)
    out = fields.reply("check_pinged", msg_id)
    out["check"] = check.uuid
    out["job_id"] = check.job_id
    out["n"] = ping[model.P_N]
    out["kind"] = ping[model.P_KIND]
    out["created"] = created
    return out
