"""Field validators shared by the commands: each error says what was wrong and what is expected."""

from __future__ import annotations

import sys
from typing import Annotated, Any, Literal

import msgspec
import orjson

from ..clock import MAX_SPAN_MS, MAX_TIME, MIN_TIME
from ..errors import Code, RequestError, malformed
from ..runs import MAX_RUN_ID_CHARS

MAX_JOB_ID_CHARS = 256
# Numbers beyond 2**53 lose integer precision as floats, and sums of them can
# overflow to infinity (which JSON cannot carry): refuse them at the edge.
MAX_NUMBER = 2**53
# What is kept of strings and maps (each kept value also lands in replies,
# alerts, the journal and snapshots): see the README's "Limits".
MAX_ERROR_CHARS = 4096  # a longer error is kept as its first 4,096 characters
MAX_NAME_CHARS = 64  # a resource_usage field's or a label's name
MAX_USAGE_FIELDS = 32
MAX_USAGE_TEXT_CHARS = 128  # a resource_usage value that is a string
# A reply line carries at most MAX_REPLY_BYTES; a page of list_jobs or get_alerts
# stops once it passes PAGE_BYTES (its cursor continues where it stopped), so a
# small request never builds a large reply in the store task.
MAX_REPLY_BYTES = 4 << 20
PAGE_BYTES = 1 << 20

# Wire types for the fast path (see protocol.decode): msgspec checks these in C.
# They must accept only what the validators below accept (Wire structs forbid
# unknown fields, so extra fields take the general path and are checked there);
# tests/test_fast_path.py compares the two paths on many inputs.
WireJobId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_JOB_ID_CHARS)]
WireCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_NUMBER)]
WireNumber = (
    Annotated[int, msgspec.Meta(ge=0, le=MAX_NUMBER)]
    | Annotated[float, msgspec.Meta(ge=0, le=MAX_NUMBER)]
)
WireSpanMs = Annotated[int, msgspec.Meta(ge=1, le=MAX_SPAN_MS)]
# An error longer than the cap takes the general path, which keeps its head.
WireError = Annotated[str, msgspec.Meta(max_length=MAX_ERROR_CHARS)]
# resource_usage of numbers only, within the caps (strings take the general path).
WireUsage = Annotated[
    dict[Annotated[str, msgspec.Meta(max_length=MAX_NAME_CHARS)], WireNumber],
    msgspec.Meta(max_length=MAX_USAGE_FIELDS),
]
# msg_id is only echoed back: any integer orjson can read back as one is fine.
WireMsgId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
# event_id (see commands.once): the sender's id for one event, so a retry applies once.
MAX_EVENT_ID_CHARS = 128
WireEventId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_ID_CHARS)]
# run_id (see commands.run_ids): one of several live runs of a job, without NUL.
WireRunId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_RUN_ID_CHARS, pattern="\\A[^\\x00]*\\Z")
]
WirePercent = (
    Annotated[int, msgspec.Meta(ge=0, le=100)] | Annotated[float, msgspec.Meta(ge=0, le=100)]
)
WireStatus = Literal["pending", "queued", "running", "retrying", "completed", "failed", "cancelled"]
NUMBER = (int, float)


# ``at``: when an event happened, for events a client queued while jobmon was
# unreachable (epoch seconds). Later than the server's clock reads as now;
# older than this is refused, as too old to mean anything to a live monitor.
MAX_EVENT_AGE_S = 7 * 24 * 3600


def event_time(now: float, args: tuple[Any, ...], index: int) -> float:
    """The time an event happened: its ``at`` (``args[index]``, absent from
    records journaled before ``at`` existed) or now."""
    at = args[index] if len(args) > index else None
    if at is None or at >= now:
        return now
    if at < now - MAX_EVENT_AGE_S:
        raise RequestError(
            Code.MALFORMED,
            f"at {at} is more than {MAX_EVENT_AGE_S // 86400} days before the server's clock "
            f"({now:.3f}); at is when a queued event happened, in epoch seconds",
        )
    return float(at)


