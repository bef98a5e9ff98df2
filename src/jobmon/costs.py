"""The cost of runs: seed 003's model, and one run's figures as cost sums."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from .model import Job


@dataclass
class CostModel:
    """Seed 003's model: memory above a free allowance in started blocks, CPU
    percent and seconds, each at a price. Thresholds apply as runs are recorded;
    prices apply when the report is asked for."""

    free_memory_mb: float = 1024
    memory_block_mb: float = 256
    price_per_block: float = 0.10
    price_per_cpu_percent: float = 0.01
    price_per_second: float = 0.05

    def blocks(self, memory_mb: float) -> int:
        return max(0, math.ceil((memory_mb - self.free_memory_mb) / self.memory_block_mb))

    def price(self, blocks: float, cpu_percent: float, seconds: float) -> float:
        return (
            blocks * self.price_per_block
            + cpu_percent * self.price_per_cpu_percent
            + seconds * self.price_per_second
        )


def _position(sums: list[float], job: Job) -> int:
    """A ranked job's place among equal totals: its sums' order, or its own."""
    return int(sums[5]) if len(sums) > 5 else job.seq


def run_sums(
    usage: dict[str, Any] | bytes | None, duration_ms: float | None, model: CostModel
) -> list[float] | None:
    """One completed run as cost sums, or None without its usage and duration."""
    if usage is None or duration_ms is None:
        return None
    if type(usage) is bytes:  # as a job keeps it (Job.resource_usage)
        usage = orjson.loads(usage)
    assert isinstance(usage, dict)
    blocks = model.blocks(usage.get("memory_mb", 0) or 0)
    cpu = usage.get("cpu_percent", 0) or 0
    seconds = duration_ms / 1000
    return [1, blocks, cpu, seconds, model.price(blocks, cpu, seconds)]
