"""What a run adds that changes no reply, applied at the end of the turn.

``Store.complete`` and ``Store.fail`` append entries to ``Analytics.pending``
(see ``analytics.COMPLETED_RUN``); ``settle`` applies them in the order they
were made: the overall duration sketch, the duration histogram, cost sums and
the cost ranking, failures by hour, high-memory argument lists. The figures
are those that applying each at once would give (the same additions in the
same order); only when they are made moves, off each message's apply, to one
loop a turn.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import TYPE_CHECKING

from .history import DURATION_BUCKETS_S
from .ranking import RANKED
from .sketches import _add

if TYPE_CHECKING:
    from .analytics import Analytics

# The kinds of pending entry (the first item of each). PRICED_AGAIN: a job's
# last duration changed (update_status completed), so its price from its
# record may have (see ``ranking``).
COMPLETED_RUN, FAILED_RUN, FAILURE, PRICED_AGAIN = 0, 1, 2, 3


def settle(analytics: Analytics) -> None:
    pending = analytics.pending
    analytics.pending = []
    overall = analytics.overall
    buckets = analytics.history.duration_buckets
    costs = analytics.costs
    model = analytics.cost_model
    free_mb, block_mb = model.free_memory_mb, model.memory_block_mb
    per_block, per_cpu, per_second = (
        model.price_per_block,
        model.price_per_cpu_percent,
        model.price_per_second,
    )
    ranking = analytics.ranking
    offer, ranked_ids, ranked = ranking.offer, ranking.keys, ranking.ranked
    ceil = math.ceil
    for entry in pending:
        kind = entry[0]
        if kind == COMPLETED_RUN:
            _, job, duration_ms, usage, earlier_usage, earlier_ms, info = entry
            job_id = job.job_id
            _add(overall, duration_ms)
            buckets[bisect_left(DURATION_BUCKETS_S, duration_ms / 1000)] += 1
            # CostModel.blocks and .price, inline: the same arithmetic.
            blocks = max(0, ceil(((usage.get("memory_mb", 0) or 0) - free_mb) / block_mb))
            cpu = usage.get("cpu_percent", 0) or 0
            seconds = duration_ms / 1000
            price = blocks * per_block + cpu * per_cpu + seconds * per_second
            sums = costs.get(job_id)
            if sums is not None:  # Analytics.cost's usual case
                sums[0] += 1
                sums[1] += blocks
                sums[2] += cpu
                sums[3] += seconds
                sums[4] += price
                # Offered to the ranking only if it may be in it (ranking.offer's first test).
                total = -sums[4]
                if job_id in ranked_ids or len(ranked) < RANKED or total <= ranked[-1][0][0]:
                    offer(job_id, (total, 0, int(sums[5])))
            elif earlier_usage is None or earlier_ms is None:
                # Its first costed run: priced from its record, which holds it.
                if job_id in ranked_ids or len(ranked) < RANKED or -price <= ranked[-1][0][0]:
                    offer(job_id, (-price, 1, job.seq))
            else:
                analytics.cost(job_id, usage, duration_ms, (earlier_usage, earlier_ms), True)
            if info is not None:
                analytics.memory(
                    job_id,
                    info.get("arguments"),
                    usage.get("memory_mb"),
                    info.get("memory_limit_mb"),
                )
        elif kind == FAILURE:
            analytics.failed(entry[1], entry[2])
        elif kind == PRICED_AGAIN:
            if entry[1].job_id not in costs:
                offer(entry[1].job_id, analytics._record_key(entry[1].job_id))
        else:
            _, job_id, usage, spent_ms, earlier_usage, earlier_ms, info = entry
            if usage:
                analytics.cost(job_id, usage, spent_ms, (earlier_usage, earlier_ms), False)
            if info is not None:
                analytics.memory(
                    job_id,
                    info.get("arguments"),
                    (usage or {}).get("memory_mb"),
                    info.get("memory_limit_mb"),
                )


# -- recording -----------------------------------------------------------------
