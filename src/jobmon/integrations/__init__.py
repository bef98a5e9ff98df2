"""Integrations: event sources inside the server that watch another system and
report what it does to the engine as ordinary protocol messages (journaled and
answered like a connection's), such as ``celery`` (``--celery URL``).

The seam is ``Integration``: the server starts each one after the engine and
stops it early in its phased shutdown, before the engine drains, so whatever an
integration had received still reaches the journal. An integration owns its
threads and tasks and stops them promptly.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from ..config import Config
    from ..engine import Engine


class Integration(Protocol):
    name: str  # for logs: "celery redis://host:6379/0"

    async def start(self) -> None:
        """After the engine runs; returns at once (connecting happens in the background)."""
        ...

    async def stop(self) -> None:
        """Stop receiving, hand what was received to the engine, end its threads."""
        ...

    def metrics(self) -> list[Metric]:
        """Its /metrics families, read at scrape time."""
        ...


def build(config: Config, engine: Engine) -> list[Integration]:
    """The integrations the flags ask for; ValueError (said at start) if one cannot run."""
    found: list[Integration] = []
    if config.celery:
        # The receiver, a child process, imports celery; this process does not.
        if importlib.util.find_spec("celery") is None:
            raise ValueError(
                "--celery needs the celery package, which is not installed: "
                "pip install 'jobmon[celery]'"
            )
        from .celery import CeleryWatcher

        for url in config.celery:
            if not urlsplit(url).scheme or "://" not in url:
                raise ValueError(
                    f"--celery expects a broker URL such as redis://HOST:6379/0, got {url!r}"
                )
        if len(set(config.celery)) != len(config.celery):
            raise ValueError("--celery: the same broker URL was given twice")
        found.extend(CeleryWatcher(url, engine) for url in config.celery)
    return found
