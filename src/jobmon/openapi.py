"""The OpenAPI 3 description of the HTTP API, served at /api/openapi.json."""

from __future__ import annotations

from typing import Any

from . import __version__
from .hc import openapi as hc_openapi
from .model import STATUS_BY_NAME

_ERROR = {"$ref": "#/components/schemas/Error"}
_OBJECT = {"type": "object", "additionalProperties": True}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(media_type: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "bad input",
        404: "unknown job or path",
        409: "precondition failed",
        413: "body too large",
        503: "with --redis: the cluster's log is unreachable; nothing was recorded (error 11)",
    }
    return {str(s): _json(_ERROR, text[s]) for s in statuses}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 256},
}
_LIMIT = _query("limit", "page size", {"type": "integer", "minimum": 1, "maximum": 1000})


def spec(allowed_commands: list[str] | None = None) -> dict[str, Any]:
    """``allowed_commands``: the --allow-command names, which POST /api/jobs takes."""
    command: dict[str, Any] = (
        {"type": "string", "enum": sorted(allowed_commands)}
        if allowed_commands
        else {"type": "string", "minLength": 1}
    )
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "jobmon",
            "version": __version__,
            "description": (
                "Job monitoring. Every call is answered by the same store as the TCP "
                "protocol; message bodies are those of the TCP protocol (see README)."
            ),
        },
        "paths": {
            **hc_openapi.paths(),
            "/api/events": {
                "post": {
                    "summary": "One protocol message, or an array of them",
                    "requestBody": _body(
                        {
                            "oneOf": [
                                {"$ref": "#/components/schemas/Message"},
                                {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {"$ref": "#/components/schemas/Message"},
                                },
                            ]
                        },
                        required=True,
                    ),
                    "responses": {
                        "200": _json(_OBJECT, "the reply, or the replies in order"),
                        **_errors(400, 404, 409, 413, 503),
                    },
                }
            },
            "/api/jobs/{job_id}/{action}": {
                "post": {
                    "summary": "Crontab shortcuts: start, complete, fail, heartbeat",
                    "parameters": [
                        _JOB_ID,
                        {
                            "name": "action",
                            "in": "path",
                            "required": True,
                            "schema": {
                                "type": "string",
                                "enum": ["start", "complete", "fail", "heartbeat"],
                            },
                        },
                    ],
                    "requestBody": _body(_OBJECT, required=False),
                    "responses": {
                        "200": _json(_OBJECT, "the reply"),
                        **_errors(400, 404, 413, 503),
                    },
                }
            },
            "/api/jobs": {
                "post": {
                    "summary": "Start an allowed command as a job (start_job; needs "
                    "--allow-command and --token)",
                    "requestBody": _body(
                        {
                            "type": "object",
                            "required": ["job_id", "command"],
                            "properties": {
                                "job_id": {"type": "string", "minLength": 1},
                                "command": command,
                                "arguments": {
                                    "type": "array",
                                    "items": {"type": "string"},
                                },
                                "max_retries": {"type": "integer", "minimum": 0},
                                "retry_delay_ms": {"type": "integer", "minimum": 0},
                                "memory_limit_mb": {"type": "number", "minimum": 1},
                                "timeout_ms": {"type": "integer", "minimum": 1},
                            },
                        },
                        required=True,
                    ),
                    "responses": {
                        "200": _json(_OBJECT, "job_started"),
                        **_errors(400, 413),
                    },
                },
                "get": {
                    "summary": "A page of jobs, in the order first seen",
                    "parameters": [
                        _query(
                            "status",
                            "only jobs in this status",
                            {"type": "string", "enum": list(STATUS_BY_NAME)},
                        ),
                        _query("q", "a part of the job_id", {"type": "string"}),
                        _query("cursor", "next_cursor of the previous page", {"type": "string"}),
                        _LIMIT,
                    ],
                    "responses": {"200": _json(_OBJECT, "jobs and next_cursor"), **_errors(400)},
                },
            },
            "/api/jobs/{job_id}": {
                "get": {
                    "summary": "One job's record",
                    "parameters": [_JOB_ID],
                    "responses": {"200": _json(_OBJECT, "the job"), **_errors(400, 404)},
                }
            },
            "/api/stats": {
                "get": {
                    "summary": "Totals, the mean duration, counts by status, failures by hour",
                    "responses": {
                        "200": _json(_OBJECT, "job_stats plus by_status and failures_by_hour")
                    },
                }
            },
            "/api/alerts": {
                "get": {
                    "summary": "Recent alerts, newest first",
                    "parameters": [
                        _query(
                            "state",
                            "firing, resolved or all",
                            {"type": "string", "enum": ["firing", "resolved", "all"]},
                        ),
                        _query(
                            "job_id",
                            "only this job's",
                            {"type": "string", "minLength": 1, "maxLength": 256},
                        ),
                        _LIMIT,
                        _query(
                            "before",
                            "only alerts older than this alert id (a page's next_before)",
                            {"type": "integer", "minimum": 1},
                        ),
                    ],
                    "responses": {"200": _json(_OBJECT, "alerts"), **_errors(400)},
                }
            },
            "/api/analytics": {
                "get": {
                    "summary": "Failures by hour of day, duration percentiles, cost, "
                    "high-memory arguments",
                    "parameters": [
                        _query("tz", "IANA time zone for hours of day", {"type": "string"}),
                        _query(
                            "job_id",
                            "also this job's figures",
                            {"type": "string", "minLength": 1, "maxLength": 256},
                        ),
                        _query(
                            "top",
                            "how many top jobs and argument lists (0: none)",
                            {"type": "integer", "minimum": 0, "maximum": 100},
                        ),
                    ],
                    "responses": {"200": _json(_OBJECT, "analytics"), **_errors(400, 404)},
                }
            },
            "/api/stream": {
                "get": {
                    "summary": "Server-Sent Events: alerts and job events as they happen",
                    "parameters": [
                        _query(
                            "topics",
                            "alerts, events, changes (comma-separated)",
                            {
                                "type": "string",
                                "enum": [
                                    "alerts",
                                    "events",
                                    "changes",
                                    "alerts,events",
                                    "alerts,changes",
                                    "alerts,events,changes",
                                ],
                            },
                        )
                    ],
                    "responses": {
                        "200": {
                            "description": "an event stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_errors(400),
                    },
                }
            },
            "/api/openapi.json": {
                "get": {
                    "summary": "This description",
                    "responses": {"200": _json(_OBJECT, "OpenAPI 3")},
                }
            },
            "/api/session": {
                "post": {
                    "summary": "The dashboard's sign-in under --token: sets an HttpOnly cookie",
                    "requestBody": _body(
                        {
                            "type": "object",
                            "required": ["token"],
                            "properties": {"token": {"type": "string", "minLength": 1}},
                        },
                        required=True,
                    ),
                    "responses": {
                        "200": _json(_OBJECT, "signed in (or no token is required)"),
                        "401": _json(_ERROR, "the token is wrong"),
                        **_errors(400),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (text exposition format)",
                    "responses": {"200": _text("text/plain", "the metrics")},
                }
            },
            "/": {
                "get": {
                    "summary": "The dashboard",
                    "responses": {"200": _text("text/html", "the page")},
                }
            },
            "/static/{name}": {
                "get": {
                    "summary": "The dashboard's script and style",
                    "parameters": [
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "schema": {
                                "type": "string",
                                "enum": ["dashboard.js", "dashboard.css", "favicon.svg"],
                            },
                        }
                    ],
                    "responses": {
                        "200": _text("text/javascript", "the file"),
                        **_errors(404),
                    },
                }
            },
            "/healthz": {"get": {"summary": "Alive", "responses": {"200": _json(_OBJECT, "ok")}}},
            "/readyz": {
                "get": {
                    "summary": "Journal replayed, accepting",
                    "responses": {
                        "200": _json(_OBJECT, "ready"),
                        "503": _json(_OBJECT, "not ready"),
                    },
                }
            },
        },
        # With --token, every path but /healthz, / and /static/* needs it.
        "security": [{}, {"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Message": {
                    "type": "object",
                    "required": ["type"],
                    "properties": {
                        "type": {"type": "string"},
                        "msg_id": {"type": "integer", "minimum": 0},
                    },
                    "additionalProperties": True,
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "text"],
                            "properties": {"code": {"type": "integer"}, "text": {"type": "string"}},
                        }
                    },
                },
            },
        },
    }
