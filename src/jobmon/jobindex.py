"""Jobs by status, kept as events arrive, so ``list_jobs`` with a ``status``
reads only the stretches of jobs where that status occurs.

Jobs are never removed and keep their first-seen position (``Job.seq``, the
order of ``Store.jobs``). Positions are cut into blocks of ``BLOCK``; for each
status the index counts the jobs of each block that have it. A page by status
skips the blocks without one (in C, through the jobs' own order), so its cost
follows the jobs it returns, not the jobs the store holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

from .model import Job, Status

BLOCK_BITS = 10
BLOCK = 1 << BLOCK_BITS


class StatusIndex:
    def __init__(self) -> None:
        self.blocks: dict[Status, list[int]] = {s: [] for s in Status}

    def added(self, job: Job) -> None:
        """A new job, at the end of the order."""
        block = job.seq >> BLOCK_BITS
        for counts in self.blocks.values():
            if len(counts) <= block:
                counts.append(0)
        self.blocks[job.status][block] += 1

    def rebuild(self, jobs: dict[str, Job]) -> None:
        """After a snapshot load: every job, in order (``seq`` already set)."""
        size = (len(jobs) + BLOCK - 1) >> BLOCK_BITS
        self.blocks = {s: [0] * size for s in Status}
        blocks = self.blocks
        for job in jobs.values():
            blocks[job.status][job.seq >> BLOCK_BITS] += 1

    def scan(self, jobs: dict[str, Job], status: Status, offset: int) -> Iterator[tuple[int, Job]]:
        """(position, job) of the jobs from ``offset`` on whose block holds a job
        of ``status`` (the caller checks each job's own status), in order."""
        counts = self.blocks[status]
        values = iter(jobs.values())
        position = offset
        if offset:
            next(islice(values, offset - 1, offset), None)  # skip to the offset, in C
        end = len(jobs)
        while position < end:
            block = position >> BLOCK_BITS
            block_end = min(end, (block + 1) << BLOCK_BITS)
            if counts[block] == 0:
                skip = block_end - position
                next(islice(values, skip - 1, skip), None)
                position = block_end
                continue
            for job in islice(values, block_end - position):
                yield position, job
                position += 1
