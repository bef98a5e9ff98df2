"""The wire format: one line -> a validated request, and replies framed like their request.

A request is the tuple ``(frame, msg_id, handler, args)``. ``frame`` is None
for a bare body, or ``(reply_src, reply_dest)`` for a Maelstrom envelope. A line
that fails validation becomes the same tuple with ``handler`` None and the
``RequestError`` as ``args``, so errors travel in order with the replies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from itertools import repeat
from typing import Annotated, Any, Union

import msgspec
import orjson

from .commands import HANDLERS, ONCE, RUN_WIRES, Handler
from .commands.fields import _show, event_id
from .errors import Code, RequestError, malformed
from .framing import _FRAMES, _HEADS, MAX_ADDRESS_CHARS, LastHead, envelope_head, request_frame

Frame = tuple[Any, Any] | None
Request = tuple[Frame, int | None, Handler | None, Any]

_loads = orjson.loads
_dumps = orjson.dumps
_NEWLINE = orjson.OPT_APPEND_NEWLINE
_SUPPORTED = ", ".join(HANDLERS)
_ADDRESS = (str, type(None))
log = logging.getLogger("jobmon.protocol")


# The fast path: one C call decodes and validates a well-formed hot message.
# Per Wire struct: its handler, its arguments, the handler once it carries an
# event_id (commands.once), and its arguments once it carries a run_id.
_Args = Callable[[Any], tuple[Any, ...]]
_WIRE_ROUTES: dict[type, tuple[Handler, _Args, Handler | None, _Args | None]] = {
    h.wire: (h, h.from_wire, ONCE.get(h.name), RUN_WIRES.get(h.name))
    for h in HANDLERS.values()
    if h.wire is not None and h.from_wire is not None
}
_WIRE_UNION: Any = Union[tuple(_WIRE_ROUTES)]  # noqa: UP007
_wire_decode = msgspec.json.Decoder(_WIRE_UNION).decode
_Address = Annotated[str, msgspec.Meta(max_length=MAX_ADDRESS_CHARS)]


class Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """A Maelstrom envelope around a hot message: decoded, body and all, in one call."""

    body: _WIRE_UNION
    src: _Address | None = None
    dest: _Address | None = None


_envelope_decode = msgspec.json.Decoder(Envelope).decode
# Anything the fast path does not take (including bad UTF-8, which msgspec
# reports as UnicodeDecodeError, and values nested too deep for it to skip,
# RecursionError) goes the general way and gets its worded error.
_WIRE_ERRORS = (msgspec.MsgspecError, ValueError, RecursionError)
_FAST_PATH_MISSES = (*_WIRE_ERRORS, IndexError)


_last = LastHead()
_HEAD_END = 7 + 2 * (MAX_ADDRESS_CHARS + 2) + 16  # where a plain head's ,"body": can begin at most


def decode(line: bytes) -> Request | None:
    """Parse and validate one line; None for a blank line.

    Well-formed messages of the types that declare a ``Wire`` struct (the hot
    ones: update_status, job_completed, job_failed, heartbeat, get_stats), bare
    or in an envelope, take the msgspec fast path; everything else, and anything
    it rejects, goes through ``decode_checked``, which words the errors.
    """
    try:
        # b"s" third (cheaper than comparing seven bytes): perhaps {"src":.., an
        # envelope as Maelstrom's clients write them. (A line too short for it
        # is no message for the fast path either: IndexError sends it on.)
        if line[2] == 115:
            last = _last
            length = last.length
            if line[:length] == last.prefix and line[-1] == 125:  # the last plain head again
                return _routed(last.frame, _wire_decode(line[length:-1]))
            if line[:7] == b'{"src":':
                cut = line.find(b',"body":', 7, _HEAD_END)
                if cut > 0 and line[-1] == 125:  # ends with "}"
                    head = line[:cut]
                    frame = _FRAMES.get(head) or request_frame(head)
                    if frame is not None:  # a plain head (see framing): the body as a bare one
                        _last.seen(line[: cut + 8], frame)
                        return _routed(frame, _wire_decode(line[cut + 8 : -1]))
                envelope = _envelope_decode(line)
                return _routed((envelope.dest, envelope.src), envelope.body)
        wire = _wire_decode(line)
    except _FAST_PATH_MISSES:
        return _decode_other(line)
    handler, from_wire, once, from_run = _WIRE_ROUTES[type(wire)]
    args = from_wire(wire) if from_run is None or wire.run_id is None else from_run(wire)
    if once is None or wire.event_id is None:
        return (None, wire.msg_id, handler, args)
    return (None, wire.msg_id, once, (wire.event_id, handler.name, args))


def decode_framed(data: bytes) -> tuple[Iterator[Request], bytes] | None:
    """A Maelstrom client's read: when every complete line of ``data`` is an
    envelope with the same plain head, the lines decoded (their bodies cut out
    of ``data`` in one pass, then decoded as bare ones in that frame) and what
    follows the last newline; otherwise None (decode each line)."""
    last = _last
    if not data.startswith(last.prefix):
        cut = data.find(b',"body":', 7, _HEAD_END)
        frame = request_frame(data[:cut]) if cut > 0 else None
        if frame is None:
            return None
        last.seen(data[: cut + 8], frame)
    lines = data.split(b"\n")
    rest = lines.pop()
    end = len(data) - len(rest) - 1  # the last newline
    # Each line ends with "}" and the next begins with the head: then every
    # newline but the last is in one separator (no line holds a newline).
    if end < 1 or data[end - 1] != 125 or data.count(last.separator, 0, end) != len(lines) - 1:
        return None
    bodies = map(last.body, lines)
    return map(_in_frame, bodies, repeat(last.frame), repeat(last.prefix)), rest


def _in_frame(body: bytes, frame: Frame, prefix: bytes) -> Request:
    """An envelope's body (its line without the head and the last "}")."""
    try:
        wire = _wire_decode(body)
    except _FAST_PATH_MISSES:
        request = _decode_other(prefix + body + b"}")  # the line as it came
        assert request is not None  # None only for a blank line
        return request
    handler, from_wire, once, from_run = _WIRE_ROUTES[type(wire)]
    args = from_wire(wire) if from_run is None or wire.run_id is None else from_run(wire)
    if once is None or wire.event_id is None:
        return (frame, wire.msg_id, handler, args)
    return (frame, wire.msg_id, once, (wire.event_id, handler.name, args))


