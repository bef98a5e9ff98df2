"""`make bench`: jobmon under the load generator, for each fsync mode, beside the bare ceiling.

Each round starts a fresh server per target and runs bench/load.py twice against
it: pipelined (window 64) for throughput, request/response (window 1) for
latency. Rounds interleave the targets, so the ratios compare figures measured
minutes apart on this shared machine; the medians over rounds are reported.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import servers

TARGETS = ["ceiling", "jobmon --fsync no", "jobmon --fsync everysec", "jobmon --fsync always"]
TLS_TARGET = "jobmon --fsync everysec --tls"


def one_round(target: str, args: argparse.Namespace, work: Path) -> dict[str, dict[str, float]]:
    data_dir = work / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    ca = None
    if target == "ceiling":
        server = servers.ceiling(work)
    elif target == TLS_TARGET:
        ca, tls_flags = servers.tls_certs(work)
        server = servers.jobmon(data_dir, "--fsync", "everysec", *tls_flags, log_dir=work)
    else:
        fsync = target.rsplit(" ", 1)[1]
        server = servers.jobmon(data_dir, "--fsync", fsync, log_dir=work)
    try:
        pipelined = servers.run_load(server.port, 64, args.duration, args.conns, server.pid, ca)
        reqrep = servers.run_load(server.port, 1, args.latency_duration, args.conns, server.pid, ca)
    finally:
        server.stop()
    return {"pipelined": pipelined, "reqrep": reqrep}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--latency-duration", type=float, default=3.0)
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--out", type=Path, default=servers.BENCH / "results" / "load.json")
    parser.add_argument(
        "--tls", action="store_true", help=f"also {TLS_TARGET!r}: TLS 1.3, a certificate made here"
    )
    args = parser.parse_args()
    work = servers.scratch()
    targets = TARGETS + [TLS_TARGET] if args.tls else TARGETS
    runs: dict[str, list[dict[str, dict[str, float]]]] = {t: [] for t in targets}
    for round_no in range(args.rounds):
        for target in targets:
            result = one_round(target, args, work)
            runs[target].append(result)
            p, r = result["pipelined"], result["reqrep"]
            print(
                f"round {round_no + 1} {target:24} {p['msgs_per_s']:>9,.0f} msgs/s pipelined  "
                f"p99 {r['p99_ms']:.2f} ms req/rep  errors {p['errors'] + r['errors']}",
                flush=True,
            )

    def med(target: str, mode: str, key: str) -> float:
        return statistics.median(run[mode][key] for run in runs[target])

    ceiling_tput = med("ceiling", "pipelined", "msgs_per_s")
    ceiling_p99 = med("ceiling", "reqrep", "p99_ms")
    summary = {}
    print()
    print(
        f"medians of {args.rounds} rounds, {args.conns} connections, "
        f"{time.strftime('%Y-%m-%d')} on this machine"
    )
    print(
        "| target | pipelined msgs/s | x ceiling | p50 ms | p99 ms | req/rep msgs/s "
        "| req/rep p99 ms | p99 x ceiling | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for target in targets:
        row = {
            "msgs_per_s": med(target, "pipelined", "msgs_per_s"),
            "p50_ms": med(target, "pipelined", "p50_ms"),
            "p99_ms": med(target, "pipelined", "p99_ms"),
            "reqrep_msgs_per_s": med(target, "reqrep", "msgs_per_s"),
            "reqrep_p99_ms": med(target, "reqrep", "p99_ms"),
            "peak_rss_mb": max(run["reqrep"]["server_peak_rss_mb"] or 0 for run in runs[target]),
        }
        for mode, prefix in (("pipelined", ""), ("reqrep", "reqrep_")):
            for side in ("server", "load"):
                key = f"{side}_cpu_us_per_msg"
                row[prefix + key] = med(target, mode, key)
        row["throughput_x_ceiling"] = row["msgs_per_s"] / ceiling_tput
        row["p99_x_ceiling"] = row["reqrep_p99_ms"] / ceiling_p99
        summary[target] = row
        print(
            f"| {target} | {row['msgs_per_s']:,.0f} | {row['throughput_x_ceiling']:.2f} "
            f"| {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['reqrep_msgs_per_s']:,.0f} "
            f"| {row['reqrep_p99_ms']:.2f} | {row['p99_x_ceiling']:.2f} "
            f"| {row['peak_rss_mb']:.0f} |"
        )
    always = summary["jobmon --fsync always"]["msgs_per_s"]
    everysec = summary["jobmon --fsync everysec"]["msgs_per_s"]
    print(f"\nfsync always / everysec throughput: {always / everysec:.2f}")
    if args.tls:
        tls, plain = summary[TLS_TARGET], summary["jobmon --fsync everysec"]
        per_round = statistics.median(
            t["pipelined"]["msgs_per_s"] / p["pipelined"]["msgs_per_s"]
            for t, p in zip(runs[TLS_TARGET], runs["jobmon --fsync everysec"], strict=True)
        )
        print(
            f"TLS / plain (everysec): throughput {tls['msgs_per_s'] / everysec:.2f} "
            f"(median of the rounds' ratios {per_round:.2f}), req/rep p99 "
            f"{tls['reqrep_p99_ms'] / plain['reqrep_p99_ms']:.2f}"
        )
        for prefix, mode in (("", "pipelined"), ("reqrep_", "req/rep")):
            server, load = prefix + "server_cpu_us_per_msg", prefix + "load_cpu_us_per_msg"
            print(
                f"CPU per message, {mode}, plain -> TLS: server {plain[server]:.2f} -> "
                f"{tls[server]:.2f} us, load generator {plain[load]:.2f} -> {tls[load]:.2f} us"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "runs": runs}, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
