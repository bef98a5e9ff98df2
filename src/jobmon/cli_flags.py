"""The command line's flags: ``jobmon serve | stdio | send | run | compact``.

Every flag of ``serve`` (and the connection flags of the others) also reads
``JOBMON_<FLAG>`` through ``envflags``: converted only for the subcommand run,
with the same checks as on the command line, and said in ``--help`` with its
default. ``cli`` runs what was parsed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import __version__, tls
from . import cli_values as values
from .accel import describe
from .config import FSYNC_POLICIES, Config
from .envflags import add

LOG_LEVELS = ("debug", "info", "warning", "error")


def _add_connect_flags(p: argparse.ArgumentParser, serving: bool = False) -> None:
    if serving:
        add(
            p,
            "--host",
            type=values.listen_host,
            default="127.0.0.1",
            metavar="HOST",
            help="the address to listen on (0.0.0.0: every interface)",
        )
    else:
        add(
            p,
            "--host",
            default="127.0.0.1",
            metavar="HOST",
            help="jobmon's address; a cluster's nodes as HOST[:PORT],HOST[:PORT]... "
            "(tried in turn)",
        )
    add(
        p,
        "--port",
        type=values.positive_int,
        default=7070,
        metavar="PORT",
        help="jobmon's TCP port",
    )
    add(
        p,
        "--token",
        metavar="TOKEN",
        help="shared secret: TCP clients send it first, HTTP as Authorization: Bearer",
    )


def _add_node_flags(p: argparse.ArgumentParser, defaults: Config) -> None:
    """What the handlers need, in `serve` and `stdio` alike."""
    add(
        p,
        "--max-retries",
        type=values.positive_int,
        metavar="N",
        default=defaults.max_retries,
        help="retries before a failure alerts, for jobs that do not say",
    )
    add(
        p,
        "--max-line-bytes",
        type=values.positive_int,
        metavar="BYTES",
        default=defaults.max_line_bytes,
        help="the longest line accepted",
    )
    add(
        p,
        "--node-id",
        default=defaults.node_id,
        metavar="ID",
        help="this node's id until init names it",
    )


def _add_cluster_flags(p: argparse.ArgumentParser, defaults: Config) -> None:
    """Several nodes over one Redis (README: "Running several nodes")."""
    add(
        p,
        "--redis",
        metavar="URL",
        help="join the cluster whose log is in this Redis: redis://HOST:PORT/DB, rediss:// "
        "for TLS, redis://:PASSWORD@HOST:PORT (no local journal then)",
    )
    add(
        p,
        "--redis-sentinel",
        type=values.addresses,
        default=[],
        shown="none",
        metavar="HOST:PORT[,HOST:PORT...]",
        help="find the Redis primary through these Sentinels (with --redis-master)",
    )
    add(p, "--redis-master", metavar="NAME", help="the Sentinel service name")
    add(
        p,
        "--redis-min-replicas",
        type=values.positive_int,
        default=0,
        metavar="N",
        help="acknowledge a state change only once Redis has it on N replicas (WAIT)",
    )
    add(
        p,
        "--cluster-name",
        default=defaults.cluster_name,
        metavar="NAME",
        help="the prefix of the cluster's keys, so several clusters can share a Redis",
    )
    add(
        p,
        "--lease-ms",
        type=values.positive_int,
        metavar="MS",
        default=defaults.lease_ms,
        help="the leader's lease: a dead leader is replaced within about this long",
    )


def _add_serve_flags(serve: argparse.ArgumentParser, defaults: Config) -> None:
    _add_connect_flags(serve, serving=True)
    add(
        serve,
        "--http-port",
        type=values.positive_int,
        metavar="PORT",
        default=7071,
        help="HTTP API on the same --host (0: off)",
    )
    add(
        serve,
        "--metrics-job-series",
        type=values.positive_int,
        default=defaults.metrics_job_series,
        metavar="N",
        help="/metrics: per-job series for at most the first N jobs (0: none)",
    )
    add(
        serve,
        "--data-dir",
        type=Path,
        metavar="DIR",
        default=defaults.data_dir,
        help="the journal and snapshots",
    )
    add(serve, "--in-memory", action="store_true", help="keep no journal (state is lost at exit)")
    add(
        serve,
        "--fsync",
        choices=FSYNC_POLICIES,
        default=defaults.fsync,
        help="when the journal is fsynced: before each reply, once a second, or by the OS",
    )
    _add_node_flags(serve, defaults)
    tls.add_server_flags(serve)
    add(
        serve,
        "--lost-grace-ms",
        type=values.positive_int,
        metavar="MS",
        default=defaults.lost_grace_ms,
        help="alert worker_lost when a running job's connection closed this long ago (0: off)",
    )
    add(
        serve,
        "--realert-ms",
        type=values.positive_int,
        metavar="MS",
        default=0,
        help="send a still-firing alert again this often (0: once)",
    )
    add(
        serve,
        "--webhook",
        action="append",
        split=",",
        metavar="URL",
        help="POST every alert (firing and resolved) here; repeatable",
    )
    add(
        serve,
        "--alertmanager",
        metavar="URL",
        help="Prometheus Alertmanager base URL, e.g. http://127.0.0.1:9093",
    )
    for flag, default, text in (
        ("max-connections", defaults.max_connections, "TCP clients at once; the excess is closed"),
        ("max-http-connections", defaults.max_http_connections, "HTTP clients at once"),
        (
            "auth-timeout-ms",
            defaults.auth_timeout_ms,
            "under --token: close clients not authenticated within this",
        ),
        (
            "http-timeout-ms",
            defaults.http_timeout_ms,
            "time for an HTTP request's headers, and again for its body",
        ),
    ):
        metavar = "MS" if flag.endswith("-ms") else "N"
        add(
            serve,
            f"--{flag}",
            type=values.positive_int,
            default=default,
            metavar=metavar,
            help=text,
        )
    add(
        serve,
        "--compact-min-bytes",
        type=values.positive_int,
        metavar="BYTES",
        default=defaults.compact_min_bytes,
        help="compact once the journal is this big and bigger than the last snapshot",
    )
    add(
        serve,
        "--allow-command",
        action="append",
        split=",",
        type=values.named_path,
        metavar="NAME=PATH",
        help="a command start_job / POST /api/jobs may run; repeatable; needs --token",
    )
    add(
        serve,
        "--slow-run-factor",
        type=values.non_negative_number,
        metavar="K",
        default=defaults.slow_run_factor,
        help="slow_run alert when a run takes k x its job's p95 (0: off)",
    )
    add(
        serve,
        "--cost-model",
        type=values.cost_model,
        default={},
        shown="seed 003's",
        metavar="FIELD=NUMBER,...",
        help="analytics cost model, e.g. free_memory_mb=2048,price_per_second=0.02",
    )
    add(
        serve,
        "--ping-key",
        metavar="KEY",
        help="Healthchecks-style slug ping URLs: /ping/KEY/<slug>",
    )
    add(
        serve,
        "--public-url",
        metavar="URL",
        shown="http://HOST:HTTP_PORT",
        help="this server's address as users reach it (links in notifications, API replies)",
    )
    add(
        serve,
        "--notify",
        action="append",
        metavar="[NAME=]URL",
        help="send alerts through Apprise (mailto://, slack://, json://...); NAME=URL is a "
        "channel that jobs choose with their channels; repeatable",
    )
    add(
        serve,
        "--celery",
        action="append",
        metavar="URL",
        help="watch the Celery cluster on this broker (redis://HOST:PORT/DB...) from its "
        "events; repeatable; needs pip install 'jobmon[celery]'",
    )
    add(
        serve,
        "--event-ids-kept",
        type=values.positive_int,
        default=defaults.event_ids_kept,
        metavar="N",
        help="remember the event_id of this many applied events (24 h at most; ~300 B each)",
    )
    _add_cluster_flags(serve, defaults)


def build_parser() -> argparse.ArgumentParser:
    defaults = Config()
    parser = argparse.ArgumentParser(prog="jobmon", description="A durable job-monitoring server.")
    parser.add_argument(
        "--version", action="version", version=f"jobmon {__version__}, {describe()}"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the TCP server (env: JOBMON_<FLAG>)",
        description="Serve jobmon's TCP protocol, its HTTP API and dashboard. Every flag can "
        "also be set as JOBMON_<FLAG> (JOBMON_PORT=7171); a flag given wins.",
    )
    _add_serve_flags(serve, defaults)

    stdio = sub.add_parser("stdio", help="serve one client on stdin/stdout, in memory")
    _add_node_flags(stdio, defaults)

    send = sub.add_parser("send", help="send messages (arguments, else stdin lines); print replies")
    _add_connect_flags(send)
    tls.add_client_flags(send)
    send.add_argument("messages", nargs="*", help="JSON messages; read from stdin when none")

    _add_run_parser(sub)

    compact = sub.add_parser(
        "compact", help="offline: snapshot the data dir, start a fresh journal"
    )
    add(
        compact,
        "--data-dir",
        type=Path,
        default=defaults.data_dir,
        metavar="DIR",
        help="a stopped server's journal and snapshots",
    )
    for command in (serve, stdio, send, compact):
        add(
            command,
            "--log-level",
            default="info",
            choices=LOG_LEVELS,
            metavar="LEVEL",
            help="logs are JSON lines on stderr: debug, info, warning or error",
        )
    return parser


def _add_run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "run",
        help="run a command as a monitored job: jobmon run --job-id ID [flags] -- CMD ARGS...",
        description="Run CMD (no shell) and report it to jobmon: running, heartbeats, then "
        "completed or failed with its exit code, duration, CPU and peak memory of its whole "
        "process tree. Exits with the command's exit code (124 on --timeout, 128+N when "
        "killed by signal N). If jobmon is unreachable, or a JOBMON_ variable is bad, the "
        "command runs anyway.",
    )
    run.add_argument("--job-id", required=True)
    _add_connect_flags(run)
    tls.add_client_flags(run)
    run.add_argument(
        "--retries",
        type=values.positive_int,
        default=0,
        metavar="N",
        help="run a failed command again up to N times (the job's max_retries)",
    )
    run.add_argument(
        "--retry-delay-ms",
        type=values.positive_int,
        default=1000,
        metavar="D",
        help="between attempts",
    )
    run.add_argument(
        "--memory-limit-mb",
        type=values.positive_number,
        default=None,
        metavar="M",
        help="the process tree's RSS limit: over it, alert (and with --memory-action kill, stop)",
    )
    run.add_argument("--memory-action", choices=("kill", "alert"), default="alert")
    run.add_argument(
        "--timeout",
        type=values.positive_number,
        default=None,
        metavar="S",
        help="stop an attempt after S seconds (SIGTERM to its process group, SIGKILL 2 s later)",
    )
    run.add_argument(
        "--heartbeat-ms",
        type=values.positive_int,
        default=0,
        metavar="H",
        help="send a heartbeat every H ms while it runs, with ttl_ms 3 x H (0: none)",
    )
    add(
        run,
        "--log-level",
        default="warning",
        choices=LOG_LEVELS,
        help="jobmon's own logs (JSON lines on stderr, after the command's output)",
    )
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS")
