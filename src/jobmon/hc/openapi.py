"""Healthchecks' routes in jobmon's OpenAPI description (``openapi.spec``)."""

from __future__ import annotations

from typing import Any

_ANY = {"type": "object", "additionalProperties": True}
_VERSION = {"name": "v", "in": "path", "required": True, "schema": {"enum": ["v1", "v2", "v3"]}}
_CODE = {
    "name": "code",
    "in": "path",
    "required": True,
    "description": "the check's uuid (to read, its unique_key too)",
    "schema": {"type": "string", "format": "uuid"},
}
_KEY = {"name": "X-Api-Key", "in": "header", "required": False, "schema": {"type": "string"}}


def _op(summary: str, params: list[dict[str, Any]], body: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": [_VERSION, *params, _KEY],
        "responses": {
            "200": {
                "description": "Healthchecks' JSON",
                "content": {"application/json": {"schema": _ANY}},
            },
            "400": {"description": "bad input"},
            "401": {"description": "no or a wrong API key (--token)"},
            "404": {"description": "no such check"},
        },
    }
    if body:
        op["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": _ANY}},
        }
    return op


def _text(summary: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": params,
        "responses": {
            "200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}},
            "400": {"description": "invalid url or uuid format"},
            "404": {"description": "not found"},
        },
    }


def paths() -> dict[str, Any]:
    tail = {
        "name": "tail",
        "in": "path",
        "required": True,
        "description": "<uuid>[/start|/fail|/log|/<exit-status>] or <ping-key>/<slug>[/...]",
        "schema": {"type": "string", "minLength": 1},
    }
    ping = _text("Healthchecks' pinging API (no token: the uuid or ping key is the secret)", [tail])
    checks = "/api/{v}/checks/"
    one = "/api/{v}/checks/{code}"
    return {
        "/ping/{tail}": {
            "get": ping,
            "post": {
                **ping,
                "requestBody": {
                    "required": False,
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
            },
        },
        "/badge/{key}/{name}": {
            "get": _text(
                "A badge: <tag>.svg, .json or .shields (?states=2: late counts as up)",
                [
                    {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
            )
        },
        checks: {
            "get": _op("Checks (tag=, repeatable; slug=)", []),
            "post": _op("Create a check (201), or with unique update one (200)", [], body=True),
        },
        one: {
            "get": _op("One check", [_CODE]),
            "post": _op("Update a check", [_CODE], body=True),
            "delete": _op("Delete a check", [_CODE]),
        },
        one + "/pause": {"post": _op("Pause a check", [_CODE], body=True)},
        one + "/resume": {
            "post": _op("Resume a paused check (409 if it is not)", [_CODE], body=True)
        },
        one + "/pings/": {"get": _op("A check's pings, newest first", [_CODE])},
        one + "/pings/{n}/body": {
            "get": _op(
                "A ping's body, as text",
                [
                    _CODE,
                    {
                        "name": "n",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 0},
                    },
                ],
            )
        },
        one + "/flips/": {"get": _op("A check's status changes (seconds=, start=, end=)", [_CODE])},
        "/api/{v}/channels/": {"get": _op("The --notify NAME=URL channels", [])},
        "/api/{v}/badges/": {"get": _op("Badge URLs per tag, and * for all", [])},
        "/api/{v}/status/": {"get": _op("OK while the server is up", [])},
    }
