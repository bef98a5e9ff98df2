"""The command line: ``jobmon serve | stdio | send | run | compact`` (flags: ``cli_flags``)."""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import envflags, logs, tls
from .cli_flags import build_parser
from .cli_values import nodes
from .config import Config

if TYPE_CHECKING:
    from .runner import RunSpec


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # JOBMON_* values of this subcommand's flags, converted now; `run` runs its
    # command whatever they say (a bad one is said, and its default used).
    lenient = args.command == "run"
    try:
        problems = envflags.resolve(args, lenient=lenient)
    except envflags.EnvError as exc:
        for problem in str(exc).splitlines():
            print(f"jobmon {args.command}: {problem}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"jobmon run: {problem}", file=sys.stderr)
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


TLS_HINT = " (if the server serves TLS, add --tls or --tls-ca FILE)"


def _send(
    host: str, port: int, messages: list[str], token: str | None, context: ssl.SSLContext | None
) -> int:
    lines = messages or [line for line in sys.stdin.read().splitlines()]
    lines = [line for line in lines if line.strip()]
    # Under --token the first line is our own auth: its answer is not printed nor counted.
    auth = [json.dumps({"type": "auth", "token": token})] if token is not None else []
    sock = None
    for node_host, node_port in nodes(host, port):  # a cluster's nodes: the first that answers
        try:
            sock = tls.connect(node_host, node_port, context, timeout=30)
            host, port = node_host, node_port
            break
        except OSError as exc:
            print(f"jobmon send: cannot connect to {node_host}:{node_port}: {exc}", file=sys.stderr)
    if sock is None:
        return 1
    received = answered = 0
    try:
        with sock:
            replies = sock.makefile("rb")
            if auth:  # its answer first: after a refusal, the rest would count as failures too
                sock.sendall((auth[0] + "\n").encode())
                answered = 1
                first = replies.readline()
                if not first:  # closed unanswered (a TLS port closes a plaintext connection)
                    print(
                        f"jobmon send: {host}:{port} closed the connection without answering"
                        f"{TLS_HINT if context is None else ''}; {len(lines)} messages not sent",
                        file=sys.stderr,
                    )
                    return 1
                if _refused(first):
                    print(f"jobmon send: {len(lines)} messages not sent", file=sys.stderr)
                    return 1
            sock.sendall("".join(line + "\n" for line in lines).encode())
            if context is None:
                sock.shutdown(socket.SHUT_WR)  # the server closes once it has answered
            for reply in replies:
                sys.stdout.write(reply.decode())
                received += 1
                answered += not _pushed(reply)
                # TLS has no half-close (close_notify ends the connection): stop at the last answer.
                if context is not None and answered == len(auth) + len(lines):
                    break
    except OSError as exc:
        print(f"jobmon send: connection to {host}:{port} failed: {exc}", file=sys.stderr)
    sys.stdout.flush()
    if received < len(lines):  # more is fine: a subscription pushes lines of its own
        # A TLS port closes a plaintext connection without a word.
        unanswered = context is None and not received and not answered
        hint = TLS_HINT if unanswered else ""
        print(f"jobmon send: {len(lines)} sent, {received} replies{hint}", file=sys.stderr)
        return 1
    return 0


def _refused(line: bytes) -> bool:
    """The answer to our auth: anything but auth_ok is said on stderr."""
    try:
        reply = json.loads(line)
    except ValueError:
        reply = None
    body = reply.get("body", reply) if isinstance(reply, dict) else None
    if isinstance(body, dict) and body.get("type") == "auth_ok":
        return False
    text = body.get("text") if isinstance(body, dict) else None
    said = text or line.decode(errors="replace").strip()
    print(f"jobmon send: jobmon refused the token: {said}", file=sys.stderr)
    return True


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

    addresses = nodes(host, port)
    where = ",".join(f"{name}:{number}" for name, number in addresses)
    client = Client(*addresses[0], token=token, tls=context or False, addresses=addresses)
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
            failure = client.last_failure or ""
            said_what = (
                f"refused the token ({failure.removeprefix('it refused the token: ')})"
                if failure.startswith("it refused the token")
                else f"is unreachable ({failure})"
                if failure
                else "is unreachable"
            )
            print(
                f"jobmon run: jobmon at {where} {said_what}; the command runs anyway",
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
            f"jobmon run: {len(client.queued)} reports to jobmon at {where} could not be delivered",
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
