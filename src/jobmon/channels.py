"""Notification channels: ``--notify URL`` (gets every alert) and ``--notify
NAME=URL`` (a named channel: gets the alerts of jobs whose ``channels`` name it)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import malformed

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_CHANNELS = 64  # per job
# Channel ids as Healthchecks clients see them: stable, derived from the name.
_NAMESPACE = uuid.UUID("5a0c3d4e-6a37-4c84-9a4e-7c0d9f1b2e61")


@dataclass(frozen=True)
class Channel:
    name: str | None  # None: unnamed, gets everything
    url: str

    @property
    def kind(self) -> str:
        return self.url.split("://", 1)[0].lower() if "://" in self.url else "apprise"

    @property
    def id(self) -> str:
        return str(uuid.uuid5(_NAMESPACE, self.name or self.url))


def parse_spec(text: str) -> Channel:
    """``NAME=URL`` or ``URL``: a NAME is letters, digits, ``_.-`` before the first ``=``."""
    name, sep, url = text.partition("=")
    if sep and NAME.fullmatch(name) and "://" in url:
        return Channel(name, url)
    return Channel(None, text)


def parse_all(specs: list[str]) -> list[Channel]:
    return [parse_spec(spec) for spec in specs]


def names(value: Any, field: str = "channels") -> list[str]:
    """A job's ``channels``: a list of channel names (null: none)."""
    if value is None:
        return []
    if (
        type(value) is not list
        or len(value) > MAX_CHANNELS
        or not all(type(v) is str and NAME.fullmatch(v) for v in value)
    ):
        raise malformed(
            f"{field} must be an array of at most {MAX_CHANNELS} channel names "
            '(--notify NAME=URL), such as ["ops", "email"]'
        )
    return sorted(set(value))


def known(configured: frozenset[str] | None, chosen: Iterable[str] | None) -> None:
    """Refuse a job's channel names the server was not started with: a typo would
    route its alerts nowhere, silently. ``configured`` None: not checked (replay,
    a cluster's apply; what the log holds was checked when it came in)."""
    if configured is None or not chosen:
        return
    for name in chosen:
        if name not in configured:
            have = ", ".join(sorted(configured)) or "none: no --notify NAME=URL was given"
            raise malformed(
                f"unknown channel {name!r} in channels: this server's named channels are {have}"
            )