def reply(type_: str, msg_id: int | None) -> dict[str, Any]:
    """The head of a reply: its type, then ``in_reply_to`` when the request had a msg_id."""
    if msg_id is None:
        return {"type": type_}
    return {"type": type_, "in_reply_to": msg_id}


def is_number(value: Any) -> bool:
    # bool is an int subclass; true/false is not a number on the wire.
    return type(value) in NUMBER


def event_id(body: dict[str, Any]) -> str | None:
    value = body.get("event_id")
    if value is None:
        return None
    if type(value) is not str or not 0 < len(value) <= MAX_EVENT_ID_CHARS:
        raise malformed(
            f"event_id must be a string of 1 to {MAX_EVENT_ID_CHARS} characters that names "
            f"this one event (a retry sends the same), got {_show(value)}"
        )
    return value


def job_id(body: dict[str, Any]) -> str:
    value = body.get("job_id")
    if type(value) is not str or not value:
        if value is None:
            raise malformed("missing field job_id: expected a non-empty string")
        raise malformed(f"job_id must be a non-empty string, got {_show(value)}")
    if len(value) > MAX_JOB_ID_CHARS:
        raise malformed(f"job_id is {len(value)} characters long; at most {MAX_JOB_ID_CHARS}")
    return value


def number(body: dict[str, Any], name: str, low: float = 0, high: float = MAX_NUMBER) -> Any:
    """An optional number in [low, high]; None when absent."""
    return checked_number(body.get(name), name, low, high)


def checked_number(value: Any, name: str, low: float = 0, high: float = MAX_NUMBER) -> Any:
    if value is None:
        return None
    if not is_number(value):
        raise malformed(f"{name} must be a number, got {_show(value)}")
    if not low <= value <= high:
        raise malformed(f"{name} must be between {low} and {high}, got {value}")
    return value


def integer(body: dict[str, Any], name: str, low: int = 0, high: int = MAX_NUMBER) -> int | None:
    """An optional integer in [low, high]; None when absent."""
    value = body.get(name)
    if value is None:
        return None
    if type(value) is not int:
        raise malformed(f"{name} must be an integer >= {low}, got {_show(value)}")
    if not low <= value <= high:
        raise malformed(f"{name} must be an integer between {low} and {high}, got {value}")
    return value


def span_ms(body: dict[str, Any], name: str, low: int = 1) -> int | None:
    """An optional number of milliseconds added to a time: at most MAX_SPAN_MS."""
    return integer(body, name, low, MAX_SPAN_MS)


def writable_time(ts: float) -> bool:
    """True when ISO-8601 with a four-digit year can carry ``ts`` (epoch seconds)."""
    return MIN_TIME <= ts <= MAX_TIME


def short_string(body: dict[str, Any], name: str, max_chars: int) -> str | None:
    """An optional string of at most ``max_chars`` characters."""
    value = string(body, name)
    if value is not None and len(value) > max_chars:
        raise malformed(f"{name} is {len(value)} characters long; at most {max_chars}")
    return value


def error_text(body: dict[str, Any]) -> str:
    """A failure's ``error``: kept as its first MAX_ERROR_CHARS characters."""
    error = string(body, "error")
    return "" if error is None else error[:MAX_ERROR_CHARS]


