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

from typing import Any

RANKED = 100  # get_analytics' largest ``top``
Key = tuple[float, int, int]


class CostRanking:
    def __init__(self) -> None:
        self.keys: dict[str, Key] = {}
        self.valid = True
        self._worst: tuple[Key, str] | None = None  # the largest key, once full

    def offer(self, job_id: str, key: Key | None) -> None:
        """The job's key now (None: it has no cost)."""
        keys = self.keys
        old = keys.get(job_id)
        if old is not None:
            if key is None:
                del keys[job_id]
                if len(keys) == RANKED - 1:
                    self.valid = False  # a job left out may take its place
            else:
                keys[job_id] = key
                if key > old and len(keys) == RANKED:
                    self.valid = False
            self._worst = None
            return
        if key is None:
            return
        if len(keys) < RANKED:
            keys[job_id] = key
            self._worst = None
            return
        worst = self._worst
        if worst is None:
            worst = self._worst = max((k, j) for j, k in keys.items())
        if key < worst[0]:
            del keys[worst[1]]
            keys[job_id] = key
            self._worst = None

    def best(self, top: int) -> list[str]:
        """The ``top`` job ids, best first."""
        return [job_id for job_id, _ in sorted(self.keys.items(), key=_second)[:top]]

    def rebuild(self, ranked: list[tuple[Key, str]]) -> None:
        """From a ranking of every job (the RANKED best (key, job_id), best first)."""
        self.keys = {job_id: key for key, job_id in ranked}
        self._worst = None
        self.valid = True

    def invalidate(self) -> None:
        self.valid = False


def _second(item: tuple[str, Key]) -> Any:
    return item[1]
