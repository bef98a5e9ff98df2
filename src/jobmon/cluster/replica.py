"""The engine of a cluster node: propose, let the log order, apply in log order.

A node must not apply a state change before the log has ordered it, or nodes
would diverge. So each turn, for every ready connection, this engine answers
at once what changes nothing (reads, auth, errors: from local state), and
gathers the run of state-changing requests that follows into the turn's
proposal: one stream entry for all of them (``[reporter, records]`` groups),
appended with one XADD while the next turn's proposal builds up (group
commit). Every entry of the log, its own included, is applied in stream order
with the entry ID's time as the clock: the proposer applies its own requests
through ``Engine.execute`` (which also makes their replies), every other node
through ``records.apply_group``; both call the same commands. A proposer
releases replies once the entry is both applied here and confirmed by Redis.

A proposal Redis did not take within the timeout is answered with error 11;
its entry carries a "valid until" (Redis time), and an entry that reached
Redis after it is skipped by every node, so a refused write never applies.

Only the lease holder appends ``_tick`` (deadlines due) and ``_notified``
(deliveries confirmed), through the fenced script (leading.py). A node that
applies the leader's ``_node_gone`` naming itself (judged gone, yet alive)
proposes ``_reattached`` for its open connections' jobs (membership.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import orjson

from ..clock import Clock
from ..commands import unknown_channels
from ..connection import TURN_OUTPUT_BUDGET
from ..engine import Engine, Sink
from ..errors import Code, RequestError
from ..node import Node
from ..protocol import Request, encode, error_body
from . import records
from .leading import Leading
from .proposal import Proposal, Slot, StreamJournal
from .redislog import COMMAND_TIMEOUT_S, UNAVAILABLE, parse_stream_id

if TYPE_CHECKING:
    from .node import Member

log = logging.getLogger("jobmon.cluster")
_dumps = orjson.dumps
_NEWLINE = orjson.OPT_APPEND_NEWLINE
MAX_BATCH = 4096  # state-changing requests of one connection in one proposal
PROPOSE_TIMEOUT_S = COMMAND_TIMEOUT_S + 0.3
RETRY_AFTER_S = 0.1  # a closed connection Redis did not take is proposed again after this
MAX_IN_FLIGHT = 8  # proposals at once, only while Redis is slow to answer
SLOW_S = 0.1  # a proposal out this long: Redis is slow, the next one goes too


class ClusterEngine(Engine):
    def __init__(self, node: Node, clock: Clock, member: Member) -> None:
        super().__init__(node, clock, None, "no")
        self.member = member
        self.entries: deque[tuple[bytes, dict[bytes, bytes]]] = deque()  # read, to apply
        self.unapplied_bytes = 0
        self.journal = StreamJournal(self._send)  # this turn's proposal
        self.in_flight: dict[int, Proposal] = {}
        self.sending = 0  # proposals Redis has not answered yet
        self.last_sent_at = 0.0
        self.finished: list[Proposal] = []
        self.next_seq = 1
        self.closed_retry_at = 0.0
        self.leading = Leading(self)  # the leader-only appends: ticks, confirmations
        # --notify NAME=URL names a job may pick (checked before proposing); None: any.
        self.channels: frozenset[str] | None = None
        self.failure: Exception | None = None  # set: this node must stop (see fail)
        self.refused_unavailable = 0
        self.entries_skipped_late = 0
        # The log's last entry when this node joined: what it replays up to there
        # is history (logged, pushed and sent when it fired), not news.
        self.history_until: tuple[int, int] | None = None

    # -- the task --------------------------------------------------------------
    def _has_work(self) -> bool:
        return bool(
            self.queue
            or self.entries
            or self.finished
            or self.failure is not None
            or (self.closed_connections and time.monotonic() >= self.closed_retry_at)
            or (self.journal.pending and self._may_send())
            or self.leading.may_confirm()
            or (self.due(self.clock.now()) and self.leading.may_tick())
        )

    def _may_idle(self) -> bool:
        return not self.in_flight  # a reply still waits for Redis, or for its apply

    async def run(self) -> None:
        self.retarget()
        while self._has_work() or await self._wait_for_work():
            if self.failure is not None:
                self._idle.set()  # nothing more will be answered
                raise self.failure  # the store task ends: the node stops (server.serve)
            self.turns += 1
            if self.entries:
                self._apply_entries()
            if self.finished:
                self._finish()
            sinks, self.queue = self.queue, deque()
            self.connection_turns += len(sinks)
            now = self.clock.now()
            for sink in sinks:
                self._take(sink, now)
            if self.closed_connections and time.monotonic() >= self.closed_retry_at:
                self._propose_closed()
            leading = self.leading
            if self.due(now) and not leading.ticking:
                if self.member.lease.held() and leading.tick_settled():
                    leading.tick()
                self.remind(now)
            if leading.may_confirm():
                leading.confirm()
            if self.journal.pending and self._may_send():
                self.journal.write(now)
            self.retarget()

    def ready(self, sink: Sink) -> None:
        super().ready(sink)
        self._idle.clear()

    def fail(self, failure: Exception) -> None:
        """This node's state can no longer follow the log: stop it (the store
        task raises ``failure``) rather than let it answer from a diverged state."""
        log.critical("stopping: %s", failure)
        self.failure = failure
        self.wake()

    # -- a turn's requests -------------------------------------------------------
    def _take(self, sink: Sink, now: float) -> None:
        """Answer what changes nothing now; propose the state changes after it."""
        inbox = sink.inbox
        out: list[bytes] = []
        size = 0
        token = self.node.token
        while inbox and size < TURN_OUTPUT_BUDGET:
            if (token is not None and not sink.authenticated) or _is_auth(inbox[0]):
                # One at a time: until authenticated, only auth is answered.
                part = self.execute(deque((inbox.popleft(),)), now, sink=sink)
            elif _changes_nothing(inbox[0]):
                reads: deque[Request] = deque()
                while inbox and _changes_nothing(inbox[0]) and not _is_auth(inbox[0]):
                    reads.append(inbox.popleft())
                part = self.execute(reads, now, TURN_OUTPUT_BUDGET - size, sink)
                if reads:  # over the budget: the rest next turn
                    inbox.extendleft(reversed(reads))
            else:
                batch: deque[Request] = deque()
                while inbox and len(batch) < MAX_BATCH and not _changes_nothing(inbox[0]):
                    refused = self._refused(inbox[0])
                    if refused is not None:  # answered in its turn, after the batch before it
                        inbox[0] = refused
                        break
                    batch.append(inbox.popleft())
                if not batch:
                    continue
                self.journal.append_batch(Slot(sink, batch, b"".join(out)))
                return  # the rest once these are applied
            out.append(part)
            size += len(part)
        sink.deliver(b"".join(out))

    def _refused(self, request: Request) -> Request | None:
        """A write the log must not take (a channel this node lacks), as its error."""
        frame, msg_id, handler, args = request
        if self.channels is None or handler is None or handler.channels_of is None:
            return None
        try:
            unknown_channels(handler, args, self.channels)
        except RequestError as exc:
            return (frame, msg_id, None, exc)
        return None

    def _propose_closed(self) -> None:
        grace_ms = self.node.store.lost_grace_ms
        for conn in self.closed_connections:
            self.journal.append(records.CONN_CLOSED_RECORD, [conn, grace_ms])
            self.journal.proposal.closed.append(conn)
        self.closed_connections = []

    def propose_own(self, name: str, args: Any) -> None:
        """A record of this node's own (no connection's), in the next proposal."""
        self.journal.append(name, args)
        self.wake()

    def _may_send(self) -> bool:
        """One proposal in flight at a time, so that turns batch up behind it (group
        commit); but when Redis is slow to answer (unreachable: each call waits for
        its timeout), more go, so that none waits for another's timeout before its
        own: a write is refused within about the timeout, not a multiple of it."""
        if not self.sending:
            return True
        return self.sending < MAX_IN_FLIGHT and time.monotonic() - self.last_sent_at > SLOW_S

    def _send(self, proposal: Proposal) -> None:
        """StreamJournal.write: the turn's proposal goes to Redis (one in flight)."""
        proposal.seq = self.next_seq
        self.next_seq += 1
        self.in_flight[proposal.seq] = proposal
        self.sending += 1
        self.last_sent_at = time.monotonic()
        # Should Redis be slow to answer, the next may go anyway: look again then.
        asyncio.get_running_loop().call_later(SLOW_S + 0.01, self.wake)
        self.track(asyncio.ensure_future(self._propose(proposal)))

    async def _propose(self, proposal: Proposal) -> None:
        payload = _dumps(proposal.groups)
        valid_until_ms = int((self.clock.now() + PROPOSE_TIMEOUT_S) * 1000)
        member = self.member
        try:
            entry_id = await asyncio.wait_for(
                member.redis.propose(member.origin, proposal.seq, valid_until_ms, payload),
                PROPOSE_TIMEOUT_S,
            )
            proposal.entry = parse_stream_id(entry_id)
        except UNAVAILABLE as exc:
            proposal.failed = str(exc) or type(exc).__name__
            member.redis_failed(proposal.failed)
        else:
            proposal.confirmed = True
            member.redis_ok()
        self.sending -= 1
        self.finished.append(proposal)
        self.wake()

    def _finish(self) -> None:
        finished, self.finished = self.finished, []
        for proposal in finished:
            if proposal.failed is not None:
                self.in_flight.pop(proposal.seq, None)
                self._refuse(proposal)
            elif proposal.applied:
                self._release(proposal)

    def _release(self, proposal: Proposal) -> None:
        """Applied here and confirmed by Redis: the replies go out (once)."""
        if self.in_flight.pop(proposal.seq, None) is None:
            return
        for slot in proposal.slots:
            if slot is not None:
                slot.sink.deliver(slot.prefix + slot.out)

    def _refuse(self, proposal: Proposal) -> None:
        """Redis did not take it in time: error 11 for each request, nothing applied."""
        text = (
            f"temporarily unavailable: the cluster's log ({self.member.redis.settings.describe()}) "
            f"did not take this state change in time ({proposal.failed}); nothing was "
            "recorded: send it again (with the same event_id, if it has one)"
        )
        node_id = self.node.node_id
        for slot in proposal.slots:
            if slot is None:
                continue
            lines = [slot.prefix]
            for frame, msg_id, _, _ in slot.requests:
                body = error_body(msg_id, Code.TEMPORARILY_UNAVAILABLE, text)
                lines.append(
                    _dumps(body, option=_NEWLINE) if frame is None else encode(frame, body, node_id)
                )
            self.errors_replied += len(slot.requests)
            self.refused_unavailable += len(slot.requests)
            slot.sink.deliver(b"".join(lines))
        if proposal.closed:  # proposed again, after a pause (Redis is down)
            self.closed_connections.extend(proposal.closed)
            self.closed_retry_at = time.monotonic() + RETRY_AFTER_S
            asyncio.get_running_loop().call_later(RETRY_AFTER_S, self.wake)

    # -- the log's entries, in order ---------------------------------------------------
    def _apply_entries(self) -> None:
        entries, self.entries = self.entries, deque()
        self.unapplied_bytes = 0
        member = self.member
        node = self.node
        origin = member.origin.encode()
        leading = self.leading
        for entry_id, fields in entries:
            position = parse_stream_id(entry_id)
            ts = position[0] / 1000
            valid_until = fields.get(b"u")
            if valid_until is not None and position[0] > int(valid_until):
                self.entries_skipped_late += 1  # its proposer answered error 11
            else:
                own = self.in_flight.get(int(fields[b"s"])) if fields[b"o"] == origin else None
                history = self.history_until is not None and position <= self.history_until
                if (
                    self.events is None
                    and not history
                    and node.subscriptions
                    and self.publisher.wants_events()
                ):
                    self.events = []
                if own is not None and not own.applied:
                    self._apply_own(own, ts)
                else:
                    self._apply_other(orjson.loads(fields[b"r"]), ts)
                self.changes += 1
                if history:
                    self._replayed()
                else:
                    self.publish(ts)
            member.applied(position, len(fields[b"r"]))
            if self.history_until is not None and position >= self.history_until:
                self._history_read()
            if leading.tick_until is not None and position >= leading.tick_until:
                leading.tick_until = None
        self._lost_in_failover()
        self.member.caught_up_to_read()
        if member.snapshots.due():
            member.snapshots.begin()

    def _lost_in_failover(self) -> None:
        """A proposal Redis took, whose entry the log no longer has (this node read
        past its ID without it: a Redis failover lost it): error 11, never a hang."""
        position = self.member.position
        for proposal in list(self.in_flight.values()):
            if proposal.entry is not None and not proposal.applied and proposal.entry <= position:
                proposal.failed = "the entry was lost in a Redis failover"
                self.in_flight.pop(proposal.seq, None)
                self._refuse(proposal)

    def _apply_own(self, proposal: Proposal, ts: float) -> None:
        proposal.applied = True
        for group, slot in zip(proposal.groups, proposal.slots, strict=True):
            if slot is None:
                self._apply_other([group], ts)
            else:
                slot.out = self.execute(slot.batch, ts, 1 << 62, slot.sink)
        if proposal.confirmed:
            self._release(proposal)

    def _apply_other(self, groups: list[list[Any]], ts: float) -> None:
        outbox = self.member.outbox
        for reporter, group in groups:
            claims = self._claims_if_judged_gone(group) if reporter is None else None
            bodies = records.apply_group(self.node, outbox, ts, reporter, group)
            if self.events is not None:
                self.events.extend(bodies)
            if claims:
                log.warning(
                    "this node was judged gone; its open connections claim their jobs again",
                    extra={"fields": {"jobs": sum(len(jobs) for _, jobs in claims)}},
                )
                self.propose_own(records.REATTACHED_RECORD, claims)

    def _claims_if_judged_gone(self, group: list[Any]) -> list[list[Any]] | None:
        """Before a ``_node_gone`` naming this very node is applied: the jobs its
        open connections report, which that record is about to call lost."""
        incarnation = self.member.incarnation
        if not any(
            name == records.NODE_GONE_RECORD and args[0] == incarnation for name, args in group
        ):
            return None
        closing = {*self.closed_connections, *self.journal.proposal.closed}
        for proposal in self.in_flight.values():
            closing.update(proposal.closed)
        return [
            [conn, sorted(job_ids)]
            for conn, job_ids in self.node.store.reported_by.items()
            if job_ids and records.incarnation_of(conn) == incarnation and conn not in closing
        ]

    def _replayed(self) -> None:
        """An entry of the log as it was when this node joined: the alerts it fired
        or resolved were logged, pushed and sent then, by the nodes there; here
        they only enter the outbox (the leader's notifier may still owe them)."""
        alerts = self.node.store.drain_alerts()
        if alerts:
            self.member.outbox.add(alerts)
        self.events = None  # its events are history too (a subscribe may have started a list)

    def _history_read(self) -> None:
        """The log as it was at join is applied: from here on alerts are news.
        Reminders (--realert-ms) of what is still firing count from now, as after
        an embedded node's restart."""
        self.history_until = None
        if self.realert_s is not None:
            due = self.clock.now() + self.realert_s
            firing = [a for a in self.node.store.recent_alerts() if a.resolved_at is None]
            self.realerts.extend((due, alert) for alert in firing)

    def publish(self, now: float) -> None:
        """Alerts enter the replicated outbox on every node; only the leader's
        notifier sends them (subscribers and the alert log: every node's own)."""
        alerts = list(self.node.store.alert_outbox)
        notifier, self.notifier = self.notifier, None
        try:
            super().publish(now)
        finally:
            self.notifier = notifier
        if alerts:
            keys = self.member.outbox.add(alerts)
            if notifier is not None and self.member.lease.held():
                notifier.submit(alerts, keys=keys)

    def retarget(self) -> None:
        """Only the leader's timer watches deadlines (it appends the ticks)."""
        if self.member.lease.held():
            super().retarget()
            return
        target = self.realerts[0][0] if self.realerts else None  # reminders only
        if target != self.timer_target:
            self.timer_target = target
            self._timer_changed.set()


def _changes_nothing(request: Request) -> bool:
    handler = request[2]
    return handler is None or not handler.mutates


def _is_auth(request: Request) -> bool:
    handler = request[2]
    return handler is not None and handler.name == "auth"
