"""A turn's state changes in a cluster, on their way to the log: the stream's side
of the journal seam (``journal.TurnLog``).

A proposal is one stream entry: groups ``[reporter, [[name, args], ...]]``, one
per connection whose state-changing requests it carries (``Slot``: the
requests, and their replies once applied), plus this node's own records (a
closed connection, its settings) in groups of their own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from ..engine import Sink
from ..journal import JournalWriter, TurnLog
from ..protocol import Request


class Slot:
    """A connection's requests in a proposal, and their replies once applied."""

    __slots__ = ("sink", "batch", "requests", "prefix", "out")

    def __init__(self, sink: Sink, batch: deque[Request], prefix: bytes) -> None:
        self.sink = sink
        self.batch = batch  # consumed by the apply
        self.requests = list(batch)  # what to refuse, should Redis not confirm them
        self.prefix = prefix  # replies to the requests before them, made at once
        self.out = b""


class Proposal:
    __slots__ = ("seq", "groups", "slots", "closed", "applied", "confirmed", "failed", "entry")

    def __init__(self) -> None:
        self.seq = 0
        self.groups: list[list[Any]] = []
        self.slots: list[Slot | None] = []  # per group; None for a node's own records
        self.closed: list[int] = []  # connections whose _conn_closed it carries
        self.applied = False
        self.confirmed = False
        self.failed: str | None = None
        self.entry: tuple[int, int] | None = None  # its stream ID, once Redis took it


class StreamJournal:
    """``TurnLog`` for a cluster: ``write`` hands the turn's proposal to ``send``
    (the engine's proposer: one ``XADD``)."""

    def __init__(self, send: Callable[[Proposal], None]) -> None:
        self.proposal = Proposal()
        self._send = send

    @property
    def pending(self) -> bool:
        return bool(self.proposal.groups)

    def append(self, name: str, args: Any) -> None:
        """A record of this node's own: in a group without a connection."""
        proposal = self.proposal
        if not proposal.groups or proposal.slots[-1] is not None:
            proposal.groups.append([None, []])
            proposal.slots.append(None)
        proposal.groups[-1][1].append((name, args))

    def append_batch(self, slot: Slot) -> None:
        """A connection's state-changing requests, as one group."""
        records = [(request[2].record, request[3]) for request in slot.batch]  # type: ignore[union-attr]
        self.proposal.groups.append([slot.sink.conn_id, records])
        self.proposal.slots.append(slot)

    def write(self, ts: float) -> bool:
        """Seal this turn's proposal and send it; the stream gives it its time."""
        if not self.proposal.groups:
            return False
        proposal, self.proposal = self.proposal, Proposal()
        self._send(proposal)
        return True


# The two sides of the seam, checked by mypy.
TURN_LOGS: tuple[type[TurnLog], ...] = (JournalWriter, StreamJournal)
