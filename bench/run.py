"""`make bench`: jobmon under the load generator, for each fsync mode, beside the bare ceiling.

Each round starts a fresh server per target and framing (bare bodies, then
Maelstrom envelopes) and runs bench/load.py against it: pipelined (window 64)
for throughput, then request/response (window 1) for latency. A server of its
own per framing: jobmon's cost per message rises over its first seconds of load
(most likely as its 10,000 jobs' histories fill), so a framing measured second on the same
server paid that and the first did not (bench/README.md). Rounds interleave the
targets, so the ratios compare figures measured minutes apart on this shared
machine; the medians over rounds are reported, as ratios to the ceiling's
(bare) figures of the same rounds.
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


FRAMINGS = ("bare", "envelope")


def one_round(target: str, args: argparse.Namespace, work: Path) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for framing in args.framings:
        out.update(one_framing(target, framing, args, work))
    return out


def one_framing(
    target: str, framing: str, args: argparse.Namespace, work: Path
) -> dict[str, dict[str, float]]:
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
    out = {}
    try:
        suffix = "" if framing == "bare" else "_envelope"
        port, pid = server.port, server.pid
        out["pipelined" + suffix] = servers.run_load(
            port, 64, args.duration, args.conns, pid, ca, framing
        )
        out["reqrep" + suffix] = servers.run_load(
            port, 1, args.latency_duration, args.conns, pid, ca, framing
        )
    finally:
        server.stop()
    return out


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
    parser.add_argument("--framings", nargs="+", choices=FRAMINGS, default=list(FRAMINGS))
    parser.add_argument("--targets", nargs="+", help="a subset of the targets (ceiling always)")
    args = parser.parse_args()
    work = servers.scratch()
    targets = TARGETS + [TLS_TARGET] if args.tls else TARGETS
    if args.targets:
        targets = ["ceiling"] + [t for t in targets if t in args.targets and t != "ceiling"]
    runs: dict[str, list[dict[str, dict[str, float]]]] = {t: [] for t in targets}
    for round_no in range(args.rounds):
        for target in targets:
            result = one_round(target, args, work)
            runs[target].append(result)
            for framing in args.framings:
                suffix = "" if framing == "bare" else "_envelope"
                p, r = result["pipelined" + suffix], result["reqrep" + suffix]
                print(
                    f"round {round_no + 1} {target:24} {framing:8} {p['msgs_per_s']:>9,.0f} "
                    f"msgs/s pipelined  p99 {r['p99_ms']:.2f} ms req/rep  "
                    f"errors {p['errors'] + r['errors']}",
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
        f"{time.strftime('%Y-%m-%d')} on this machine; x ceiling: to the ceiling's bare figures"
    )
    print(
        "| target | framing | pipelined msgs/s | x ceiling | p50 ms | p99 ms | req/rep msgs/s "
        "| req/rep p99 ms | p99 x ceiling | server us/msg | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for target in targets:
        for framing in args.framings:
            suffix = "" if framing == "bare" else "_envelope"
            pipe, rr = "pipelined" + suffix, "reqrep" + suffix
            row = {
                "msgs_per_s": med(target, pipe, "msgs_per_s"),
                "p50_ms": med(target, pipe, "p50_ms"),
                "p99_ms": med(target, pipe, "p99_ms"),
                "reqrep_msgs_per_s": med(target, rr, "msgs_per_s"),
                "reqrep_p99_ms": med(target, rr, "p99_ms"),
                "peak_rss_mb": max(run[rr]["server_peak_rss_mb"] or 0 for run in runs[target]),
            }
            for mode, prefix in ((pipe, ""), (rr, "reqrep_")):
                for side in ("server", "load"):
                    key = f"{side}_cpu_us_per_msg"
                    row[prefix + key] = med(target, mode, key)
            row["throughput_x_ceiling"] = row["msgs_per_s"] / ceiling_tput
            row["p99_x_ceiling"] = row["reqrep_p99_ms"] / ceiling_p99
            summary[target + suffix] = row
            print(
                f"| {target} | {framing} | {row['msgs_per_s']:,.0f} "
                f"| {row['throughput_x_ceiling']:.2f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
                f"| {row['reqrep_msgs_per_s']:,.0f} | {row['reqrep_p99_ms']:.2f} "
                f"| {row['p99_x_ceiling']:.2f} | {row['server_cpu_us_per_msg']:.2f} "
                f"| {row['peak_rss_mb']:.0f} |"
            )
    print()
    for framing in args.framings:
        suffix = "" if framing == "bare" else "_envelope"
        if "jobmon --fsync always" in targets and "jobmon --fsync everysec" in targets:
            always = summary["jobmon --fsync always" + suffix]["msgs_per_s"]
            everysec = summary["jobmon --fsync everysec" + suffix]["msgs_per_s"]
            print(f"{framing}: fsync always / everysec throughput: {always / everysec:.2f}")
    if "envelope" in args.framings and "bare" in args.framings:
        for target in targets:
            ratios = [
                run["pipelined_envelope"]["msgs_per_s"] / run["pipelined"]["msgs_per_s"]
                for run in runs[target]
            ]
            print(
                f"{target}: envelope / bare pipelined throughput, median of the rounds' "
                f"ratios: {statistics.median(ratios):.2f} (rounds {[round(r, 2) for r in ratios]})"
            )
    everysec = summary.get("jobmon --fsync everysec", {}).get("msgs_per_s", 0.0)
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
