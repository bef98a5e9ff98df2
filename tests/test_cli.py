"""The other entry points as real processes: `jobmon stdio` and `jobmon send`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson

from helpers import SEED_SAMPLE_CASES, ServerProcess, jobmon_cmd
from jobmon.cli_values import nodes


def test_stdio_answers_maelstrom_envelopes_and_bare_bodies() -> None:
    requests = [
        *(request for request, _ in SEED_SAMPLE_CASES),
        {
            "type": "job_failed",
            "msg_id": 3,
            "job_id": "job-9",
            "error": "Connection timeout",
            "retries": 3,
        },
        {"type": "get_stats", "msg_id": 4},
    ]
    stdin = b"".join(orjson.dumps(r) + b"\n" for r in requests) + b"\nnot json"
    result = subprocess.run(jobmon_cmd("stdio"), input=stdin, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    replies = [orjson.loads(line) for line in result.stdout.splitlines()]
    error = replies.pop()
    assert error["type"] == "error" and error["code"] == 12
    assert (
        error["text"].startswith("invalid JSON (")
        and "expected one JSON object per line" in error["text"]
    )
    assert replies == [
        *({"src": "monitor", "dest": "worker", "body": body} for _, body in SEED_SAMPLE_CASES),
        {
            "type": "alert_sent",
            "in_reply_to": 3,
            "job_id": "job-9",
            "alert": "Job failed after 3 retries: Connection timeout",
        },
        {
            "type": "job_stats",
            "in_reply_to": 4,
            "total": 2,
            "completed": 1,
            "failed": 1,
            "avg_duration_ms": 60000,
        },
    ]
    # The alert is also a structured log line on stderr; stdout carries only replies.
    alert = orjson.loads(next(x for x in result.stderr.splitlines() if b'"jobmon.alert"' in x))
    assert alert["job_id"] == "job-9" and alert["kind"] == "failed" and alert["state"] == "firing"


def test_stdio_answers_each_line_before_the_next_arrives() -> None:
    proc = subprocess.Popen(
        jobmon_cmd("stdio"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        for msg_id in range(3):
            proc.stdin.write(orjson.dumps({"type": "get_stats", "msg_id": msg_id}) + b"\n")
            proc.stdin.flush()
            assert orjson.loads(proc.stdout.readline())["in_reply_to"] == msg_id
    finally:
        proc.stdin.close()
        assert proc.wait(30) == 0


def test_send_prints_replies(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as server:
        result = subprocess.run(
            jobmon_cmd(
                "send",
                "--port",
                str(server.port),
                '{"type":"update_status","msg_id":1,"job_id":"a","status":"running"}',
                '{"type":"get_stats","msg_id":2}',
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            '{"type":"status_updated","in_reply_to":1,"job_id":"a","status":"running","progress":0}',
            '{"type":"job_stats","in_reply_to":2,"total":1,"completed":0,"failed":0,"avg_duration_ms":0}',
        ]
        piped = subprocess.run(
            jobmon_cmd("send", "--port", str(server.port)),
            input='{"type":"get_job","msg_id":3,"job_id":"a"}\n',
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert orjson.loads(piped.stdout)["job"]["status"] == "running"
        server.terminate()


def test_send_reports_an_unreachable_server(tmp_path: Path) -> None:
    result = subprocess.run(
        jobmon_cmd("send", "--port", "1", '{"type":"get_stats"}'),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot connect to 127.0.0.1:1" in result.stderr


def test_run_and_send_try_a_clusters_nodes_in_turn(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as server:
        # The first node is down (nothing listens on port 1): the second is used.
        nodes = f"127.0.0.1:1,localhost:{server.port}"
        sent = subprocess.run(
            jobmon_cmd("send", "--host", nodes, '{"type":"get_stats","msg_id":1}'),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sent.returncode == 0, sent.stderr
        assert "cannot connect to 127.0.0.1:1" in sent.stderr
        assert orjson.loads(sent.stdout)["type"] == "job_stats"
        wrapped = subprocess.run(
            jobmon_cmd("run", "--host", nodes, "--job-id", "two-nodes", "--", "true"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert wrapped.returncode == 0, wrapped.stderr
        assert "unreachable" not in wrapped.stderr
        asked = subprocess.run(
            jobmon_cmd(
                "send", "--port", str(server.port), '{"type":"get_job","job_id":"two-nodes"}'
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert orjson.loads(asked.stdout)["job"]["status"] == "completed"
        server.terminate()


def test_host_lists_take_ports_and_default_to_port() -> None:
    assert nodes("a,b:7072,[::1]:7073,::1", 7070) == [
        ("a", 7070),
        ("b", 7072),
        ("::1", 7073),
        ("::1", 7070),
    ]
    assert nodes("", 7070) == [("127.0.0.1", 7070)]


def test_serve_flags_come_from_the_environment(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "JOBMON_MAX_RETRIES": "0", "JOBMON_NODE_ID": "n7"}
    proc = subprocess.Popen(
        jobmon_cmd("serve", "--port", "0", "--http-port", "0", "--in-memory"),
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        assert proc.stderr is not None
        port = None
        for line in proc.stderr:
            if line.startswith(b"jobmon listening on"):
                port = int(line.rsplit(b":", 1)[1])
                break
        assert port is not None
        result = subprocess.run(
            jobmon_cmd(
                "send",
                "--port",
                str(port),
                '{"src":"w","dest":"x","body":{"type":"job_failed","msg_id":1,"job_id":"a"}}',
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert orjson.loads(result.stdout)["body"]["type"] == "alert_sent"  # max_retries 0
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    assert not (tmp_path / "jobmon-data").exists()


def test_allowed_commands_without_a_token_refuse_to_start(tmp_path: Path) -> None:
    result = subprocess.run(
        jobmon_cmd(
            "serve", "--port", "0", "--http-port", "0", "--in-memory",
            "--allow-command", "resize=/usr/bin/true",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        "jobmon: cannot start: --allow-command lets clients run programs on this machine, "
        "so it needs --token (or JOBMON_TOKEN) too"
    )


def test_bad_cost_model_and_command_flags_say_what_is_expected() -> None:
    cost = subprocess.run(
        jobmon_cmd("serve", "--cost-model", "price_per_second=cheap"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cost.returncode == 2
    assert "expected FIELD=NUMBER (>= 0) with FIELD one of free_memory_mb" in cost.stderr
    command = subprocess.run(
        jobmon_cmd("serve", "--allow-command", "resize"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "expected NAME=/absolute/path/to/program, got 'resize'" in command.stderr


def test_run_with_a_wrong_token_says_so_not_unreachable(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data", "--token", "s3cret") as server:
        wrapped = subprocess.run(
            jobmon_cmd(
                "run", "--port", str(server.port), "--token", "nope", "--job-id", "j", "--", "true"
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert wrapped.returncode == 0  # the command's own exit: monitoring never breaks it
        assert (
            f"jobmon run: jobmon at 127.0.0.1:{server.port} refused the token (" in wrapped.stderr
        )
        assert "the token is wrong" in wrapped.stderr and "unreachable" not in wrapped.stderr
        server.terminate()