def string(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if type(value) is not str:
        raise malformed(f"{name} must be a string, got {_show(value)}")
    return value


# What a wrapper (``jobmon run``) or a launched job adds to a run's report.
RUN_INFO_FIELDS = ("arguments", "exit_code", "output", "memory_limit_mb")
MAX_ARGUMENTS = 256
MAX_ARGUMENT_CHARS = 4096
MAX_ARGUMENTS_CHARS = 8192  # all of them together
MAX_OUTPUT_CHARS = 8192


def run_info(body: dict[str, Any]) -> dict[str, Any] | None:
    """``arguments``, ``exit_code``, ``output`` (a tail) and ``memory_limit_mb``,
    when any is given; None otherwise (most reports)."""
    if not any(name in body for name in RUN_INFO_FIELDS):
        return None
    info: dict[str, Any] = {}
    arguments = body.get("arguments")
    if arguments is not None:
        if (
            type(arguments) is not list
            or len(arguments) > MAX_ARGUMENTS
            or not all(
                type(a) is str and len(a) <= MAX_ARGUMENT_CHARS and "\x00" not in a
                for a in arguments
            )
            or sum(map(len, arguments)) > MAX_ARGUMENTS_CHARS
        ):
            raise malformed(
                f"arguments must be an array of at most {MAX_ARGUMENTS} strings of at most "
                f"{MAX_ARGUMENT_CHARS} characters ({MAX_ARGUMENTS_CHARS} in all), without NUL, "
                f"got {_show(arguments)}"
            )
        # Kept with the job (and its recent runs): the same command line every
        # run, so one copy of each distinct argument.
        info["arguments"] = list(map(sys.intern, arguments))
    exit_code = body.get("exit_code")
    if exit_code is not None:
        if type(exit_code) is not int or not -(2**31) <= exit_code < 2**31:
            raise malformed(f"exit_code must be an integer, got {_show(exit_code)}")
        info["exit_code"] = exit_code
    output = string(body, "output")
    if output is not None:
        if len(output) > MAX_OUTPUT_CHARS:
            raise malformed(
                f"output must be at most {MAX_OUTPUT_CHARS} characters (send the tail), "
                f"got {len(output)}"
            )
        info["output"] = output
    limit = checked_number(body.get("memory_limit_mb"), "memory_limit_mb", 1)
    if limit is not None:
        info["memory_limit_mb"] = limit
    return info or None


def usage(body: dict[str, Any]) -> dict[str, Any]:
    """``resource_usage``: a flat object of numbers (cpu_percent and memory_mb must
    be numbers), short strings, booleans or nulls, within the caps."""
    value = body.get("resource_usage")
    if value is None:
        return {}
    if type(value) is not dict:
        raise malformed(
            f"resource_usage must be an object such as "
            f'{{"cpu_percent": 75, "memory_mb": 1024}}, got {_show(value)}'
        )
    if len(value) > MAX_USAGE_FIELDS:
        raise malformed(
            f"resource_usage has {len(value)} fields; at most {MAX_USAGE_FIELDS} are kept"
        )
    for key, item in value.items():
        if len(key) > MAX_NAME_CHARS:
            raise malformed(
                f"resource_usage field names are at most {MAX_NAME_CHARS} characters, "
                f"got one of {len(key)}"
            )
        if is_number(item):
            checked_number(item, f"resource_usage.{key}")
        elif key in ("cpu_percent", "memory_mb"):
            raise malformed(f"resource_usage.{key} must be a number >= 0, got {_show(item)}")
        elif type(item) is str:
            if len(item) > MAX_USAGE_TEXT_CHARS:
                raise malformed(
                    f"resource_usage.{key} is a string of {len(item)} characters; "
                    f"at most {MAX_USAGE_TEXT_CHARS}"
                )
        elif item is not None and type(item) is not bool:
            raise malformed(
                f"resource_usage.{key} must be a number, a string, true, false or null "
                f"(resource_usage is a flat object), got {_show(item)}"
            )
    return value


def encoded(value: Any, what: str) -> orjson.Fragment:
    """``value`` encoded once for a reply (the engine copies the bytes as they are);
    refused when it would pass MAX_REPLY_BYTES."""
    data = orjson.dumps(value)
    if len(data) > MAX_REPLY_BYTES:
        raise malformed(
            f"{what} would be {len(data)} bytes, over the {MAX_REPLY_BYTES} a reply may carry: "
            "ask for less"
        )
    return orjson.Fragment(data)


def _show(value: Any) -> str:
    """A short description of a wrong value, for error texts."""
    kind = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)
    if value is None:
        return "null"
    try:
        text = orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):  # nested too deep to write back
        return f"{kind} (too deeply nested to show)"
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind} {text}"
