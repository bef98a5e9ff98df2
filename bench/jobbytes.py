"""Where a job's bytes are: fill N jobs in process (bench/scale.py's fill through
`Engine.execute`, in turns of 2,600 as bench/hotpath.py does), or recover a data
directory (`load DIR`: after a restart), then the RSS it took per job and
`sys.getsizeof` by part over every 7th job (objects shared with other jobs, such
as the `Status` members, counted once).

    python bench/jobbytes.py fill 1000000
    python bench/jobbytes.py load DATA_DIR
"""

import asyncio
import gc
import logging
import sys
import tempfile
import time
from collections import Counter, defaultdict, deque
from pathlib import Path


def rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def fill(n):
    import scale
    from jobmon.clock import FakeClock
    from jobmon.engine import Engine
    from jobmon.node import Node
    from jobmon.persistence import DataDir
    from jobmon.protocol import decode
    from jobmon.store import Store

    work = tempfile.mkdtemp(prefix="mem-acc-")

    async def run():
        clock = FakeClock(1764642000.123)
        node = Node(Store())
        dd = DataDir(Path(work), 1 << 40)
        dd.recover(node, None)
        engine = Engine(node, clock, dd)
        gc.collect()
        before = rss()
        buf = []
        for i in range(n):
            buf += scale.job_lines(i)
            if len(buf) >= 2600 or i == n - 1:
                inbox = deque(r for r in map(decode, buf) if r is not None)
                now = clock.now()
                engine.execute(inbox, now)
                dd.writer.pending.clear()
                engine.publish(now)
                clock.advance(0.0123)
                buf = []
        node.store.settle()
        gc.collect()
        return node, rss() - before

    return asyncio.run(run())


def load(path):
    import shutil

    from jobmon.node import Node
    from jobmon.persistence import DataDir
    from jobmon.store import Store

    work = tempfile.mkdtemp(prefix="mem-acc-")
    shutil.copytree(path, work, dirs_exist_ok=True)
    node = Node(Store())
    gc.collect()
    before = rss()
    t = time.perf_counter()
    DataDir(Path(work), 1 << 40).recover(node, None)
    print("recover s", round(time.perf_counter() - t, 3))
    gc.collect()
    return node, rss() - before


def account(node, every=7):
    import msgspec

    from jobmon.model import Status

    store = node.store
    jobs = list(store.jobs.values())
    n = len(jobs)
    seen = set(id(s) for s in Status) | {id(None), id(True), id(False)}

    def deep(o):
        if id(o) in seen or (type(o) is int and -5 <= o <= 256):
            return 0
        seen.add(id(o))
        size = sys.getsizeof(o)
        if isinstance(o, msgspec.Struct):
            return size + sum(deep(getattr(o, f)) for f in o.__struct_fields__)
        if isinstance(o, dict):
            return size + sum(deep(k) + deep(v) for k, v in o.items())
        if isinstance(o, (list, tuple, set, frozenset, deque)):
            return size + sum(deep(x) for x in o)
        if hasattr(o, "__slots__"):
            return size + sum(deep(getattr(o, s, None)) for s in o.__slots__)
        return size

    parts = defaultdict(int)
    sample = jobs[::every]
    for job in sample:
        seen.add(id(job))
        parts["Job struct"] += sys.getsizeof(job)
        for f in job.__struct_fields__:
            parts[f] += deep(getattr(job, f))
    for k in parts:
        parts[k] /= len(sample)
    # store-level containers, divided per job (unique contents beyond the jobs sampled: approximate)
    cont = {}
    cont["jobs dict (table)"] = sys.getsizeof(store.jobs) / n
    si = store.status_index
    cont["status_index.order"] = sys.getsizeof(si.order) / n
    a = store.analytics
    for name in ("failures", "costs", "small", "sketches", "p95", "high_memory"):
        d = getattr(a, name)
        # deep, excluding keys shared with jobs? count all, keys identity-check
        tot = sys.getsizeof(d)
        keys_own = 0
        for k, v in d.items():
            j = store.jobs.get(k)
            if j is None or j.job_id is not k:
                keys_own += sys.getsizeof(k)
            tot += deep(v) if id(v) not in seen else 0
        cont[f"analytics.{name} (n={len(d)})"] = (tot + keys_own) / n
    h = store.history
    for name in vars(h):
        v = getattr(h, name)
        if isinstance(v, (dict, list)) and len(v) > 1000:
            cont[f"history.{name} (n={len(v)})"] = deep(v) / n
    for name, v in vars(store).items():
        if isinstance(v, (dict, list, deque, set)) and len(v) > 1000 and name not in ("jobs",):
            cont[f"store.{name} (n={len(v)})"] = deep(v) / n
    tot = sum(parts.values()) + sum(cont.values())
    for k, v in sorted(parts.items(), key=lambda kv: -kv[1]):
        if v:
            print(f"  {k:40s} {v:7.1f}")
    for k, v in sorted(cont.items(), key=lambda kv: -kv[1]):
        if v > 0.05:
            print(f"  {k:40s} {v:7.1f}")
    print(f"  accounted total {tot:.1f}")
    # timestamps: shared objects?
    same = Counter()
    for job in sample:
        same["created is started"] += job.created_at is job.started_at
        same["updated is finished"] += job.updated_at is job.finished_at
        same["created==started"] += job.created_at == job.started_at
        same["updated==finished"] += job.updated_at == job.finished_at
    print("  ", {k: round(v / len(sample), 2) for k, v in same.items()})
    ru = sample[1].resource_usage
    print(
        "  resource_usage sample:",
        type(ru),
        ru if not isinstance(ru, bytes) else (ru, sys.getsizeof(ru)),
    )


if __name__ == "__main__":
    logging.getLogger("jobmon.alert").setLevel(logging.ERROR)
    mode, arg = sys.argv[1], sys.argv[2]
    node, delta = fill(int(arg)) if mode == "fill" else load(arg)
    print(
        f"RSS delta {delta / 1e6:.0f} MB = {delta / len(node.store.jobs):.0f} bytes/job, "
        f"jobs {len(node.store.jobs)}"
    )
    account(node)
