"""Jobs by status, kept as events arrive, so ``list_jobs`` with a ``status``
reads only the stretches of jobs where that status occurs.

Jobs are never removed and keep their first-seen position (``Job.seq``, the
order of ``Store.jobs``, and the index of ``order``). Positions are cut into
blocks of ``BLOCK``; for each status the index counts the jobs of each block
that have it. A page by status skips the blocks without one, so its cost
follows the jobs it returns, not the jobs the store holds.
"""

from __future__ import annotations

from collections.abc import Iterator

from .model import Job, Status

BLOCK_BITS = 10
BLOCK = 1 << BLOCK_BITS
BLOCK_MASK = BLOCK - 1


class StatusIndex:
    def __init__(self) -> None:
        self.blocks: dict[Status, list[int]] = {s: [] for s in Status}
        self.order: list[Job] = []  # by position

    def added(self, job: Job) -> None:
        """A new job, at the end of the order (``job.seq`` is its position)."""
        order = self.order
        if not len(order) & BLOCK_MASK:  # a block starts
            for counts in self.blocks.values():
                counts.append(0)
        order.append(job)
        self.blocks[job.status][job.seq >> BLOCK_BITS] += 1

    def restore(self, order: list[Job], counts: dict[str, list[int]] | None) -> None:
        """After a snapshot load: every job, in order (``seq`` already set), and
        the counts per block as the snapshot kept them (None: counted again, a
        snapshot written before they were kept)."""
        self.order = order
        size = (len(order) + BLOCK - 1) >> BLOCK_BITS
        if counts is not None and all(len(counts.get(s.value, ())) == size for s in Status):
            self.blocks = {s: counts[s.value] for s in Status}
            return
        self.blocks = blocks = {s: [0] * size for s in Status}
        for job in order:
            blocks[job.status][job.seq >> BLOCK_BITS] += 1

    def scan(self, status: Status, offset: int) -> Iterator[tuple[int, Job]]:
        """(position, job) of the jobs from ``offset`` on whose block holds a job
        of ``status`` (the caller checks each job's own status), in order."""
        counts = self.blocks[status]
        order = self.order
        end = len(order)
        position = offset
        while position < end:
            block = position >> BLOCK_BITS
            block_end = min(end, (block + 1) << BLOCK_BITS)
            if counts[block]:
                yield from enumerate(order[position:block_end], position)
            position = block_end
