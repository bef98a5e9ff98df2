"""A restart's recovery in process, step by step: `DataDir.recover` on a copy
of a data directory (bench/scale.py's, kept with `--keep`), timed around the
snapshot's decode (`load_state`, the checksum alongside it), the store's load
of the decoded state (`Store.load_snapshot`: the jobs dict, the status index,
analytics, deadlines...) and the whole. `--pythonpath DIR` runs another source
tree (main's `src/`) in a child; `--against DIR DATA` alternates the two, each
on its own data directory, and prints the medians.

    python bench/recovery.py DATA [--rounds 5] [--against /tmp/main/src MAIN_DATA]
    python bench/recovery.py DATA --profile     # cProfile of one recovery
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def once(data: Path, profile: bool) -> dict[str, float]:
    """Seconds per step of one recovery of a copy of ``data``."""
    from jobmon import persistence
    from jobmon.node import Node
    from jobmon.store import Store

    steps = dict.fromkeys(("decode", "load", "recover", "cpu"), 0.0)
    loads = persistence.load_state
    store_load = Store.load_snapshot

    def timed_loads(body: Any) -> Any:
        started = time.perf_counter()
        try:
            return loads(body)
        finally:
            steps["decode"] += time.perf_counter() - started

    def timed_load(self: Store, snap: dict[str, Any]) -> None:
        started = time.perf_counter()
        try:
            store_load(self, snap)
        finally:
            steps["load"] += time.perf_counter() - started

    persistence.load_state = timed_loads  # type: ignore[assignment]
    Store.load_snapshot = timed_load  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="jobmon-recovery-") as work:
        copy = Path(work) / "data"
        shutil.copytree(data, copy)
        (copy / "LOCK").unlink(missing_ok=True)
        node = Node(Store())
        data_dir = persistence.DataDir(copy, 1 << 40)
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        cpu, started = time.process_time(), time.perf_counter()
        data_dir.recover(node, None)
        steps["recover"] = time.perf_counter() - started
        steps["cpu"] = time.process_time() - cpu
        if profiler is not None:
            import pstats

            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(20)
        data_dir.close()
    return steps


def child(pythonpath: str | None, data: Path) -> dict[str, float]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run(
        [sys.executable, __file__, str(data), "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    steps: dict[str, float] = json.loads(out.stdout)
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pythonpath", default=None)
    parser.add_argument("--against", nargs=2, metavar=("SRC", "DATA"), default=None)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.json or args.profile:
        print(json.dumps(once(args.data, args.profile)))
        return
    trees = [("this tree", args.pythonpath, args.data)]
    if args.against:
        trees.append((args.against[0], args.against[0], Path(args.against[1])))
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in trees}
    for _ in range(args.rounds):
        for label, pythonpath, data in trees:
            results[label].append(child(pythonpath, data))
    for label, rounds in results.items():
        medians = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        other = medians["recover"] - medians["decode"] - medians["load"]
        print(
            f"{label}: recover {medians['recover']:.3f} s (cpu {medians['cpu']:.3f}): "
            f"decode {medians['decode']:.3f}, store load {medians['load']:.3f}, "
            f"the rest (read, checksum wait, journal) {other:.3f}; "
            f"recover per round {[round(r['recover'], 3) for r in rounds]}"
        )


if __name__ == "__main__":
    main()
