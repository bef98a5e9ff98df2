"""Healthchecks' routes on jobmon's HTTP API (``http.HttpApi`` calls ``add``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import channels
from .api import Management
from .badges import Badges
from .format import Formatter
from .ping import Pinging

if TYPE_CHECKING:
    from ..http import HttpApi


def add(http: HttpApi) -> None:
    config = http.server.config
    formatter = Formatter(
        http.server.public_url, channels.parse_all(config.notify), config.token or config.ping_key
    )
    Pinging(http)
    Management(http, formatter)
    Badges(http, formatter)
