"""Job analytics, kept as runs finish: failures by hour, duration percentiles
(a DDSketch per job, fixed memory), the cost of runs, and the argument lists
that keep going over their memory threshold. Part of the snapshot.

Only the store task records; ``report`` reads. Per-job state exists only for
jobs that need it (a second timed run, a failure, a cost), so a million jobs
that ran once cost nothing here.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Any
from zoneinfo import ZoneInfo

from ddsketch.ddsketch import BaseDDSketch

from . import settling
from .costs import CostModel, _position, run_sums
from .history import History
from .hours import (
    FAILURE_DAYS_KEPT,
    _add_by_hour_of_day,
    _count_failure,
    _hours,
    _packed,
    add_failure,
)
from .model import Job
from .ranking import RANKED, CostRanking, Key
from .settling import COMPLETED_RUN, FAILED_RUN, FAILURE, PRICED_AGAIN
from .sketches import _add, _percentiles, _sketch, _sketch_from_row, _sketch_row

__all__ = [
    "COMPLETED_RUN",
    "FAILED_RUN",
    "FAILURE",
    "FAILURE_DAYS_KEPT",
    "PRICED_AGAIN",
    "Analytics",
    "CostModel",
    "_add",
    "_sketch",
    "_sketch_row",
    "run_sums",
]

MAX_ARGUMENT_LISTS = 10_000  # distinct argument lists tracked for high memory
MAX_JOBS_PER_ARGUMENT_LIST = 100  # job ids named per argument list
SLOW_RUN_MIN_RUNS = 20
SMALL_RUNS = 16  # durations per job kept as a list before its sketch starts
P95_EVERY = 8
# What a run adds that changes no reply waits in ``Analytics.pending`` until
# the engine's turn ends, or until anything reads it (``settling``).
SETTLE_AT = 4096  # pending entries settled anyway (a replay, a cluster's apply)


class Analytics:
    def __init__(self, cost_model: CostModel | None = None, slow_run_factor: float = 2.0) -> None:
        self.cost_model = cost_model or CostModel()
        self.slow_run_factor = slow_run_factor  # 0: no slow_run alerts
        self.overall = _sketch()
        self.sketches: dict[str, BaseDDSketch] = {}
        self.small: dict[str, list[float]] = {}  # job_id -> durations, 2..SMALL_RUNS
        self.p95: dict[str, float] = {}  # per job, as last taken (slow_run)
        # job_id -> {epoch hour: failed runs}, the last FAILURE_DAYS_KEPT days;
        # and the same for all jobs together (so the overall report reads at
        # most 720 hours, however many jobs failed).
        # A job that failed in one hour only (most) keeps an int, ``hour << 20 | n``
        # (``_hours`` reads either), a dict per job being ten times the size.
        self.failures: dict[str, dict[int, int] | int] = {}
        self.failures_overall: dict[int, int] = {}
        # job_id -> [runs costed, memory blocks, cpu percent, seconds, cost at the
        # configured prices] (sums): the last ranks jobs without pricing each again.
        self.costs: dict[str, list[float]] = {}
        # argument list (as a tuple) -> [runs over the threshold, {job ids}].
        self.high_memory: dict[tuple[str, ...], list[Any]] = {}
        self.pending: list[tuple[Any, ...]] = []  # see COMPLETED_RUN
        self.history = History()  # the store's (its duration histogram settles here)
        self.jobs: dict[str, Job] = {}  # the store's
        self.ranking = CostRanking()  # the top jobs by cost at the configured prices

    # -- settling what waits for the end of the turn -------------------------------
    def settle(self) -> None:
        """Apply what ``pending`` holds, in order (the engine, after each turn's
        batch; every reader, first). See ``settling``."""
        if self.pending:
            settling.settle(self)

    def duration(self, job_id: str, duration_ms: float, previous_ms: float | None) -> float | None:
        """A completed run's duration. Returns the job's p95 before this run when
        it has enough runs to judge, else None. Only the job's own figures (the
        overall sketch settles with the turn: it decides no alert)."""
        sketch = self.sketches.get(job_id)
        if sketch is None:
            # A job's first few durations are kept as they are (exact, and far
            # cheaper than a sketch for the many jobs that run only a few times);
            # its sketch starts past SMALL_RUNS, before slow_run can judge.
            small = self.small.get(job_id)
            if small is None:
                if previous_ms is None:
                    return None  # the first run: job.duration_ms holds it exactly
                small = self.small[job_id] = [previous_ms]
            small.append(duration_ms)
            if len(small) <= SMALL_RUNS:
                return None
            sketch = self.sketches[job_id] = _sketch()
            for value in small[:-1]:
                _add(sketch, value)
            del self.small[job_id]
        p95 = None
        runs = int(sketch.count)
        if self.slow_run_factor and runs >= SLOW_RUN_MIN_RUNS:
            # A quantile walks the sketch's bins: taken again every P95_EVERY runs
            # (counted, so a replay takes it at the same runs), not every run.
            if (runs - SLOW_RUN_MIN_RUNS) % P95_EVERY == 0 or job_id not in self.p95:
                self.p95[job_id] = sketch.get_quantile_value(0.95) or 0.0
            p95 = self.p95[job_id]
        _add(sketch, duration_ms)
        return p95

    def failed(self, job_id: str, now: float) -> None:
        hour = int(now // 3600)
        add_failure(self.failures, job_id, hour)
        _count_failure(self.failures_overall, hour)

    def cost(
        self,
        job_id: str,
        usage: dict[str, Any],
        duration_ms: float | None,
        earlier: tuple[dict[str, Any] | None, float | None],
        completed: bool,
    ) -> None:
        """A run's cost. A job's only costed run so far is read off the job itself
        (its last completed run's ``resource_usage`` and ``duration_ms``, see
        ``run_sums``): its sums start at its second, seeded with that first one.
        ``earlier``: the job's usage and duration before this report changed them."""
        if duration_ms is None:
            return
        sums = self.costs.get(job_id)
        if sums is None:
            first = run_sums(*earlier, self.cost_model)
            if first is None and completed:
                return  # its first: kept by the job itself
            # The sixth: the order these sums were made in (see ``ranking``).
            sums = self.costs[job_id] = [*(first or [0, 0, 0.0, 0.0, 0.0]), len(self.costs)]
        run = run_sums(usage, duration_ms, self.cost_model)
        assert run is not None  # usage and duration are both given
        for index, value in enumerate(run):
            sums[index] += value
        self.ranking.offer(job_id, (-sums[4], 0, int(sums[5])))

    def _record_key(self, job_id: str) -> Key | None:
        """The rank key of a job priced from its one completed run (its record)."""
        job = self.jobs.get(job_id)
        sums = (
            None if job is None else run_sums(job.resource_usage, job.duration_ms, self.cost_model)
        )
        return None if sums is None or job is None else (-sums[4], 1, job.seq)

    def memory(self, job_id: str, arguments: list[str] | None, memory_mb: Any, limit: Any) -> None:
        """A run with arguments: count it if it went over its limit (else the free memory)."""
        if arguments is None or memory_mb is None:
            return
        threshold = limit if limit is not None else self.cost_model.free_memory_mb
        if memory_mb <= threshold:
            return
        key = tuple(arguments)
        entry = self.high_memory.get(key)
        if entry is None:
            if len(self.high_memory) >= MAX_ARGUMENT_LISTS:
                return
            entry = self.high_memory[key] = [0, set()]
        entry[0] += 1
        if len(entry[1]) < MAX_JOBS_PER_ARGUMENT_LIST:
            entry[1].add(job_id)

    # -- reading -------------------------------------------------------------------
    def failures_last_hours(self, now: float, hours: int) -> list[tuple[int, int]]:
        """(epoch hour, failures) for the ``hours`` clock hours up to now, oldest first."""
        self.settle()
        current = int(now // 3600)
        counts = self.failures_overall
        return [(hour, counts.get(hour, 0)) for hour in range(current - hours + 1, current + 1)]

    def report(
        self,
        zone: str,
        job_id: str | None,
        top: int,
        jobs: dict[str, Job],
        prices: dict[str, float],
    ) -> dict[str, Any]:
        self.settle()

        def last_duration(jid: str) -> float | None:
            job = jobs.get(jid)
            return job.duration_ms if job is not None else None

        tz = ZoneInfo(zone)
        model = CostModel(**{**vars(self.cost_model), **prices})
        overall_failures = [0] * 24
        _add_by_hour_of_day(overall_failures, self.failures_overall, tz)
        ranked = self._ranked(model, top, jobs)
        out: dict[str, Any] = {
            "tz": zone,
            "failures_by_hour_of_day": overall_failures,
            "durations": _percentiles(self.overall),
            "cost_model": vars(model),
            "top_jobs_by_cost": [
                {
                    "job_id": jid,
                    "runs": int(sums[0]),
                    "total": round(total, 4),
                    "average": round(total / sums[0], 4),
                    "durations": self.job_durations(jid, last_duration(jid)),
                }
                for total, jid, sums in ranked
            ],
            "high_memory_arguments": [
                {"arguments": list(key), "runs_over": count, "jobs": sorted(jobs)}
                for key, (count, jobs) in sorted(
                    self.high_memory.items(), key=lambda item: (-item[1][0], item[0])
                )
                if count >= 2
            ][:top],
        }
        if job_id is not None:
            by_hour = [0] * 24
            _add_by_hour_of_day(by_hour, _hours(self.failures.get(job_id)), tz)
            sums = self.sums_of(job_id, jobs)
            total = model.price(*sums[1:4]) if sums else 0.0
            out["job"] = {
                "job_id": job_id,
                "failures_by_hour_of_day": by_hour,
                "durations": self.job_durations(job_id, last_duration(job_id)),
                "cost": {
                    "runs": int(sums[0]) if sums else 0,
                    "total": round(total, 4),
                    "average": round(total / sums[0], 4) if sums else 0.0,
                },
            }
        return out

    def sums_of(self, job_id: str, jobs: dict[str, Job]) -> list[float] | None:
        sums = self.costs.get(job_id)
        if sums is None and job_id in jobs:
            job = jobs[job_id]
            sums = run_sums(job.resource_usage, job.duration_ms, self.cost_model)
        return sums

    def _ranked(self, model: CostModel, top: int, jobs: dict[str, Job]) -> list[Any]:
        """The ``top`` jobs by cost (0: none): at the configured prices from the
        ranking kept as costs change (``ranking``); at other prices, or when the
        ranking must be made again, by reading every job (a slow question at a
        million jobs)."""
        if top == 0:
            return []
        ranking = self.ranking
        if model == self.cost_model and ranking.valid and top <= RANKED:
            out = []
            for job_id in ranking.best(top):
                sums = self.costs.get(job_id)
                if sums is not None:
                    out.append((sums[4], job_id, sums))
                else:
                    job = jobs[job_id]
                    once = run_sums(job.resource_usage, job.duration_ms, model)
                    assert once is not None  # ranked: it has a price
                    out.append((once[4], job_id, once))
            return out
        ranked = self._rank_all(model, max(top, RANKED), jobs)
        if model == self.cost_model:
            ranking.rebuild(
                [
                    (
                        (-total, 0 if job_id in self.costs else 1, _position(sums, jobs[job_id])),
                        job_id,
                    )
                    for total, job_id, sums in ranked[:RANKED]
                ]
            )
        return ranked[:top]

    def _rank_all(self, model: CostModel, top: int, jobs: dict[str, Job]) -> list[Any]:
        """nlargest over every job: those with kept sums first, then those priced
        from their record, in first-seen order (equal totals keep that order)."""
        costs = self.costs
        if model == self.cost_model:
            kept = ((sums[4], jid, sums) for jid, sums in costs.items())
        else:
            kept = ((model.price(*sums[1:4]), jid, sums) for jid, sums in costs.items())
        once = (
            (model.price(*sums[1:4]), jid, sums)
            for jid, job in jobs.items()
            if jid not in costs
            and (sums := run_sums(job.resource_usage, job.duration_ms, model)) is not None
        )
        return heapq.nlargest(top, itertools.chain(kept, once), key=lambda item: item[0])

    def job_durations(self, job_id: str, last_ms: float | None) -> dict[str, Any]:
        sketch = self.sketches.get(job_id)
        if sketch is not None:
            return _percentiles(sketch)
        small = self.small.get(job_id)
        if small is not None:  # exact, by nearest rank
            ordered = sorted(small)
            n = len(ordered)
            return {
                "runs": n,
                **{
                    name: ordered[max(0, math.ceil(q * n) - 1)]
                    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
                },
            }
        if last_ms is None:
            return {"runs": 0, "p50": None, "p90": None, "p99": None}
        return {"runs": 1, "p50": last_ms, "p90": last_ms, "p99": last_ms}

    # -- snapshot ------------------------------------------------------------------
    def to_snapshot(self) -> dict[str, Any]:
        self.settle()
        return {
            "overall": _sketch_row(self.overall),
            "sketches": {jid: _sketch_row(s) for jid, s in self.sketches.items()},
            "p95": self.p95,
            "small": self.small,
            # A job that failed in one hour only keeps (and writes) it as one int.
            "failures": {
                jid: kept if isinstance(kept, int) else list(kept.items())
                for jid, kept in self.failures.items()
            },
            "costs": self.costs,
            "failures_overall": list(self.failures_overall.items()),
            "high_memory": [
                [list(k), [n, sorted(jobs)]] for k, (n, jobs) in self.high_memory.items()
            ],
            "ranked": self.ranking.best(RANKED) if self.ranking.valid else None,
        }

    def load_snapshot(self, snap: dict[str, Any] | None) -> None:
        self.pending = []
        if snap is None:
            return
        self.overall = _sketch_from_row(snap["overall"])
        self.sketches = {jid: _sketch_from_row(row) for jid, row in snap["sketches"].items()}
        self.p95 = snap.get("p95", {})
        self.small = snap.get("small", {})
        failures = snap["failures"]
        if set(map(type, failures.values())) - {int}:  # some in more than one hour
            failures = {
                jid: h if type(h) is int else _packed(dict(map(tuple, h)))
                for jid, h in failures.items()
            }
        self.failures = failures
        self.costs = snap["costs"]
        for position, sums in enumerate(self.costs.values()):
            if len(sums) == 4:  # written before totals were kept
                sums.append(self.cost_model.price(*sums[1:4]))
            if len(sums) == 5:  # written before the ranking was kept
                sums.append(position)
        self.failures_overall = dict(map(tuple, snap.get("failures_overall", [])))
        self.high_memory = {tuple(k): [n, set(jobs)] for k, (n, jobs) in snap["high_memory"]}
        ranked = snap.get("ranked")
        self.ranking = CostRanking()
        if ranked is None:
            self.ranking.invalidate()  # made again by the first report
        else:
            for job_id in ranked:
                kept = self.costs.get(job_id)
                key = (-kept[4], 0, int(kept[5])) if kept is not None else self._record_key(job_id)
                self.ranking.offer(job_id, key)
