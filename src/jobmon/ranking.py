"""The jobs that cost the most at the configured prices, kept as their costs
change, so ``get_analytics``' top_jobs_by_cost never reads every job.

A job's rank key is ``(-total, group, position)``, smallest first: ``group`` 0
for a job whose sums ``Analytics.costs`` keeps (``position``: the order those
sums were made in), 1 for a job priced from its one completed run (``position``:
its first-seen order, ``Job.seq``). That is the order the full ranking reads
jobs in, so equal totals come out in the same order as it gives them.

The ranking holds the ``RANKED`` best keys of all. A job's total only grows,
except a job priced from its record whose last duration is reported again
(``update_status`` completed): should a ranked job's key get worse while the
ranking is full, a job left out might now belong in it, and the next report
ranks every job once more (``valid`` is False until then).
"""

from __future__ import annotations

from bisect import bisect_left, insort

RANKED = 100  # get_analytics' largest ``top``
Key = tuple[float, int, int]


class CostRanking:
    def __init__(self) -> None:
        self.keys: dict[str, Key] = {}
        # The same, sorted, the worst last (settling reads both, to offer only
        # what may be ranked).
        self.ranked: list[tuple[Key, str]] = []
        self.valid = True

    def offer(self, job_id: str, key: Key | None) -> None:
        """The job's key now (None: it has no cost)."""
        keys = self.keys
        old = keys.get(job_id)
        ranked = self.ranked
        if old is not None:
            del ranked[bisect_left(ranked, (old, job_id))]
            if key is None:
                del keys[job_id]
                if len(keys) == RANKED - 1:
                    self.valid = False  # a job left out may take its place
                return
            keys[job_id] = key
            insort(ranked, (key, job_id))
            if key > old and len(keys) == RANKED:
                self.valid = False  # got worse: a job left out may now be better
            return
        if key is None:
            return
        if len(keys) == RANKED:
            if key >= ranked[-1][0]:
                return
            del keys[ranked.pop()[1]]
        keys[job_id] = key
        insort(ranked, (key, job_id))

    def best(self, top: int) -> list[str]:
        """The ``top`` job ids, best first."""
        return [job_id for _, job_id in self.ranked[:top]]

    def rebuild(self, ranked: list[tuple[Key, str]]) -> None:
        """From a ranking of every job (the RANKED best (key, job_id), best first)."""
        self.keys.clear()
        self.keys.update((job_id, key) for key, job_id in ranked)
        self.ranked[:] = sorted(ranked)
        self.valid = True

    def invalidate(self) -> None:
        self.valid = False
