"""JOBMON_* variables as real processes see them: converted only for the
subcommand run, checked as the flags are (choices, switches), a bad one a
line that names it and exits 2 (never a traceback); `jobmon run` runs its
command whatever they say; `--help` says each variable and its default; and
`jobmon send --token` prints only the answers to what it was given."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ServerProcess, free_port, jobmon_cmd
from jobmon.client import Client

WAIT_S = 60.0


def jobmon(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JOBMON_")}
    return subprocess.run(
        jobmon_cmd(*args),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env={**clean, "COLUMNS": "100", **env},
    )


def test_a_bad_value_names_its_variable_and_exits_2() -> None:
    result = jobmon("serve", JOBMON_PORT="abc")
    assert (result.returncode, result.stderr) == (
        2,
        "jobmon serve: JOBMON_PORT=abc: expected an integer >= 0\n",
    )
    several = jobmon(
        "serve",
        JOBMON_FSYNC="bogus",  # argparse checks choices only on the command line
        JOBMON_IN_MEMORY="maybe",
        JOBMON_ALLOW_COMMAND="resize=/usr/bin/true,thumbs",
        JOBMON_SLOW_RUN_FACTOR="nan",
    )
    assert several.returncode == 2
    assert sorted(several.stderr.splitlines()) == [
        "jobmon serve: JOBMON_ALLOW_COMMAND=resize=/usr/bin/true,thumbs: "
        "expected NAME=/absolute/path/to/program, got 'thumbs'",
        "jobmon serve: JOBMON_FSYNC=bogus: expected one of always, everysec, no",
        "jobmon serve: JOBMON_IN_MEMORY=maybe: "
        "expected on (1, true, yes, on) or off (0, false, no, off), in any case",
        "jobmon serve: JOBMON_SLOW_RUN_FACTOR=nan: expected a number >= 0",
    ]
    for command in (["stdio"], ["send", "{}"], ["compact"]):
        bad = jobmon(*command, JOBMON_LOG_LEVEL="loud")
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        assert bad.stderr == (
            f"jobmon {command[0]}: JOBMON_LOG_LEVEL=loud: "
            "expected one of debug, info, warning, error\n"
        )


def test_only_the_subcommand_run_converts_its_variables(tmp_path: Path) -> None:
    # Variables of flags `send` does not have are not looked at.
    with ServerProcess(tmp_path / "data") as server:
        sent = jobmon(
            "send", "--port", str(server.port), '{"type":"get_stats","msg_id":1}',
            JOBMON_LEASE_MS="1.5", JOBMON_FSYNC="bogus", JOBMON_HTTP_PORT="x",
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.startswith('{"type":"job_stats","in_reply_to":1,')
        server.terminate()
    # A flag given on the command line wins: its variable is not converted either.
    given = jobmon("stdio", "--max-retries", "2", JOBMON_MAX_RETRIES="lots")
    assert given.returncode == 0, given.stderr


def test_jobmon_run_runs_its_command_whatever_the_variables_say() -> None:
    port = str(free_port())  # nobody listens: the wrapper says so and runs the command
    script = "print('ran')"
    lease = jobmon(
        "run", "--port", port, "--job-id", "x", "--", sys.executable, "-c", script,
        JOBMON_LEASE_MS="1.5",
    )  # fmt: skip
    assert (lease.returncode, lease.stdout) == (0, "ran\n")
    assert "JOBMON_LEASE_MS" not in lease.stderr and "Traceback" not in lease.stderr
    own = jobmon(
        "run", "--port", port, "--job-id", "x", "--", sys.executable, "-c", script,
        JOBMON_LOG_LEVEL="loud", JOBMON_TLS="perhaps",
    )  # fmt: skip
    assert (own.returncode, own.stdout) == (0, "ran\n")
    said = own.stderr.splitlines()
    assert said[:2] == [
        "jobmon run: JOBMON_TLS=perhaps: expected on (1, true, yes, on) or off "
        "(0, false, no, off), in any case; using the default, off",
        "jobmon run: JOBMON_LOG_LEVEL=loud: expected one of debug, info, warning, error; "
        "using the default, warning",
    ]
    assert "Traceback" not in own.stderr


@pytest.mark.parametrize(
    ("value", "in_memory"),
    [("no", False), ("False", False), ("OFF", False), ("0", False), ("Yes", True), ("on", True)],
)
def test_switches_read_every_usual_spelling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, in_memory: bool
) -> None:
    monkeypatch.setenv("JOBMON_IN_MEMORY", value)
    data = tmp_path / "data"
    with ServerProcess(data) as server:
        # Once it answers, its signal handlers are in place (they follow "listening").
        with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S) as sock:
            sock.sendall(b'{"type":"get_stats"}\n')
            assert sock.makefile("rb").readline().startswith(b'{"type":"job_stats"')
        assert server.terminate() == 0
    assert data.exists() is not in_memory  # a journal kept there, or no data dir at all


def test_serve_help_says_each_variable_and_default() -> None:
    result = jobmon("serve", "--help")
    assert result.returncode == 0
    text = re.sub(r"\s+", " ", result.stdout)
    for said in (
        "--port PORT jobmon's TCP port (env JOBMON_PORT; default 7070)",
        "(env JOBMON_HTTP_PORT; default 7071)",
        "(env JOBMON_DATA_DIR; default jobmon-data)",
        "(env JOBMON_IN_MEMORY; default off)",
        "(env JOBMON_FSYNC; default everysec)",
        "(env JOBMON_WEBHOOK, comma-separated; default none)",
        "(env JOBMON_NOTIFY, space-separated; default none)",
        "(env JOBMON_TLS_CERT; default none)",
        "(env JOBMON_LEASE_MS; default 5000)",
        "(env JOBMON_LOG_LEVEL; default info)",
    ):
        assert said in text, said
    # Every flag but --help says its variable.
    flags = set(re.findall(r"^  (--[a-z-]+)", result.stdout, re.M)) - {"--help"}
    assert len(flags) > 35
    for flag in flags:
        variable = "JOBMON_" + flag[2:].upper().replace("-", "_")
        assert f"(env {variable}" in text, flag


def test_send_with_a_token_prints_only_the_answers(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data", "--token", "s3cret") as server:
        port = str(server.port)
        ok = jobmon("send", "--port", port, "--token", "s3cret", '{"type":"get_stats","msg_id":1}')
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout == (
            '{"type":"job_stats","in_reply_to":1,"total":0,"completed":0,"failed":0,'
            '"avg_duration_ms":0}\n'
        )
        assert ok.stderr == ""
        # JOBMON_TOKEN too, and several messages: each answered, none counted twice.
        two = jobmon(
            "send", "--port", port, '{"type":"get_stats"}', '{"type":"get_stats"}',
            JOBMON_TOKEN="s3cret",
        )  # fmt: skip
        assert two.returncode == 0, two.stderr
        assert [line[:18] for line in two.stdout.splitlines()] == ['{"type":"job_stats'] * 2
        wrong = jobmon("send", "--port", port, "--token", "nope", '{"type":"get_stats"}')
        assert wrong.returncode == 1
        assert wrong.stderr == (
            "jobmon send: jobmon refused the token: the token is wrong "
            "(failure 1 of 3 before the connection is closed)\n"
            "jobmon send: 1 messages not sent\n"
        )
        assert wrong.stdout == ""  # nothing else went: it would have counted as failures
        server.terminate()


def test_the_python_client_reads_jobmon_tls_as_a_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBMON_TLS", "no")
    assert Client().tls is None  # "no" is off (it used to mean on)
    monkeypatch.setenv("JOBMON_TLS", "maybe")
    with pytest.raises(ValueError, match=r"^JOBMON_TLS=maybe: expected on \(1, true, yes, on\)"):
        Client()
