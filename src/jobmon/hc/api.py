"""Healthchecks' management API (v1, v2 and v3, which differ in little) under
``/api/v<n>/``: every call one protocol message through the engine, its reply
put in Healthchecks' shapes. The API key is jobmon's ``--token``, sent as
``X-Api-Key`` (or ``api_key`` in a POST's JSON); without ``--token`` the API
is as open as the rest of jobmon's HTTP API.
"""

from __future__ import annotations

import hmac
import re
import unicodedata
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from .. import channels
from ..errors import Code
from .format import Formatter, hc_time
from .registry import SETTINGS, TIMING

if TYPE_CHECKING:
    from ..http import HttpApi

STATUS_OF_CODE = {Code.NOT_FOUND: 404, Code.PRECONDITION_FAILED: 409, Code.CRASH: 500}
# What a create or update reads of a request (the rest, such as keyword filters, is ignored).
SPEC_FIELDS = (*SETTINGS, *TIMING, "unique")
PREFIX = "/api/{v:v[123]}"


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def reply_json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(
        value, status=status, dumps=_dumps, headers={"Access-Control-Allow-Origin": "*"}
    )


def hc_error(text: str, status: int = 400) -> web.Response:
    return reply_json({"error": text}, status)


def slugify(name: str) -> str:
    """As API v1 and v2 make a slug of a name (Django's slugify)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    words = re.sub(r"[^\w\s-]", "", ascii_name.lower())
    return re.sub(r"[-\s]+", "-", words).strip("-_")


class Answer(Exception):
    """Raised with the response to give, when a call cannot go on (auth, a refusal)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


Handler = Callable[[web.Request, int, dict[str, Any]], Awaitable[web.Response]]


