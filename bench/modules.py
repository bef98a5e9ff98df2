"""Where a message's Python time goes, by module: cProfile over bench/hotpath.py's path.

The loop of bench/instructions.py (decode, apply, journal each turn of 2,600
messages, publish; the 10,000 jobs of the mix created first), profiled with
cProfile. Each module's figure is its functions' own time plus the built-in
calls (dict lookups, orjson, msgspec) they make directly, shared among the
callers by call count: the bytecode that compiling a module would speed up, and
the C it calls that compiling would not. cProfile slows a message about 3x;
read the shares, not the microseconds. It sees no compiled module's functions
(Cython's leave no profile hooks): run it on the pure-Python tree
(`JOBMON_PURE=1`), which is what choosing the modules to compile needs.

    JOBMON_PURE=1 python bench/modules.py [--framing envelope] [--count N]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
from collections import Counter
from pathlib import Path


def module_of(filename: str) -> str | None:
    """A profile entry's module, as a path under src/ (None: a built-in)."""
    if filename == "~":
        return None
    return filename.split("/src/")[-1] if "/src/" in filename else Path(filename).name


def profile(count: int, warmup: int, framing: str) -> tuple[Counter[str], Counter[str]]:
    """Seconds per module: with the built-ins it calls, and its functions' own."""
    from instructions import pipeline

    profiler = cProfile.Profile()
    with pipeline(count, warmup, framing, False) as (warm, measured, turn):
        for batch in warm:
            turn(None, batch)
        profiler.enable()
        for batch in measured:
            turn(None, batch)
        profiler.disable()
    stats: dict = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for (filename, _, _), (_, _, self_seconds, _, callers) in stats.items():
        module = module_of(filename)
        if module is not None:
            total[module] += self_seconds
            own[module] += self_seconds
            continue
        calls = sum(counts[1] for counts in callers.values()) or 1
        for (caller, _, _), counts in callers.items():
            total[module_of(caller) or "(built-ins)"] += self_seconds * counts[1] / calls
    return total, own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=104_000)
    parser.add_argument("--warmup", type=int, default=52_000)
    parser.add_argument("--framing", choices=("bare", "envelope"), default="bare")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    total, own = profile(args.count, args.warmup, args.framing)
    whole = sum(total.values())
    per = 1e6 / args.count
    print(f"{whole * per:.2f} us/message under cProfile ({args.framing})")
    print(f"{'share':>6} {'us/msg':>7} {'own':>6}  module")
    for module, seconds in total.most_common(args.top):
        print(f"{seconds / whole:6.1%} {seconds * per:7.3f} {own[module] * per:6.3f}  {module}")


if __name__ == "__main__":
    main()
