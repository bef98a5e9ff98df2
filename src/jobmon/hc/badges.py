"""Status badges, as Healthchecks serves them: ``/badge/<key>/<tag>.svg``,
``.shields`` (shields.io's endpoint format) and ``.json`` (the same, plus
Healthchecks' ``status``, ``total``, ``grace`` and ``down``), ``*`` for every
check. Three states (up, late, down); ``?states=2`` counts late as up. No
token: the key in the path is the secret (``format.badge_key``)."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from aiohttp import web

if TYPE_CHECKING:
    from ..http import HttpApi
    from .format import Formatter

COLOURS = {"up": "#4c1", "late": "#fe7d37", "down": "#e05d44"}
SHIELDS_COLOURS = {"up": "success", "late": "important", "down": "critical"}
ALL_LABEL = "jobmon"
FORMATS = ("svg", "json", "shields")
# Rough advance widths (px) of 11 px Verdana, for the badge's two boxes.
_NARROW = frozenset("fijlrt!|.,:;'I ")
_WIDE = frozenset("mwMW@%")


def text_width(text: str) -> int:
    return sum(4 if c in _NARROW else 10 if c in _WIDE else 7 for c in text)


def status_of(counts: dict[str, int], states: int) -> str:
    if counts["down"]:
        return "down"
    if counts["grace"] and states == 3:
        return "late"
    return "up"


def svg(label: str, status: str) -> str:
    left, right = text_width(label) + 10, text_width(status) + 10
    width = left + right
    label, status_text = escape(label), escape(status)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" '
        f'role="img" aria-label="{label}: {status_text}">'
        f"<title>{label}: {status_text}</title>"
        f'<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" '
        f'stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{width}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{left}" height="20" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{COLOURS[status]}"/>'
        f'<rect width="{width}" height="20" fill="url(#s)"/></g>'
        f'<g fill="#fff" text-anchor="middle" '
        f'font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{left / 2}" y="14">{label}</text>'
        f'<text x="{left + right / 2}" y="14">{status_text}</text></g></svg>'
    )


class Badges:
    def __init__(self, http: HttpApi, formatter: Formatter) -> None:
        self.http = http
        self.key = formatter.badge_key.encode()
        http.app.router.add_get("/badge/{key}/{name}", self.badge)

    async def badge(self, request: web.Request) -> web.Response:
        tag, _, fmt = request.match_info["name"].rpartition(".")
        if not hmac.compare_digest(request.match_info["key"].encode(), self.key):
            return web.Response(text="not found", status=404)
        if fmt not in FORMATS or not tag:
            return web.Response(text="not found", status=404)
        states = 2 if request.query.get("states") == "2" else 3
        (reply,) = await self.http.ask([{"type": "get_badges"}])
        counts = reply["tags"].get(tag, {"total": 0, "grace": 0, "down": 0})
        status = status_of(counts, states)
        label = ALL_LABEL if tag == "*" else tag
        headers = {"Cache-Control": "no-cache", "Access-Control-Allow-Origin": "*"}
        if fmt == "svg":
            return web.Response(
                text=svg(label, status), content_type="image/svg+xml", headers=headers
            )
        body: dict[str, Any] = {
            "schemaVersion": 1,
            "label": label,
            "message": status,
            "color": SHIELDS_COLOURS[status],
        }
        if fmt == "json":  # Healthchecks' own fields, after shields.io's
            body.update(status=status, **counts)
        return web.json_response(body, headers=headers)