class Management:
    def __init__(self, http: HttpApi, formatter: Formatter) -> None:
        self.http = http
        self.format = formatter
        config = http.server.config
        self.token = config.token.encode() if config.token else None
        self.channels = [c for c in channels.parse_all(config.notify) if c.name is not None]
        r = http.app.router
        one = PREFIX + "/checks/{code}"
        r.add_get(PREFIX + "/checks/", self._call(self.list_checks))
        r.add_post(PREFIX + "/checks/", self._call(self.create_check))
        r.add_get(one, self._call(self.check_call("get_check")))
        r.add_post(one, self._call(self.update_check))
        r.add_delete(one, self._call(self.check_call("delete_check")))
        r.add_post(one + "/pause", self._call(self.check_call("pause_check")))
        r.add_post(one + "/resume", self._call(self.check_call("resume_check")))
        r.add_get(one + "/pings/", self._call(self.pings))
        r.add_get(one + "/pings/{n:[0-9]+}/body", self._call(self.ping_body))
        r.add_get(one + "/flips/", self._call(self.flips))
        r.add_get(PREFIX + "/channels/", self._call(self.list_channels))
        r.add_get(PREFIX + "/badges/", self._call(self.badges))
        r.add_get(PREFIX + "/status/", self.status)

    # -- plumbing ---------------------------------------------------------------
    def _call(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        """The handler, once the API key is right, with the API version and JSON body."""

        async def authorized(request: web.Request) -> web.Response:
            try:
                v, body = await self._begin(request)
                return await handler(request, v, body)
            except Answer as answer:
                return answer.response

        return authorized

    async def _begin(self, request: web.Request) -> tuple[int, dict[str, Any]]:
        body: Any = {}
        raw = await request.read() if request.method == "POST" else b""
        if raw.strip():
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise Answer(hc_error("could not parse request body")) from None
            if not isinstance(body, dict):
                raise Answer(hc_error("json validation error: value is not an object"))
        given = request.headers.get("X-Api-Key")
        if given is None and isinstance(body.get("api_key"), str):
            given = body["api_key"]
        if self.token is not None:
            if not given:
                raise Answer(hc_error("missing api key", 401))
            if not hmac.compare_digest(given.encode(), self.token):
                raise Answer(hc_error("wrong api key", 401))
        return int(request.match_info["v"][1]), body

    async def _ask(self, message: dict[str, Any]) -> dict[str, Any]:
        (reply,) = await self.http.ask([message])
        if reply["type"] != "error":
            return reply
        if reply["code"] == Code.NOT_FOUND:
            raise Answer(hc_error("not found", 404))
        if message["type"] == "resume_check" and reply["code"] == Code.PRECONDITION_FAILED:
            raise Answer(web.Response(text="check is not paused", status=409))
        raise Answer(hc_error(reply["text"], STATUS_OF_CODE.get(reply["code"], 400)))

    def check_call(self, type_: str) -> Handler:
        """A call about one check that takes nothing else (get, delete, pause, resume)."""

        async def call(request: web.Request, v: int, body: dict[str, Any]) -> web.Response:
            reply = await self._ask({"type": type_, "check": request.match_info["code"]})
            return reply_json(self.format.check(reply["check"], v))

        return call

    def _spec(self, body: dict[str, Any], v: int) -> dict[str, Any]:
        spec = {k: body[k] for k in SPEC_FIELDS if k in body}
        if v < 3:
            spec.pop("slug", None)
            if isinstance(spec.get("name"), str):
                spec["slug"] = slugify(spec["name"])
        if "channels" in spec:
            spec["channels"] = self._channel_names(spec["channels"])
        return spec

    def _channel_names(self, given: Any) -> list[str]:
        """Healthchecks' ``channels``: "*" (all), "" (none), or ids or names, comma-separated."""
        if not isinstance(given, str):
            raise Answer(hc_error("json validation error: channels is not a string"))
        if given == "*":
            return [c.name for c in self.channels if c.name is not None]
        names = []
        for item in given.split(",") if given else []:
            found = [c for c in self.channels if item in (c.id, c.name)]
            if not found:
                raise Answer(hc_error(f"invalid channel identifier: {item}"))
            names.append(found[0].name or "")
        return names

    # -- checks -----------------------------------------------------------------
    async def list_checks(self, request: web.Request, v: int, body: dict[str, Any]) -> web.Response:
        message: dict[str, Any] = {"type": "list_checks", "tags": request.query.getall("tag", [])}
        if request.query.get("slug"):
            message["slug"] = request.query["slug"]
        reply = await self._ask(message)
        return reply_json({"checks": [self.format.check(c, v) for c in reply["checks"]]})

    async def create_check(
        self, request: web.Request, v: int, body: dict[str, Any]
    ) -> web.Response:
        message = {**self._spec(body, v), "type": "create_check", "uuid": str(uuidlib.uuid4())}
        reply = await self._ask(message)
        return reply_json(self.format.check(reply["check"], v), 201 if reply["created"] else 200)

    async def update_check(
        self, request: web.Request, v: int, body: dict[str, Any]
    ) -> web.Response:
        spec = self._spec(body, v)
        spec.pop("unique", None)
        reply = await self._ask(
            {**spec, "type": "update_check", "check": request.match_info["code"]}
        )
        return reply_json(self.format.check(reply["check"], v))

    # -- pings and flips ----------------------------------------------------------
    async def pings(self, request: web.Request, v: int, body: dict[str, Any]) -> web.Response:
        reply = await self._ask({"type": "get_check_pings", "check": request.match_info["code"]})
        return reply_json(
            {"pings": [self.format.ping(p, reply["check"], v) for p in reply["pings"]]}
        )

    async def ping_body(self, request: web.Request, v: int, body: dict[str, Any]) -> web.Response:
        n = int(request.match_info["n"][:15])
        reply = await self._ask(
            {"type": "get_ping_body", "check": request.match_info["code"], "n": n}
        )
        return web.Response(text=reply["body"], content_type="text/plain")

    async def flips(self, request: web.Request, v: int, body: dict[str, Any]) -> web.Response:
        message: dict[str, Any] = {"type": "get_check_flips", "check": request.match_info["code"]}
        for name in ("seconds", "start", "end"):
            value = request.query.get(name)
            if value is not None:
                if not (value.isascii() and value.isdigit() and len(value) <= 15):
                    raise Answer(hc_error(f"{name} must be a whole number >= 0"))
                message[name] = int(value)
        reply = await self._ask(message)
        # A bare list, as Healthchecks' documentation shows (and its clients read).
        return reply_json(
            [
                {"timestamp": hc_time(f["at"]), "up": int(f["status"] == "up")}
                for f in reply["flips"]
            ]
        )

    # -- the rest -------------------------------------------------------------------
    async def list_channels(
        self, request: web.Request, v: int, body: dict[str, Any]
    ) -> web.Response:
        return reply_json(
            {"channels": [{"id": c.id, "name": c.name, "kind": c.kind} for c in self.channels]}
        )

    async def badges(self, request: web.Request, v: int, body: dict[str, Any]) -> web.Response:
        reply = await self._ask({"type": "get_badges"})
        return reply_json({"badges": {tag: self.format.badge_urls(tag) for tag in reply["tags"]}})

    async def status(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")
