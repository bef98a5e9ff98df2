"""Maelstrom envelopes on the fast path, both ways.

A client sends every request with the same ``src`` and ``dest``, so its lines
begin with the same bytes, ``{"src":"c1","dest":"n1"``. Those bytes are read
once into the request's frame (shared by every request that begins with
them); the body after them is decoded as a bare one would be. A reply is the
frame's head, ``{"src":"n1","dest":"c1","body":``, around the encoded body:
no dict built around it, the same bytes orjson writes for the whole envelope.

Only plain heads are read this way (addresses without escapes or quotes, in
that key order); any other envelope is decoded whole (``protocol``).
"""

from __future__ import annotations

import re
from operator import itemgetter
from typing import Any

import orjson

MAX_ADDRESS_CHARS = 256  # an envelope's src and dest, echoed in every reply
MAX_KEPT = 4096  # heads and frames remembered (one or two per client)
_dumps = orjson.dumps
# At most 256 bytes each: at most 256 characters too.
_PLAIN_HEAD = re.compile(rb'\{"src":"([^"\\\x00-\x1f]{0,256})","dest":"([^"\\\x00-\x1f]{0,256})"\Z')
_FRAMES: dict[bytes, tuple[str, str]] = {}
_HEADS: dict[tuple[Any, ...], bytes] = {}


def request_frame(head: bytes) -> tuple[str, str] | None:
    """The frame ``(reply src, reply dest)`` of a request beginning with ``head``
    (its bytes before ``,"body":``), or None when it is not a plain one."""
    frame = _FRAMES.get(head)
    if frame is None:
        match = _PLAIN_HEAD.match(head)
        if match is None:
            return None
        try:
            src, dest = match.group(1).decode(), match.group(2).decode()
        except UnicodeDecodeError:
            return None
        frame = (dest, src)
        if len(_FRAMES) >= MAX_KEPT:
            _FRAMES.clear()
        _FRAMES[head] = frame
    return frame


class LastHead:
    """The last plain head read, with its ``,"body":``: most lines repeat it.
    ``separator`` is what stands between two such lines: ``}``, the newline, the
    head; ``body`` cuts a line's body out of it."""

    __slots__ = ("prefix", "frame", "length", "separator", "body")

    def __init__(self) -> None:
        self.prefix = b"\x00"  # no line starts with it
        self.frame: tuple[str, str] = ("", "")
        self.length = 1
        self.separator = b"}\n\x00"
        self.body = itemgetter(slice(1, -1))

    def seen(self, prefix: bytes, frame: tuple[str, str]) -> None:
        self.prefix, self.frame, self.length = prefix, frame, len(prefix)
        self.separator = b"}\n" + prefix
        self.body = itemgetter(slice(self.length, -1))


def envelope_head(frame: tuple[Any, Any], node_id: str) -> bytes:
    """``{"src":..,"dest":..,"body":`` of a reply in this frame."""
    src, dest = frame
    key = frame if src is not None else (node_id, dest, None)  # our src: the node's id
    head = _HEADS.get(key)
    if head is None:
        head = b'{"src":%s,"dest":%s,"body":' % (
            _dumps(node_id if src is None else src),
            _dumps(dest),
        )
        if len(_HEADS) >= MAX_KEPT:
            _HEADS.clear()
        _HEADS[key] = head
    return head


# (no frame to join in, orjson's option for each line, no bytes added): replies
# that go line by line, each framed like its request.
LINE_BY_LINE: tuple[Any, int, int] = (None, orjson.OPT_APPEND_NEWLINE, 0)


def joining(frame: tuple[Any, Any], node_id: str) -> tuple[Any, int, int]:
    """For replies in this envelope frame, joined (``joined``) once a batch:
    the frame to join them in, orjson's option for each body (no newline), and
    the bytes the join adds to each."""
    if frame[0] is None:
        # Its head is the node's id (no ``src``: see envelope_head), which an
        # ``init`` in the same batch may change: never joined.
        return LINE_BY_LINE
    return (frame, 0, len(_HEADS.get(frame) or envelope_head(frame, node_id)) + 2)


def joined(lines: list[bytes], frame: tuple[Any, Any] | None, node_id: str) -> bytes:
    """Replies in one frame, each as its line: bare lines as they are, or bodies
    (encoded without their newline) each in the frame's envelope, in one join."""
    if frame is None or not lines:
        return b"".join(lines)
    head = _HEADS.get(frame) or envelope_head(frame, node_id)
    return head + (b"}\n" + head).join(lines) + b"}\n"
