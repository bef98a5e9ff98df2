"""What the check messages share: a check's settings as Healthchecks' API
takes them (checked here, at the edge), and the uuid or key that names one."""

from __future__ import annotations

import re
import uuid as uuidlib
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from ... import channels
from ...errors import malformed
from ...hc import model
from ...node import Node
from ..fields import _show

SLUG = re.compile(r"[a-z0-9_-]*")
UNIQUE_FIELDS = ("name", "slug", "tags", "timeout", "grace")
_STRINGS = (
    ("name", model.MAX_NAME_CHARS),
    ("tags", model.MAX_TAGS_CHARS),
    ("desc", model.MAX_DESC_CHARS),
)


def check_uuid(body: dict[str, Any], name: str = "uuid") -> str:
    """A check's uuid in canonical form (what the edge generated, or the caller chose)."""
    value = body.get(name)
    try:
        if type(value) is not str:
            raise ValueError
        canonical = str(uuidlib.UUID(value))
    except ValueError:
        raise malformed(
            f"{name} must be a UUID such as 123e4567-e89b-12d3-a456-426614174000, "
            f"got {_show(value)}"
        ) from None
    if canonical != value.lower():
        raise malformed(f"{name} must be a UUID in its canonical form, got {value!r}")
    return canonical


def check_key(body: dict[str, Any]) -> str:
    """``check``: a uuid, or Healthchecks' read-only unique_key (40 hex digits)."""
    value = body.get("check")
    if type(value) is str and re.fullmatch(r"[0-9a-f]{40}", value):
        return value
    return check_uuid(body, "check")


def settings(body: dict[str, Any]) -> dict[str, Any]:
    """The settings a create or update names, checked; absent ones stay as they are."""
    spec: dict[str, Any] = {}
    for name, limit in _STRINGS:
        if name in body:
            value = body[name]
            if type(value) is not str or len(value) > limit or "\x00" in value:
                raise malformed(f"{name} must be a string of at most {limit} characters")
            spec[name] = value
    if "tags" in spec:
        spec["tags"] = " ".join(spec["tags"].split())
    if "slug" in body:
        slug = body["slug"]
        if type(slug) is not str or len(slug) > model.MAX_SLUG_CHARS or not SLUG.fullmatch(slug):
            raise malformed(
                f"slug must be at most {model.MAX_SLUG_CHARS} characters of a-z, 0-9, "
                f"hyphens and underscores, got {_show(slug)}"
            )
        spec["slug"] = slug
    for name in ("timeout", "grace"):
        if name in body:
            value = body[name]
            if type(value) is not int or not model.MIN_PERIOD_S <= value <= model.MAX_PERIOD_S:
                raise malformed(
                    f"{name} must be a whole number of seconds between {model.MIN_PERIOD_S} "
                    f"and {model.MAX_PERIOD_S}, got {_show(value)}"
                )
            spec[name] = value
    if "tz" in body:
        spec["tz"] = _tz(body["tz"])
    if "schedule" in body:
        spec["schedule"] = _cron(body["schedule"], spec.get("tz", "UTC"))
    if "manual_resume" in body:
        if type(body["manual_resume"]) is not bool:
            raise malformed(
                f"manual_resume must be true or false, got {_show(body['manual_resume'])}"
            )
        spec["manual_resume"] = body["manual_resume"]
    if "methods" in body:
        if body["methods"] not in ("", "POST"):
            raise malformed('methods must be "" (HEAD, GET and POST) or "POST"')
        spec["methods"] = body["methods"]
    if "channels" in body:
        spec["channels"] = channels.names(body["channels"])
    return spec


def unique(body: dict[str, Any]) -> list[str]:
    value = body.get("unique", [])
    if type(value) is not list or not all(v in UNIQUE_FIELDS for v in value):
        raise malformed(f"unique must be an array drawn from {', '.join(UNIQUE_FIELDS)}")
    return sorted(set(value))


def _tz(value: Any) -> str:
    if type(value) is not str or not value or len(value) > 64:
        raise malformed(f"tz must be an IANA time zone such as Europe/Riga, got {_show(value)}")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, IsADirectoryError):
        raise malformed(f"tz {value!r} is not an IANA time zone (such as Europe/Riga)") from None
    return value


def _cron(value: Any, tz: str) -> str:
    if type(value) is not str or len(value) > model.MAX_SCHEDULE_CHARS:
        raise malformed(
            f"schedule must be a cron expression of at most {model.MAX_SCHEDULE_CHARS} characters"
        )
    if "\n" in value.strip() or len(value.split()) != 5:
        raise malformed(
            f"schedule {value!r} is not a five-field cron expression (jobmon does not read "
            "systemd OnCalendar expressions)"
        )
    try:
        next(CronSim(value, datetime.now(ZoneInfo(tz))))
    except (CronSimError, StopIteration) as exc:
        raise malformed(f"schedule {value!r} is not a valid cron expression: {exc}") from None
    return value


def found(node: Node, key: str) -> model.Check:
    return node.store.checks.get(key)


def record(node: Node, check: model.Check) -> dict[str, Any]:
    return model.record(check, node.store.checks.job_of(check), node.now)
