"""Jobs as snapshot rows, and back: this format and the one before it.

A row is a ``Job``'s slots in order (``ROW``, read at C speed), ``more`` as
the array of ``JobMore``'s slots or null, ``resource_usage`` (its JSON) in
base64, ``seq`` last; a snapshot that holds such rows says ``"job_rows": 2``.
A file snapshot's rows decode straight into ``Job`` structs (``load_state``,
in C: the bulk of a restart).

The rows before (no ``job_rows`` key, what jobmon wrote until 2026-12-02):
the 18 slots a ``Job`` had then (``JobV1``; older rows are shorter), without
``seq`` (a row's place gave it), ``resource_usage`` as an object. They are
read into today's jobs, once, by a loop: an operator upgrading in place
restarts from the snapshot they have, and the next compaction writes rows of
this format.
"""

from __future__ import annotations

from base64 import b64decode
from operator import attrgetter
from typing import Any

import msgspec
import orjson

from .model import STATUS_BY_NAME, Job, JobMore, Status, kept_json

ROW_FORMAT = 2
ROW = attrgetter(*Job.__struct_fields__)


class JobV1(msgspec.Struct, array_like=True, gc=False):
    """A row of the format before ``ROW_FORMAT`` 2."""

    job_id: str
    status: Status
    progress: int | float = 0
    created_at: int | float = 0.0
    updated_at: int | float = 0.0
    started_at: int | float | None = None
    finished_at: int | float | None = None
    runs: int = 1
    duration_ms: int | float | None = None
    resource_usage: Any = None
    error: str | None = None
    retries: int = 0
    max_retries: int | None = None
    alerts: Any = None
    monitor: Any = None
    last_success_at: int | float | None = None
    recent_runs: Any = None
    run_info: Any = None


class State(msgspec.Struct):
    """A snapshot body that starts ``{"job_rows":2,``: every part ``Store.to_snapshot``
    writes (a test checks none is missing here), read in one pass, its job rows
    straight into jobs. (A body cut into parts first is scanned twice: a fifth
    of a million jobs' recovery.)"""

    job_rows: Any = msgspec.UNSET
    default_max_retries: Any = msgspec.UNSET
    settings: Any = msgspec.UNSET
    timed_runs: Any = msgspec.UNSET
    duration_sum_ms: Any = msgspec.UNSET
    next_alert_id: Any = msgspec.UNSET
    alerts: Any = msgspec.UNSET
    alert_history: Any = msgspec.UNSET
    jobs: list[Job] | msgspec.UnsetType = msgspec.UNSET
    status_blocks: Any = msgspec.UNSET
    history: Any = msgspec.UNSET
    analytics: Any = msgspec.UNSET
    live_runs: Any = msgspec.UNSET
    checks: Any = msgspec.UNSET
    seen_events: Any = msgspec.UNSET


STATE = msgspec.json.Decoder(State)
JOB_ROWS = msgspec.json.Decoder(list[Job])
STATE_PREFIX = b'{"job_rows":%d,' % ROW_FORMAT
V1_ROWS = msgspec.json.Decoder(list[JobV1])
_SECTIONS = msgspec.json.Decoder(dict[str, msgspec.Raw])


def load_state(body: bytes | memoryview) -> dict[str, Any]:
    """A snapshot's body (``Store.to_snapshot``), its job rows decoded straight
    into jobs (rows of the format before, through ``JobV1``); every other part
    as it is in JSON."""
    if body[: len(STATE_PREFIX)] == STATE_PREFIX:
        decoded = STATE.decode(body)
        return {
            name: value
            for name in State.__struct_fields__
            if (value := getattr(decoded, name)) is not msgspec.UNSET
        }
    sections = _SECTIONS.decode(body)
    jobs = sections.pop("jobs", None)
    state = {key: orjson.loads(memoryview(raw)) for key, raw in sections.items()}
    if jobs is not None:
        if state.get("job_rows") == ROW_FORMAT:  # written by a dict whose order differs
            state["jobs"] = JOB_ROWS.decode(jobs)
        else:
            state["jobs"] = [_from_v1(seq, old) for seq, old in enumerate(V1_ROWS.decode(jobs))]
            state["job_rows"] = ROW_FORMAT
    return state


def _from_v1(seq: int, old: JobV1) -> Job:
    more = JobMore(old.error, old.retries, old.max_retries, old.alerts, old.monitor, old.run_info)
    usage = old.resource_usage
    return Job(
        old.job_id,
        old.status,
        old.progress,
        old.created_at,
        old.updated_at,
        old.started_at,
        old.finished_at,
        old.runs,
        old.duration_ms,
        None if usage is None else kept_json(usage),
        old.last_success_at,
        old.recent_runs,
        None if more.is_empty() else more,
        seq,
    )


def jobs_of_lists(rows: list[list[Any]], row_format: Any) -> list[Job]:
    """Rows as orjson reads them (a cluster's snapshot, in Redis), either format."""
    if row_format == ROW_FORMAT:
        jobs = []
        for row in rows:
            job = Job(*row)
            job.status = STATUS_BY_NAME[row[1]]
            if job.resource_usage is not None:
                job.resource_usage = b64decode(row[9])
            if job.more is not None:
                job.more = JobMore(*row[12])
            jobs.append(job)
        return jobs
    olds = []
    for row in rows:
        old = JobV1(*row)
        old.status = STATUS_BY_NAME[row[1]]
        olds.append(old)
    return [_from_v1(seq, old) for seq, old in enumerate(olds)]