def _routed(frame: Frame, wire: Any) -> Request:
    handler, from_wire, once, from_run = _WIRE_ROUTES[type(wire)]
    args = from_wire(wire) if from_run is None or wire.run_id is None else from_run(wire)
    if once is None or wire.event_id is None:
        return (frame, wire.msg_id, handler, args)
    return (frame, wire.msg_id, once, (wire.event_id, handler.name, args))


def _decode_other(line: bytes) -> Request | None:
    """An envelope whose keys come in another order gets one more try at the fast
    path; the rest goes the general way."""
    if line[:7] != b'{"src":' and b'"body"' in line:
        try:
            envelope = _envelope_decode(line)
        except _WIRE_ERRORS:
            return decode_checked(line)
        return _routed((envelope.dest, envelope.src), envelope.body)
    return decode_checked(line)


def decode_checked(line: bytes) -> Request | None:
    """The general path: any framing, every message type, precise errors."""
    try:
        return _decode_checked(line)
    except Exception:  # a bug here must cost one error reply, not the connection
        log.exception("bug while decoding a request")
        return (None, None, None, RequestError(Code.CRASH, "internal error while decoding; logged"))


def _decode_checked(line: bytes) -> Request | None:
    try:
        obj = _loads(line)
    except orjson.JSONDecodeError as exc:
        if not line.strip():
            return None
        return (
            None,
            None,
            None,
            malformed(f"invalid JSON ({exc}): expected one JSON object per line"),
        )
    if type(obj) is not dict:
        return (
            None,
            None,
            None,
            malformed(
                f"expected a JSON object, got {type(obj).__name__}: a body such as "
                '{"type": "get_stats", "msg_id": 1} or an envelope '
                '{"src": .., "dest": .., "body": {..}}'
            ),
        )
    frame: Frame = None
    body = obj
    type_ = obj.get("type")
    if type_ is None and "body" in obj:
        src, dest = obj.get("src"), obj.get("dest")
        if not (type(src) in _ADDRESS and type(dest) in _ADDRESS):
            return (None, None, None, malformed("the envelope's src and dest must be strings"))
        if len(src or "") > MAX_ADDRESS_CHARS or len(dest or "") > MAX_ADDRESS_CHARS:
            return (
                None,
                None,
                None,
                malformed(
                    f"the envelope's src and dest must be at most {MAX_ADDRESS_CHARS} characters"
                ),
            )
        frame = (dest, src)
        body = obj["body"]
        if type(body) is not dict:
            return (frame, None, None, malformed("the envelope's body must be a JSON object"))
        type_ = body.get("type")
    msg_id = body.get("msg_id")
    if msg_id is not None and (type(msg_id) is not int or msg_id < 0):
        return (
            frame,
            None,
            None,
            malformed(f"msg_id must be an integer >= 0, got {_show(msg_id)}"),
        )
    if type(type_) is not str:
        if type_ is None:
            return (
                frame,
                msg_id,
                None,
                malformed(f"missing field type: expected one of {_SUPPORTED}"),
            )
        return (frame, msg_id, None, malformed("type must be a string"))
    handler = HANDLERS.get(type_)
    if handler is None:
        return (
            frame,
            msg_id,
            None,
            RequestError(
                Code.NOT_SUPPORTED,
                f"unknown message type {type_[:64]!r}: expected one of {_SUPPORTED}",
            ),
        )
    try:
        args = handler.parse(body)
        if handler.mutates and "event_id" in body:
            given = event_id(body)
            if given is not None:
                return (frame, msg_id, ONCE[handler.name], (given, handler.name, args))
    except RequestError as exc:
        return (frame, msg_id, None, exc)
    if handler.wants_frame:
        args = (*args, frame)
    return (frame, msg_id, handler, args)


def line_too_long(max_line_bytes: int) -> Request:
    return (
        None,
        None,
        None,
        malformed(
            f"line longer than {max_line_bytes} bytes was skipped: "
            f"send one JSON object per line of at most {max_line_bytes} bytes"
        ),
    )


def error_body(msg_id: int | None, code: int, text: str) -> dict[str, Any]:
    if msg_id is None:
        return {"type": "error", "code": int(code), "text": text}
    return {"type": "error", "in_reply_to": msg_id, "code": int(code), "text": text}


def encode(frame: Frame, body: dict[str, Any], node_id: str) -> bytes:
    """One reply line, framed like its request."""
    if frame is None:
        return _dumps(body, option=_NEWLINE)
    return (_HEADS.get(frame) or envelope_head(frame, node_id)) + _dumps(body) + b"}\n"
