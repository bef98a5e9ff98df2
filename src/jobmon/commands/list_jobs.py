"""list_jobs: a page of job records in the order jobs were first seen, optionally by status."""

from __future__ import annotations

from itertools import islice
from typing import Any

from orjson import Fragment
from orjson import dumps as _dumps

from ..errors import malformed
from ..model import STATUS_BY_NAME
from ..node import Node
from . import fields
from .get_job import record

NAME = "list_jobs"
MUTATES = False
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    status = body.get("status")
    if status is not None and (type(status) is not str or status not in STATUS_BY_NAME):
        shown = fields._show(status).removeprefix("a string ")
        raise malformed(f"unknown status {shown}: expected one of {', '.join(STATUS_BY_NAME)}")
    limit = fields.integer(body, "limit", 1, MAX_LIMIT)
    cursor = body.get("cursor")
    if cursor is None:
        offset = 0
    elif type(cursor) is str and cursor.isascii() and cursor.isdigit() and len(cursor) <= 16:
        offset = int(cursor)
    else:
        raise malformed(
            f"cursor must be the next_cursor string of an earlier page, got {fields._show(cursor)}"
        )
    q = body.get("q")
    if q is not None and (type(q) is not str or len(q) > fields.MAX_JOB_ID_CHARS):
        raise malformed(
            f"q must be a string of at most {fields.MAX_JOB_ID_CHARS} characters "
            f"(a part of the job_id), got {fields._show(q)}"
        )
    return (status, limit or DEFAULT_LIMIT, offset, q or None)


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    status_name, limit, offset, q = args
    status = STATUS_BY_NAME[status_name] if status_name else None
    store = node.store
    jobs = store.jobs
    page = []
    size = 0
    position = len(jobs)  # unless the page fills first
    # Jobs are never removed, so a position in first-seen order is a stable cursor.
    # By status, only the stretches of jobs where it occurs are read (jobindex).
    scanned = (
        enumerate(islice(jobs.values(), offset, None), offset)
        if status is None
        else store.status_index.scan(status, offset)
    )
    for at, job in scanned:
        if (status is None or job.status is status) and (q is None or q in job.job_id):
            row = _dumps(record(node, job))
            page.append(Fragment(row))
            size += len(row)
            if len(page) == limit or size >= fields.PAGE_BYTES:  # the cursor goes on
                position = at + 1
                break
    out = fields.reply("jobs", msg_id)
    out["jobs"] = page
    out["next_cursor"] = str(position) if position < len(jobs) else None
    return out
