"""The command line: ``jobmon serve | stdio | send | compact``; serve flags also read JOBMON_*."""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import logs, tls
from .config import FSYNC_POLICIES, Config

if TYPE_CHECKING:
    from .runner import RunSpec


def _env(name: str, default: str) -> str:
    return os.environ.get("JOBMON_" + name, default)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def _named_path(text: str) -> tuple[str, str]:
    name, _, path = text.partition("=")
    if not name or not path.startswith("/"):
        raise argparse.ArgumentTypeError(f"expected NAME=/absolute/path/to/program, got {text!r}")
    return name, path


def _cost_model(text: str) -> dict[str, float]:
    from .analytics import CostModel

    known = set(vars(CostModel()))
    model: dict[str, float] = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if name not in known or number < 0:
            raise argparse.ArgumentTypeError(
                f"expected FIELD=NUMBER (>= 0) with FIELD one of {', '.join(sorted(known))}, "
                f"got {item!r}"
            )
        model[name] = number
    return model


def _add_connect_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=_env("HOST", "127.0.0.1"))
    p.add_argument("--port", type=_positive_int, default=int(_env("PORT", "7070")))
    p.add_argument(
        "--token",
        default=_env("TOKEN", "") or None,
        help="shared secret: TCP clients send it first, HTTP as Authorization: Bearer",
    )


def _add_node_flags(p: argparse.ArgumentParser, defaults: Config) -> None:
    """What the handlers need, in `serve` and `stdio` alike."""
    p.add_argument(
        "--max-retries",
        type=_positive_int,
        default=int(_env("MAX_RETRIES", str(defaults.max_retries))),
    )
    p.add_argument(
        "--max-line-bytes",
        type=_positive_int,
        default=int(_env("MAX_LINE_BYTES", str(defaults.max_line_bytes))),
    )
    p.add_argument("--node-id", default=_env("NODE_ID", defaults.node_id))


def _addresses(text: str) -> list[tuple[str, int]]:
    out = []
    for item in filter(None, text.split(",")):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise argparse.ArgumentTypeError(f"expected HOST:PORT[,HOST:PORT...], got {item!r}")
        out.append((host, int(port)))
    return out


def _add_cluster_flags(p: argparse.ArgumentParser, defaults: Config) -> None:
    """Several nodes over one Redis (README: "Running several nodes")."""
    p.add_argument(
        "--redis",
        default=_env("REDIS", "") or None,
        metavar="URL",
        help="join the cluster whose log is in this Redis: redis://HOST:PORT/DB, rediss:// "
        "for TLS, redis://:PASSWORD@HOST:PORT (no local journal then)",
    )
    p.add_argument(
        "--redis-sentinel",
        type=_addresses,
        default=_addresses(_env("REDIS_SENTINEL", "")),
        metavar="HOST:PORT[,HOST:PORT...]",
        help="find the Redis primary through these Sentinels (with --redis-master)",
    )
    p.add_argument("--redis-master", default=_env("REDIS_MASTER", "") or None, metavar="NAME")
    p.add_argument(
        "--redis-min-replicas",
        type=_positive_int,
        default=int(_env("REDIS_MIN_REPLICAS", "0")),
        metavar="N",
        help="acknowledge a state change only once Redis has it on N replicas (WAIT)",
    )
    p.add_argument(
        "--cluster-name",
        default=_env("CLUSTER_NAME", defaults.cluster_name),
        help="the prefix of the cluster's keys, so several clusters can share a Redis",
    )
    p.add_argument(
        "--lease-ms",
        type=_positive_int,
        default=int(_env("LEASE_MS", str(defaults.lease_ms))),
        help="the leader's lease: a dead leader is replaced within about this long",
    )


