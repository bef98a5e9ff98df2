"""Every check, in the store task. Each method is a plain synchronous state
change called by a command's ``apply`` (so it is journaled and replayed like
everything else), with the turn's clock reading; uuids come in the request.

A check's timeout (or cron schedule and tz) and grace become its job's
``register_job`` promises (``schedule``, ``grace_ms``, and ``max_runtime_ms``
= grace: a started run that has not finished within it is down, as in
Healthchecks) at its first ping; while it is "new" nothing is expected of it.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from ..errors import Code, RequestError
from ..model import TERMINAL, Job, Status
from .model import (
    BODY_BUDGET,
    DOWN_KINDS,
    MAX_CHECKS,
    OUTPUT_CHARS,
    P_BODY,
    P_N,
    Check,
    flip_status,
)

if TYPE_CHECKING:
    from ..store import Store

RUNNING = Status.RUNNING
COMPLETED = Status.COMPLETED
SETTINGS = ("name", "slug", "tags", "desc", "grace", "manual_resume", "methods", "channels")
TIMING = ("timeout", "grace", "schedule", "tz")


def not_found(what: str) -> RequestError:
    return RequestError(Code.NOT_FOUND, f"no check {what}")


class Checks:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.by_uuid: dict[str, Check] = {}
        self.by_job: dict[str, str] = {}  # job_id -> uuid
        # Ping bodies over all checks, oldest first: (uuid, n); their characters.
        self.bodies: deque[tuple[str, int]] = deque()
        self.body_chars = 0
        self.body_count = 0  # bodies still kept (``bodies`` may hold some gone since)

    # -- finding ----------------------------------------------------------------
    def get(self, key: str) -> Check:
        """By uuid, or by Healthchecks' read-only unique_key."""
        check = self.by_uuid.get(key)
        if check is None and len(key) == 40:
            check = next((c for c in self.by_uuid.values() if c.unique_key == key), None)
        if check is None:
            raise not_found(f"with uuid {key!r}")
        return check

    def by_slug(self, slug: str) -> list[Check]:
        return [c for c in self.by_uuid.values() if c.slug == slug]

    def job_of(self, check: Check) -> Job:
        return self.store.jobs[check.job_id]

    def matching(self, tags: list[str], slug: str | None) -> list[Check]:
        wanted = set(tags)
        return [
            c
            for c in self.by_uuid.values()
            if wanted.issubset(c.tag_list()) and (slug is None or c.slug == slug)
        ]

    # -- creating and changing --------------------------------------------------
    def upsert(
        self, now: float, uuid: str, spec: dict[str, Any], unique: list[str]
    ) -> tuple[Check, bool]:
        """Healthchecks' create: with ``unique``, the first check whose named
        fields equal the spec's is updated instead (False: not created)."""
        if unique and all(name in spec for name in unique):
            for check in self.by_uuid.values():
                if all(getattr(check, name) == spec[name] for name in unique):
                    self.update(now, check, spec)
                    return check, False
        if uuid in self.by_uuid:
            raise RequestError(Code.PRECONDITION_FAILED, f"a check with uuid {uuid!r} exists")
        if len(self.by_uuid) >= MAX_CHECKS:
            raise RequestError(
                Code.PRECONDITION_FAILED,
                f"jobmon keeps at most {MAX_CHECKS} checks; delete one first",
            )
        slug = spec.get("slug", "")
        job_id = slug if slug and slug not in self.by_job else uuid
        check = Check(uuid, job_id, now)
        self.by_uuid[uuid] = check
        self.by_job[job_id] = uuid
        self.update(now, check, spec)
        return check, True

    def update(self, now: float, check: Check, spec: dict[str, Any]) -> None:
        for name in SETTINGS:
            if name in spec:
                setattr(check, name, spec[name])
        if "schedule" in spec:  # a cron check; a schedule wins over a timeout
            check.schedule, check.timeout = spec["schedule"], None
        elif "timeout" in spec:
            check.schedule, check.timeout = None, spec["timeout"]
        if "tz" in spec:
            check.tz = spec["tz"]
        settings: dict[str, Any] = {"channels": check.channels, "max_retries": 0}
        if check.armed and any(name in spec for name in TIMING):
            settings.update(self.promises(check))
        self.store.register(now, check.job_id, settings)
        self._flip(now, check)

    @staticmethod
    def promises(check: Check) -> dict[str, Any]:
        grace_ms = check.grace * 1000
        if check.schedule is not None:
            schedule: dict[str, Any] = {"cron": check.schedule, "tz": check.tz}
        else:
            schedule = {"every_ms": (check.timeout or 0) * 1000}
        return {"schedule": schedule, "grace_ms": grace_ms, "max_runtime_ms": grace_ms}

    def pause(self, now: float, check: Check) -> None:
        self.store.pause(now, check.job_id, None)
        self._flip(now, check)

    def resume(self, now: float, check: Check) -> None:
        """Back to "new", as Healthchecks' resume: nothing is expected until it is
        pinged again, and the incident it was down for is over (its alerts
        resolve), so its next failure alerts anew and its next success is no news."""
        job = self.job_of(check)
        if job.monitor is None or not job.monitor.is_paused(now):
            raise RequestError(Code.PRECONDITION_FAILED, "check is not paused")
        check.armed = False
        check.reset_at = now  # first: a flip as its alerts resolve reads "new"
        self.store.register(now, check.job_id, {"schedule": None, "max_runtime_ms": None})
        self.store.resume(now, check.job_id)
        for kind in [kind for kind in job.alerts or () if kind in DOWN_KINDS]:
            self.store._resolve(job, kind, now)
        self._flip(now, check)

    def delete(self, now: float, check: Check) -> None:
        """The check, its pings and flips go; its job's record stays (jobs are
        never removed), no longer watched."""
        if self.job_of(check).monitor is not None:
            self.store.unregister(now, check.job_id)
        del self.by_uuid[check.uuid]
        if self.by_job.get(check.job_id) == check.uuid:
            del self.by_job[check.job_id]
        for ping in check.pings:
            self._drop_body(ping)

    # -- pings --------------------------------------------------------------------
    def ping(
        self,
        now: float,
        check: Check,
        kind: str,
        rid: str | None,
        exit_status: int | None,
        meta: list[Any],
        body: str | None,
    ) -> list[Any]:
        """One ping: recorded in the check's log, then told to its job as the
        event it stands for. Returns the ping as kept."""
        store = self.store
        job = self.job_of(check)
        monitor = job.monitor
        paused = monitor is not None and monitor.is_paused(now)
        if kind != "log" and check.methods == "POST" and meta[2] != "POST":
            kind = "ign"
        if paused and check.manual_resume:
            kind = "ign"
        duration_s = None
        if kind in ("success", "fail"):
            started = self._start_of(job, rid)
            if started is not None:
                duration_s = round(now - started, 3)
        if kind in ("start", "success", "fail"):
            if paused:
                store.resume(now, check.job_id)
            if not check.armed or job.monitor is None:
                store.register(now, check.job_id, {**self.promises(check), "max_retries": 0})
                check.armed = True
            self._event(now, check, job, kind, rid, exit_status, body)
        check.n_pings += 1
        ping = [check.n_pings, kind, now, *meta, rid, duration_s, body or None, exit_status]
        self._keep(check, ping)
        self._flip(now, check)
        return ping

    def _start_of(self, job: Job, rid: str | None) -> float | None:
        if rid is not None:
            runs = self.store.live_runs.get(job.job_id)
            run = runs.get(rid) if runs is not None else None
            return run.started_at if run is not None else None
        return job.started_at if job.status is RUNNING else None

    def _event(
        self,
        now: float,
        check: Check,
        job: Job,
        kind: str,
        rid: str | None,
        exit_status: int | None,
        body: str | None,
    ) -> None:
        store = self.store
        job_id = check.job_id
        info: dict[str, Any] = {}
        if body:
            info["output"] = body[-OUTPUT_CHARS:]
        if exit_status is not None:
            info["exit_code"] = exit_status
        if kind == "start":
            if rid is not None:
                store.run_status(now, job_id, rid, RUNNING, None, None)
            elif job.status is RUNNING and job.job_id not in store.live_runs:
                # Started again: its time is measured from this start (as Healthchecks).
                job.started_at = now
                store.update_status(now, job_id, RUNNING, None, None)
                if job.monitor is not None:
                    store._arm_run(job, job.monitor, now, restart=True)
            else:
                store.update_status(now, job_id, RUNNING, None, None)
        elif kind == "success":
            if rid is not None and self._start_of(job, rid) is not None:
                store.run_completed(now, job_id, rid, None, {}, info)
            elif rid is not None:
                store.run_status(now, job_id, rid, COMPLETED, None, None)
                self._stamp(job, info, rid)
            elif job.status not in TERMINAL and job.started_at is not None:
                store.complete(now, job_id, None, {}, info or None)
            else:  # no start: a completed run without a duration
                store.update_status(now, job_id, COMPLETED, None, None)
                # After a failure (terminal to terminal) the store keeps the
                # failure's finish; this success is the run's: "new" no more.
                job.finished_at = now
                self._stamp(job, info, None)
        else:  # fail: final, whatever the job's max_retries
            error = f"exit status {exit_status}" if exit_status else "failure signal"
            retries = store.max_retries_of(job)
            if rid is not None:
                store.run_failed(now, job_id, rid, error, retries, None, info, None)
            else:
                store.fail(now, job_id, error, retries, None, info or None)

    @staticmethod
    def _stamp(job: Job, info: dict[str, Any], rid: str | None) -> None:
        if rid is not None:
            info["run_id"] = rid
        if info and job.status in TERMINAL:
            job.run_info = {**(job.run_info or {}), **info}

    def _keep(self, check: Check, ping: list[Any]) -> None:
        """Into the check's log (the oldest ping goes past PINGS_KEPT), its body
        counted against the budget of all bodies (the oldest bodies go past it)."""
        pings = check.pings
        if len(pings) == pings.maxlen:
            self._drop_body(pings[0])
        pings.append(ping)
        body = ping[P_BODY]
        if not body:
            return
        self.body_chars += len(body)
        self.body_count += 1
        self.bodies.append((check.uuid, ping[P_N]))
        while self.body_chars > BODY_BUDGET and self.bodies:
            kept = self._kept(*self.bodies.popleft())
            if kept is not None:
                self._drop_body(kept)
        if len(self.bodies) > 2 * self.body_count + 1024:
            # Entries of bodies gone since (with their pings or checks) are dropped.
            self.bodies = deque(e for e in self.bodies if self._kept(*e) is not None)

    def _kept(self, uuid: str, n: int) -> list[Any] | None:
        """Ping n of a check, if it is still kept and still has its body."""
        check = self.by_uuid.get(uuid)
        if check is None or not check.pings or not check.pings[0][P_N] <= n:
            return None
        ping = check.pings[n - check.pings[0][P_N]]
        return ping if ping[P_BODY] else None

    def _drop_body(self, ping: list[Any]) -> None:
        body = ping[P_BODY]
        if body:
            self.body_chars -= len(body)
            self.body_count -= 1
            ping[P_BODY] = None

    # -- flips --------------------------------------------------------------------
    def _flip(self, now: float, check: Check) -> None:
        status = flip_status(check, self.job_of(check), now)
        if status != check.last_status:
            check.last_status = status
            check.flips.append([now, status])

    def alert_changed(self, job: Job, now: float) -> None:
        """One of a check's job's alerts fired or resolved (the store calls this)."""
        uuid = self.by_job.get(job.job_id)
        if uuid is not None:
            self._flip(now, self.by_uuid[uuid])

    # -- snapshot -------------------------------------------------------------------
    def to_snapshot(self) -> dict[str, Any]:
        return {
            "checks": [check.to_row() for check in self.by_uuid.values()],
            "bodies": list(self.bodies),
        }

    def load_snapshot(self, snap: dict[str, Any] | None) -> None:
        self.by_uuid = {}
        self.by_job = {}
        self.body_chars = self.body_count = 0
        for row in (snap or {}).get("checks", []):
            check = Check.from_row(row)
            self.by_uuid[check.uuid] = check
            self.by_job[check.job_id] = check.uuid
            for ping in check.pings:
                if ping[P_BODY]:
                    self.body_chars += len(ping[P_BODY])
                    self.body_count += 1
        self.bodies = deque(tuple(entry) for entry in (snap or {}).get("bodies", []))
