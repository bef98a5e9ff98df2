"""Celery's events, as jobmon's protocol messages (no Celery import here).

A task name is a job; each execution is a run of it whose ``run_id`` is the
Celery task id, so executions that overlap are runs of their own. Each worker is
the job ``celery-worker:<hostname>``, kept alive by heartbeats with the
time-to-live Celery itself gives them (twice the worker's heartbeat interval).

Only ``task-received`` (and ``task-sent``) names the task, so the name is kept
by task id in a bounded map (``Translator.tasks``); it is the only state here,
and at start it is seeded from the store's live runs, so a jobmon restart keeps
the names of the runs that were going on.

Every message carries ``event_id``: built from the Celery event alone (what a
task id, or a worker, sent, and its own timestamp), so every jobmon node that
receives the same Celery event builds the same id, and a node that drops
repeated event_ids keeps one (see README, "Watching Celery").
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

WORKER_PREFIX = "celery-worker:"
BROKER_PREFIX = "celery-broker:"
UNNAMED_TASK = "celery-unnamed-task"  # events of a task whose task-received was missed
MAX_TASKS = 100_000  # task ids whose name is remembered (Celery's State keeps 10,000)
MAX_WORKERS = 10_000
MAX_EVENT_ID_CHARS = 128
MAX_ERROR_CHARS = 2000
DEFAULT_FREQ_S = 2.0  # celery worker --heartbeat-interval's default
# Celery calls a worker offline this many heartbeat intervals after its last
# (celery.events.state.HEARTBEAT_EXPIRE_WINDOW, 200 %).
EXPIRE_WINDOW = 2.0

ENDED = frozenset({"succeeded", "failed", "rejected", "revoked", "cancelled"})
# event_id parts of a worker event's messages: running 0, heartbeat 1 (0 alone),
# and for a restart the old run's end and the new run's start.
ENDED_PART = 2
RESTARTED_PART = 3
_NOT_REGISTERED = re.compile(r"NotRegistered\('(.+)'\)")
_EMPTY_REPR = re.compile(r"\w+\(\)")


class Seen:
    """What is known of one task id: its name and where its attempts stand."""

    __slots__ = ("name", "retries", "retried", "started", "state")

    def __init__(self, name: str, retries: int, state: str) -> None:
        self.name = name
        self.retries = retries  # the highest `retries` a task-received carried
        self.retried = 0  # task-retried events seen
        self.started: int | None = None  # the attempt that last started
        self.state = state  # the last event's state ("received", "started", ...)


def event_id(event: dict[str, Any], part: int = 0) -> str:
    """The stable id of the ``part``-th message built from one Celery event: the
    same on every node that receives it, and different for a task's next attempt
    or a redelivery (whose events carry timestamps of their own)."""
    key = event.get("uuid") or event.get("hostname") or "?"
    kind = str(event.get("type", "?")).removeprefix("task-").removeprefix("worker-")
    text = f"celery:{key}:{kind}:{event.get('timestamp', 0)!r}"
    if part:
        text += f":{part}"
    if len(text) > MAX_EVENT_ID_CHARS:
        text = "celery:" + hashlib.sha256(text.encode()).hexdigest()
    return text


def redact(url: str) -> str:
    """The broker URL without its password, for job ids and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + host))


def broker_job(url: str) -> str:
    return BROKER_PREFIX + redact(url)


def worker_job(hostname: str) -> str:
    return WORKER_PREFIX + hostname


def ttl_ms(freq_s: float) -> int:
    return max(1, round(EXPIRE_WINDOW * freq_s * 1000))