def build_parser() -> argparse.ArgumentParser:
    defaults = Config()
    parser = argparse.ArgumentParser(prog="jobmon", description="A durable job-monitoring server.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the TCP server (env: JOBMON_<FLAG>)")
    _add_connect_flags(serve)
    serve.add_argument(
        "--http-port",
        type=_positive_int,
        default=int(_env("HTTP_PORT", "7071")),
        help="HTTP API on the same --host (0: off)",
    )
    serve.add_argument(
        "--metrics-job-series",
        type=_positive_int,
        default=int(_env("METRICS_JOB_SERIES", str(defaults.metrics_job_series))),
        metavar="N",
        help="/metrics: per-job series for at most the first N jobs (0: none)",
    )
    serve.add_argument(
        "--data-dir", type=Path, default=Path(_env("DATA_DIR", str(defaults.data_dir)))
    )
    serve.add_argument(
        "--in-memory",
        action="store_true",
        default=_env("IN_MEMORY", "") not in ("", "0", "false"),
        help="keep no journal (state is lost at exit)",
    )
    serve.add_argument("--fsync", choices=FSYNC_POLICIES, default=_env("FSYNC", defaults.fsync))
    _add_node_flags(serve, defaults)
    tls.add_server_flags(serve)
    serve.add_argument(
        "--lost-grace-ms",
        type=_positive_int,
        default=int(_env("LOST_GRACE_MS", str(defaults.lost_grace_ms))),
        help="alert worker_lost when a running job's connection closed this long ago (0: off)",
    )
    serve.add_argument(
        "--realert-ms",
        type=_positive_int,
        default=int(_env("REALERT_MS", "0")),
        help="send a still-firing alert again this often (0: once)",
    )
    serve.add_argument(
        "--webhook",
        action="append",
        default=[u for u in _env("WEBHOOK", "").split(",") if u],
        metavar="URL",
        help="POST every alert (firing and resolved) here; repeatable",
    )
    serve.add_argument(
        "--alertmanager",
        default=_env("ALERTMANAGER", "") or None,
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
        env = flag.upper().replace("-", "_")
        serve.add_argument(
            f"--{flag}", type=_positive_int, default=int(_env(env, str(default))), help=text
        )
    serve.add_argument(
        "--compact-min-bytes",
        type=_positive_int,
        default=int(_env("COMPACT_MIN_BYTES", str(defaults.compact_min_bytes))),
        help="compact once the journal is this big and bigger than the last snapshot",
    )
    serve.add_argument(
        "--allow-command",
        action="append",
        type=_named_path,
        default=[_named_path(c) for c in _env("ALLOW_COMMAND", "").split(",") if c],
        metavar="NAME=PATH",
        help="a command start_job / POST /api/jobs may run; repeatable; needs --token",
    )
    serve.add_argument(
        "--slow-run-factor",
        type=float,
        default=float(_env("SLOW_RUN_FACTOR", str(defaults.slow_run_factor))),
        help="slow_run alert when a run takes k x its job's p95 (0: off)",
    )
    serve.add_argument(
        "--cost-model",
        type=_cost_model,
        default=_cost_model(_env("COST_MODEL", "")),
        metavar="FIELD=NUMBER,...",
        help="analytics cost model, e.g. free_memory_mb=2048,price_per_second=0.02",
    )

    serve.add_argument(
        "--ping-key",
        default=_env("PING_KEY", "") or None,
        metavar="KEY",
        help="Healthchecks-style slug ping URLs: /ping/KEY/<slug>",
    )
    serve.add_argument(
        "--public-url",
        default=_env("PUBLIC_URL", "") or None,
        metavar="URL",
        help="this server's address as users reach it (links in notifications, API replies)",
    )
    serve.add_argument(
        "--notify",
        action="append",
        default=_env("NOTIFY", "").split(),
        metavar="[NAME=]URL",
        help="send alerts through Apprise (mailto://, slack://, json://...); NAME=URL is a "
        "channel that jobs choose with their channels; repeatable",
    )
    serve.add_argument(
        "--celery",
        action="append",
        default=_env("CELERY", "").split(),
        metavar="URL",
        help="watch the Celery cluster on this broker (redis://HOST:PORT/DB...) from its "
        "events; repeatable; needs pip install 'jobmon[celery]'",
    )
    serve.add_argument(
        "--event-ids-kept",
        type=_positive_int,
        default=int(_env("EVENT_IDS_KEPT", str(defaults.event_ids_kept))),
        metavar="N",
        help="remember the event_id of this many applied events (24 h at most; ~300 B each)",
    )
    _add_cluster_flags(serve, defaults)

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
    compact.add_argument(
        "--data-dir", type=Path, default=Path(_env("DATA_DIR", str(defaults.data_dir)))
    )
    for command in (serve, stdio, send, compact):
        command.add_argument(
            "--log-level",
            default=_env("LOG_LEVEL", "info"),
            choices=("debug", "info", "warning", "error"),
            help="logs are JSON lines on stderr",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(args.log_level)
    if args.command == "serve":
        return _serve(args)
    if args.command == "stdio":
        from . import stdio

        return stdio.main(args.node_id, args.max_retries, args.max_line_bytes)
    if args.command == "send":
        context = tls.client_context(args.tls, args.tls_ca)
        return _send(args.host, args.port, args.messages, args.token, context)
    if args.command == "compact":
        return _compact(args.data_dir)
    if args.command == "run":
        return _run(args)
    return 2


def _serve(args: argparse.Namespace) -> int:
    import uvloop

    from .journal import CorruptData
    from .server import serve

    config = Config(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        in_memory=args.in_memory,
        fsync=args.fsync,
        max_retries=args.max_retries,
        max_line_bytes=args.max_line_bytes,
        node_id=args.node_id,
        compact_min_bytes=args.compact_min_bytes,
        allowed_commands=dict(args.allow_command),
        slow_run_factor=args.slow_run_factor,
        cost_model=args.cost_model,
        lost_grace_ms=args.lost_grace_ms,
        http_port=args.http_port,
        token=args.token,
        metrics_job_series=args.metrics_job_series,
        webhooks=args.webhook,
        realert_ms=args.realert_ms,
        alertmanager=args.alertmanager,
        ping_key=args.ping_key,
        public_url=args.public_url,
        notify=args.notify,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        redis=args.redis,
        redis_sentinels=args.redis_sentinel,
        redis_master=args.redis_master,
        redis_min_replicas=args.redis_min_replicas,
        cluster_name=args.cluster_name,
        lease_ms=args.lease_ms,
        event_ids_kept=args.event_ids_kept,
        max_connections=args.max_connections,
        max_http_connections=args.max_http_connections,
        auth_timeout_ms=args.auth_timeout_ms,
        http_timeout_ms=args.http_timeout_ms,
        celery=args.celery,
    )
    if config.redis_sentinels and not config.redis_master:
        print("jobmon: cannot start: --redis-sentinel needs --redis-master NAME", file=sys.stderr)
        return 1
    if config.clustered and config.lease_ms < 300:
        print("jobmon: cannot start: --lease-ms must be at least 300", file=sys.stderr)
        return 1
    try:
        uvloop.run(serve(config))
    except CorruptData as exc:
        print(f"jobmon: cannot start: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"jobmon: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _send(
    host: str, port: int, messages: list[str], token: str | None, context: ssl.SSLContext | None
) -> int:
    lines = messages or [line for line in sys.stdin.read().splitlines()]
    lines = [line for line in lines if line.strip()]
    if token is not None:
        lines.insert(0, json.dumps({"type": "auth", "token": token}))
    try:
        sock = tls.connect(host, port, context, timeout=30)
    except OSError as exc:
        print(f"jobmon send: cannot connect to {host}:{port}: {exc}", file=sys.stderr)
        return 1
    received = answered = 0
    try:
        with sock:
            sock.sendall("".join(line + "\n" for line in lines).encode())
            if context is None:
                sock.shutdown(socket.SHUT_WR)  # the server closes once it has answered
            for reply in sock.makefile("rb"):
                sys.stdout.write(reply.decode())
                received += 1
                answered += not _pushed(reply)
                # TLS has no half-close (close_notify ends the connection): stop at the last answer.
                if context is not None and answered == len(lines):
                    break
    except OSError as exc:
        print(f"jobmon send: connection to {host}:{port} failed: {exc}", file=sys.stderr)
    sys.stdout.flush()
    if received < len(lines):  # more is fine: a subscription pushes lines of its own
        # A TLS port closes a plaintext connection without a word.
        unanswered = context is None and not received
        hint = " (if the server serves TLS, add --tls or --tls-ca FILE)" if unanswered else ""
        print(f"jobmon send: {len(lines)} sent, {received} replies{hint}", file=sys.stderr)
        return 1
    return 0


def _pushed(line: bytes) -> bool:
    """A line a subscription pushed (an alert, an event), not an answer."""
    try:
        reply = json.loads(line)
    except ValueError:
        return False
    body = reply.get("body", reply) if isinstance(reply, dict) else None
    return (
        isinstance(body, dict)
        and body.get("type") in ("alert", "event")
        and ("in_reply_to" not in body)
    )


def _positive_number(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _add_run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "run",
        help="run a command as a monitored job: jobmon run --job-id ID [flags] -- CMD ARGS...",
        description="Run CMD (no shell) and report it to jobmon: running, heartbeats, then "
        "completed or failed with its exit code, duration, CPU and peak memory of its whole "
        "process tree. Exits with the command's exit code (124 on --timeout, 128+N when "
        "killed by signal N). If jobmon is unreachable the command runs anyway.",
    )
    run.add_argument("--job-id", required=True)
    _add_connect_flags(run)
    tls.add_client_flags(run)
    run.add_argument(
        "--retries",
        type=_positive_int,
        default=0,
        metavar="N",
        help="run a failed command again up to N times (the job's max_retries)",
    )
    run.add_argument(
        "--retry-delay-ms", type=_positive_int, default=1000, metavar="D", help="between attempts"
    )
    run.add_argument(
        "--memory-limit-mb",
        type=_positive_number,
        default=None,
        metavar="M",
        help="the process tree's RSS limit: over it, alert (and with --memory-action kill, stop)",
    )
    run.add_argument("--memory-action", choices=("kill", "alert"), default="alert")
    run.add_argument(
        "--timeout",
        type=_positive_number,
        default=None,
        metavar="S",
        help="stop an attempt after S seconds (SIGTERM to its process group, SIGKILL 2 s later)",
    )
    run.add_argument(
        "--heartbeat-ms",
        type=_positive_int,
        default=0,
        metavar="H",
        help="send a heartbeat every H ms while it runs, with ttl_ms 3 x H (0: none)",
    )
    run.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", "warning"),
        choices=("debug", "info", "warning", "error"),
        help="jobmon's own logs (JSON lines on stderr, after the command's output)",
    )
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS")


def _run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from .runner import RunSpec

    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print(
            "jobmon run: no command given: jobmon run --job-id ID -- CMD ARGS...", file=sys.stderr
        )
        return 2
    if args.log_level in ("warning", "error"):
        # The client's connection warnings are said once, plainly, below.
        logging.getLogger("jobmon.client").setLevel(logging.ERROR)
    spec = RunSpec(
        job_id=args.job_id,
        argv=argv,
        retries=args.retries,
        retry_delay_ms=args.retry_delay_ms,
        memory_limit_mb=args.memory_limit_mb,
        memory_action=args.memory_action,
        timeout_s=args.timeout,
        heartbeat_ms=args.heartbeat_ms or None,
        inherit_stdin=True,
    )
    context = tls.client_context(args.tls, args.tls_ca)
    return asyncio.run(_run_reporting(spec, args.host, args.port, args.token, context))


async def _run_reporting(
    spec: RunSpec, host: str, port: int, token: str | None, context: ssl.SSLContext | None
) -> int:
    import asyncio
    import signal

    from .client import Client
    from .runner import Runner

    client = Client(host, port, token=token, tls=context or False)
    runner = Runner(spec, client.send_event)
    loop = asyncio.get_running_loop()
    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for signum in forwarded:  # the command has a session of its own: pass these on
        loop.add_signal_handler(signum, runner.interrupt, signum)
    said = False

    def unreachable() -> None:
        nonlocal said
        if not said:
            said = True
            why = f" ({client.last_failure})" if client.last_failure else ""
            print(
                f"jobmon run: jobmon at {host}:{port} is unreachable{why}; the command runs anyway",
                file=sys.stderr,
                flush=True,
            )

    async def watch() -> None:
        if not await client.start(wait_s=1.0):
            unreachable()

    watching = loop.create_task(watch())
    try:
        result = await runner.run()
    finally:
        watching.cancel()
        for signum in forwarded:
            loop.remove_signal_handler(signum)
    # A short grace: it may be connecting still (a quick command), or be back.
    if not client.connected and client.queued and not await client.start(wait_s=2.0):
        unreachable()
    await client.close(flush_s=2.0)
    if client.queued:
        print(
            f"jobmon run: {len(client.queued)} reports to jobmon at {host}:{port} "
            "could not be delivered",
            file=sys.stderr,
        )
    return result.exit_code


def _compact(data_dir: Path) -> int:
    from .datalock import DataDirLocked
    from .journal import CorruptData
    from .node import Node
    from .persistence import DataDir
    from .store import Store

    if not data_dir.is_dir():
        print(f"jobmon compact: {data_dir} is not a directory", file=sys.stderr)
        return 1
    node = Node(Store())
    directory = DataDir(data_dir, compact_min_bytes=0)
    try:
        directory.recover(node, None)
    except CorruptData as exc:
        print(f"jobmon compact: {exc}", file=sys.stderr)
        return 1
    except DataDirLocked as exc:
        print(f"jobmon compact: {exc.in_use()}: compact a stopped server's data", file=sys.stderr)
        return 1
    generation = directory.compact_now(node)
    directory.close()
    print(f"compacted {len(node.store.jobs)} jobs into snapshot {generation}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