class Translator:
    """One cluster's events -> message bodies for ``Engine.ask`` (in order)."""

    def __init__(
        self, max_tasks: int = MAX_TASKS, worker_live: Callable[[str], bool] | None = None
    ) -> None:
        self.max_tasks = max_tasks
        # Whether a worker job's run is going, as the store has it: for a worker
        # this translator has not heard yet (jobmon restarted since it came online).
        self.worker_live = worker_live or (lambda job_id: False)
        self.tasks: OrderedDict[str, Seen] = OrderedDict()
        # hostname -> [heartbeat interval in s, main pid, online]
        self.workers: OrderedDict[str, list[Any]] = OrderedDict()
        self.unnamed = 0  # task events for task ids never seen received
        self.ignored = 0  # events of types jobmon has no use for

    def seed(self, live_runs: dict[str, dict[str, Any]]) -> int:
        """The runs live in the store (job_id -> run_id -> run) at start: their
        names, so a restart does not forget the tasks going on."""
        for job_id, runs in live_runs.items():
            for run_id, run in runs.items():
                seen = Seen(job_id, 0, "started" if run.status.value == "running" else "received")
                self._remember(run_id, seen)
        return len(self.tasks)

    def online_workers(self) -> list[str]:
        return [host for host, (_, _, online) in self.workers.items() if online]

    def translate(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if type(kind) is not str:
            self.ignored += 1
            return []
        if kind.startswith("task-"):
            uuid = event.get("uuid")
            if type(uuid) is not str or not uuid:
                self.ignored += 1
                return []
            return self._task(kind[5:], uuid, event)
        if kind.startswith("worker-") and type(event.get("hostname")) is str:
            return self._worker(kind[7:], event)
        self.ignored += 1
        return []

    # -- tasks ---------------------------------------------------------------
    def _task(self, state: str, uuid: str, event: dict[str, Any]) -> list[dict[str, Any]]:
        seen = self.tasks.get(uuid)
        if state in ("received", "sent"):
            name = event.get("name")
            retries = _count(event.get("retries"))
            if seen is None or seen.state in ENDED:
                # A new task, or one delivered again after it ended: a new run.
                seen = Seen(name if type(name) is str and name else UNNAMED_TASK, retries, state)
                self._remember(uuid, seen)
                return [self._status(event, seen, uuid, "queued")]
            # The next attempt's task-received comes before the last one's
            # task-retried: the run is retrying already, not queued again.
            seen.retries = max(seen.retries, retries)
            self.tasks.move_to_end(uuid)
            return []
        if seen is None:
            seen = Seen(self._name_of_unseen(event), 0, state)
            self._remember(uuid, seen)
        elif seen.state in ENDED and state in ("rejected", "revoked", "cancelled"):
            # After the outcome: Reject sends task-failed then task-rejected, and
            # several workers may each announce one revoke.
            return []
        previous, seen.state = seen.state, state
        if state == "started":
            seen.started = seen.retries
            return [self._status(event, seen, uuid, "running")]
        if state == "succeeded":
            runtime = _positive(event.get("runtime"))
            if runtime is None:
                return [self._status(event, seen, uuid, "completed")]
            body = self._body("job_completed", event, seen, uuid)
            body["duration_ms"] = round(runtime * 1000)
            return [body]
        if state == "retried":
            # The attempt that ran (task-failed/-retried carry no count).
            attempt = seen.started if seen.started is not None else seen.retried
            seen.retried = attempt + 1
            return [self._failed(event, seen, uuid, attempt, attempt + 1)]
        if state == "failed":
            # Celery sends task-failed only when the task gives up, so it always
            # counts as the last attempt: max_retries is the count itself.
            attempt = max(seen.retries, seen.retried)
            return [self._failed(event, seen, uuid, attempt, attempt)]
        if state == "rejected" and event.get("requeue") is True:
            seen.state = previous if previous not in ENDED else "received"
            return [self._status(event, seen, uuid, "queued")]
        if state in ("rejected", "revoked", "cancelled"):
            return [self._status(event, seen, uuid, "cancelled")]
        seen.state = previous  # a state jobmon does not know changes nothing
        self.ignored += 1
        return []

    def _name_of_unseen(self, event: dict[str, Any]) -> str:
        match = _NOT_REGISTERED.fullmatch(str(event.get("exception", "")))
        if match:  # the worker has no such task; its name is all it knows
            return match.group(1)
        self.unnamed += 1
        return UNNAMED_TASK

    def _remember(self, uuid: str, seen: Seen) -> None:
        tasks = self.tasks
        tasks[uuid] = seen
        tasks.move_to_end(uuid)
        while len(tasks) > self.max_tasks:
            tasks.popitem(last=False)

    def _body(self, type_: str, event: dict[str, Any], seen: Seen, uuid: str) -> dict[str, Any]:
        body: dict[str, Any] = {"type": type_, "job_id": seen.name[:256], "run_id": uuid[:128]}
        at = _positive(event.get("timestamp"))
        if at is not None:
            body["at"] = at  # when it happened on the worker (late events keep their time)
        body["event_id"] = event_id(event)
        return body

    def _status(self, event: dict[str, Any], seen: Seen, uuid: str, status: str) -> dict[str, Any]:
        body = self._body("update_status", event, seen, uuid)
        body["status"] = status
        return body

    def _failed(
        self, event: dict[str, Any], seen: Seen, uuid: str, retries: int, max_retries: int
    ) -> dict[str, Any]:
        body = self._body("job_failed", event, seen, uuid)
        body["error"] = error_text(event)
        body["retries"] = retries
        body["max_retries"] = max_retries
        return body

    # -- workers -------------------------------------------------------------
    def _worker(self, state: str, event: dict[str, Any]) -> list[dict[str, Any]]:
        host: str = event["hostname"]
        known = self.workers.get(host)
        pid = event.get("pid")
        freq = _positive(event.get("freq"))
        # The heartbeat a control command asks for (on every receiver's wake-up)
        # says freq=5 whatever the worker's interval: only regular ones, which
        # carry `active`, tell the interval.
        regular = "active" in event and freq is not None
        job_id = worker_job(host)[:256]
        at = _positive(event.get("local_received"))  # liveness by our clock, as Celery's
        if known is None:
            known = [freq if freq is not None else DEFAULT_FREQ_S]
            known += [None, self.worker_live(job_id)]  # its pid is learnt from this event
            self.workers[host] = known
            while len(self.workers) > MAX_WORKERS:
                self.workers.popitem(last=False)
        elif regular:
            known[0] = freq
        self.workers.move_to_end(host)
        base: dict[str, Any] = {"job_id": job_id}
        if at is not None:
            base["at"] = at
        if state == "offline":
            known[2] = False
            return [
                {
                    **base,
                    "type": "update_status",
                    "status": "completed",
                    "event_id": event_id(event),
                }
            ]
        if state not in ("online", "heartbeat"):
            self.ignored += 1
            return []
        out = []
        # Online while its run is going, or beating under another pid: the worker
        # was restarted without a clean stop (kill -9, a crash, a lost host). Its
        # run is its uptime: the old one ends (cancelled: it never said how), a
        # new one starts. Each message keeps its own event_id part, so nodes that
        # knew the worker differently still apply each once.
        restarted = bool(known[2]) and (
            state == "online" or (known[1] is not None and pid is not None and known[1] != pid)
        )
        if restarted:
            out.append({**base, "type": "update_status", "status": "cancelled",
                        "event_id": event_id(event, ENDED_PART)})  # fmt: skip
        if restarted or state == "online" or not known[2] or known[1] != pid:
            # Online (or first heard of, or restarted): a run of the worker job,
            # which its heartbeats keep alive until it ends.
            part = RESTARTED_PART if restarted else 0
            out.append({**base, "type": "update_status", "status": "running",
                        "event_id": event_id(event, part)})  # fmt: skip
        known[1], known[2] = pid, True
        out.append(
            {
                **base,
                "type": "heartbeat",
                "ttl_ms": ttl_ms(known[0]),
                "for_run": True,
                "event_id": event_id(event, 1 if out else 0),
            }
        )
        return out


def error_text(event: dict[str, Any]) -> str:
    """The exception as Celery wrote it (``ValueError('kaboom')``); when that says
    nothing (``ExceptionWithTraceback()``), the traceback's last line."""
    text = str(event.get("exception") or "")
    traceback = event.get("traceback")
    if (not text or _EMPTY_REPR.fullmatch(text)) and type(traceback) is str:
        lines = [line.strip() for line in traceback.splitlines() if line.strip()]
        if lines:
            text = lines[-1]
    return text[:MAX_ERROR_CHARS] or "task failed (Celery gave no exception)"


def _positive(value: Any) -> float | None:
    """A number > 0 (bool is not one), else None."""
    if type(value) in (int, float) and value > 0:
        return float(value)
    return None


def _count(value: Any) -> int:
    return value if type(value) is int and 0 <= value < 2**31 else 0
