"""TLS gone wrong: an untrusted or misnamed certificate, a plaintext client on the
TLS port, a client that sends nothing, an old protocol version, and files that
cannot serve. Each costs one connection and one log line (no traceback); a
server that cannot use its files does not start, and says which file and why."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import subprocess
import warnings
from collections.abc import AsyncIterator, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization

from certs import Certs, make_certs
from helpers import LineClient, ServerProcess, communicate, free_port, jobmon_cmd
from jobmon.client import Client
from jobmon.connection import WRITE_HIGH_WATER
from jobmon.server import Server

STATS = {"type": "get_stats", "msg_id": 1}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
async def server(start_server: Any, certs: Certs) -> AsyncIterator[Server]:
    async with start_server(
        tls_cert=certs.cert, tls_key=certs.key, tls_handshake_timeout_s=1.0, http_port=free_port()
    ) as srv:
        yield srv


class Failures(logging.Handler):
    """The server's "tls handshake failed" lines, as they are logged (awaitable)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.logged = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "tls handshake failed":
            self.records.append(record)
            self.logged.set()

    async def wait_for(self, count: int, error: str = "") -> list[logging.LogRecord]:
        """Once ``count`` lines (with ``error`` in their reason) were logged."""

        async def enough() -> None:
            while sum(error in fields(r)["error"] for r in self.records) < count:
                self.logged.clear()
                await self.logged.wait()

        await asyncio.wait_for(enough(), 30)
        return self.records


@pytest.fixture
def failures() -> Iterator[Failures]:
    logger = logging.getLogger("jobmon.tls")
    handler, level = Failures(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def fields(record: logging.LogRecord) -> dict[str, Any]:
    assert record.exc_info is None  # one line, never a traceback
    value: dict[str, Any] = getattr(record, "fields")  # noqa: B009
    return value


async def still_serves_tls(server: Server, certs: Certs) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, ssl=certs.client_context()
    )
    client = LineClient(reader, writer)
    assert (await client.request(STATS))["type"] == "job_stats"
    await client.close()


async def jobmon_send(port: int, *flags: str) -> tuple[int, str]:
    # A subprocess awaited, not run: the server under test shares this event loop.
    proc = await asyncio.create_subprocess_exec(
        *jobmon_cmd("send", "--port", str(port), *flags, '{"type":"get_stats"}'),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await communicate(proc, 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_a_client_that_does_not_trust_the_ca_is_refused(
    server: Server, certs: Certs, failures: Failures
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=certs.client_context(certs.other_ca)
        )
    client = Client(port=server.port, tls_ca=certs.other_ca, backoff_s=0.05, backoff_max_s=0.1)
    assert not await client.start(1.0)
    assert client.last_failure is not None and "CERTIFICATE_VERIFY_FAILED" in client.last_failure
    await client.close(flush_s=0)
    code, err = await jobmon_send(server.port, "--tls-ca", str(certs.other_ca))
    assert code == 1
    assert f"jobmon send: cannot connect to 127.0.0.1:{server.port}: " in err
    assert "certificate verify failed: unable to get local issuer certificate" in err
    # No CA given: the system's CAs do not know this one either.
    code, err = await jobmon_send(server.port, "--tls")
    assert code == 1 and "certificate verify failed" in err
    # jobmon send's ssl sends an alert; asyncio's clients just close.
    records = await failures.wait_for(2, "TLSV1_ALERT_UNKNOWN_CA")
    assert all(r.levelno == logging.WARNING for r in records)
    assert {fields(r)["port"] for r in records} == {"tcp"}
    assert {fields(r)["error"] for r in records} == {
        "closed by the peer during the handshake (did it refuse this certificate?)",
        "SSL: TLSV1_ALERT_UNKNOWN_CA (the client does not trust the CA that signed this certificate)",
    }
    await still_serves_tls(server, certs)


async def test_a_certificate_for_another_name_is_refused(start_server: Any, certs: Certs) -> None:
    async with start_server(tls_cert=certs.other_name_cert, tls_key=certs.other_name_key) as srv:
        with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
            await asyncio.open_connection("127.0.0.1", srv.port, ssl=certs.client_context())
        code, err = await jobmon_send(srv.port, "--tls-ca", str(certs.ca))
        assert code == 1 and "certificate verify failed: IP address mismatch" in err
        code, err = await jobmon_send(srv.port, "--host", "localhost", "--tls-ca", str(certs.ca))
        assert code == 1 and "Hostname mismatch" in err


async def test_a_plaintext_client_on_the_tls_port_is_closed_with_one_log_line(
    server: Server, certs: Certs, failures: Failures
) -> None:
    plain = await LineClient.connect(server.port)
    await plain.send(STATS)
    assert await asyncio.wait_for(plain.reader.read(), 30) == b""  # no reply: closed
    local = plain.writer.get_extra_info("sockname")
    await plain.close()
    [record] = await failures.wait_for(1)
    assert record.levelno == logging.WARNING
    assert fields(record) == {
        "port": "tcp",
        "peer": f"{local[0]}:{local[1]}",
        "error": "SSL: WRONG_VERSION_NUMBER (not TLS: a client without --tls on a TLS port?)",
    }
    # Plain HTTP on the https port: the same, with its own hint.
    assert server.http is not None
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"http://127.0.0.1:{server.http.port}/healthz"):
                pass
    http_record = (await failures.wait_for(2))[1]
    assert fields(http_record)["port"] == "http"
    assert fields(http_record)["error"] == (
        "SSL: HTTP_REQUEST (plain HTTP sent to a TLS port: use https://)"
    )
    await still_serves_tls(server, certs)


async def test_a_plaintext_client_says_why_and_backs_off(
    server: Server, failures: Failures
) -> None:
    """Before, a connection closed unanswered was retried at once: thousands a second."""
    client = Client(port=server.port, tls=False, backoff_s=0.05, backoff_max_s=0.2)
    await client.start()
    assert await client.update_status("plain", "running") is None
    records = await failures.wait_for(6)  # the first try and five retries
    assert client.last_failure == (
        "jobmon closed the connection before answering (if it serves TLS, connect with TLS)"
    )
    await client.close(flush_s=0)
    # Each retry came after the client's backoff: 0.05 s doubling to 0.2 s, times a jitter
    # of 0.5 to 1.5 (retrying at once would put them microseconds apart).
    logged_at = [r.created for r in records[:6]]
    gaps = [later - earlier for earlier, later in pairwise(logged_at)]
    least = [0.5 * min(0.05 * 2**retry, 0.2) for retry in range(5)]
    assert all(gap >= floor for gap, floor in zip(gaps, least, strict=True)), (gaps, least)
    code, err = await jobmon_send(server.port)
    assert code == 1
    assert "1 sent, 0 replies (if the server serves TLS, add --tls or --tls-ca FILE)" in err
    # With --token its auth goes first: the TLS port's silence is not a refused token.
    code, err = await jobmon_send(server.port, "--token", "t")
    assert code == 1 and "refused the token" not in err
    assert err.endswith(
        "closed the connection without answering (if the server serves TLS, add --tls or "
        "--tls-ca FILE); 1 messages not sent\n"
    )


async def test_a_client_that_sends_nothing_is_closed_after_the_handshake_timeout(
    server: Server, certs: Certs, failures: Failures
) -> None:
    assert server.http is not None
    silent = [await LineClient.connect(server.port) for _ in range(20)]
    silent.append(await LineClient.connect(server.http.port))
    await still_serves_tls(server, certs)  # while they hold their handshakes open
    for conn in silent:
        assert await asyncio.wait_for(conn.reader.read(), 30) == b""
        await conn.close()
    records = await failures.wait_for(21)
    assert len(records) == 21
    assert {fields(r)["port"] for r in records} == {"tcp", "http"}
    assert all(fields(r)["error"] == "sent nothing in 1 s" for r in records)
    await still_serves_tls(server, certs)


async def test_a_health_check_that_connects_and_closes_is_only_a_debug_line(
    server: Server, certs: Certs, failures: Failures
) -> None:
    probe = await LineClient.connect(server.port)
    await probe.close()
    [record] = await failures.wait_for(1)
    assert record.levelno == logging.DEBUG
    assert fields(record)["error"] == "closed before sending anything"


async def test_tls_older_than_1_2_is_refused(
    server: Server, certs: Certs, failures: Failures
) -> None:
    old = certs.client_context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # or the client itself would not offer them
    with pytest.raises((ssl.SSLError, ConnectionResetError)):  # no alert back: a reset
        await asyncio.open_connection("127.0.0.1", server.port, ssl=old)
    [record] = await failures.wait_for(1)
    assert fields(record)["error"].startswith("SSL: UNSUPPORTED_PROTOCOL")


def serve(*flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        jobmon_cmd("serve", "--in-memory", "--port", "0", "--http-port", "0", *flags),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def encrypted_key(certs: Certs, directory: Path) -> Path:
    key = serialization.load_pem_private_key(certs.key.read_bytes(), password=None)
    path = directory / "encrypted-key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return path


def test_files_that_cannot_serve_stop_the_start_with_the_file_and_the_reason(
    certs: Certs, tmp_path: Path
) -> None:
    missing = tmp_path / "missing-key.pem"
    cert, key = str(certs.cert), str(certs.key)
    cases = [
        (["--tls-cert", cert, "--tls-key", str(missing)],
         f"--tls-key {missing}: cannot read it: No such file or directory"),
        (["--tls-cert", cert, "--tls-key", str(tmp_path)],
         f"--tls-key {tmp_path}: cannot read it: Is a directory"),
        (["--tls-cert", cert, "--tls-key", str(certs.other_key)],
         f"--tls-key {certs.other_key} is not the private key of the certificate in "
         f"--tls-cert {cert}"),
        (["--tls-cert", key, "--tls-key", key], f"--tls-cert {key}: no PEM certificate in it"),
        (["--tls-cert", cert, "--tls-key", cert], f"--tls-key {cert}: no PEM private key in it"),
        (["--tls-cert", cert, "--tls-key", str(encrypted_key(certs, tmp_path))],
         "the key is encrypted with a passphrase; give it unencrypted"),
        (["--tls-cert", cert], "--tls-cert needs --tls-key too (JOBMON_TLS_CERT and JOBMON_TLS_KEY)"),
        (["--tls-key", key], "--tls-key needs --tls-cert too"),
    ]  # fmt: skip
    for flags, expected in cases:
        result = serve(*flags)
        assert result.returncode == 1, (flags, result.stderr)
        assert result.stderr.startswith("jobmon: cannot start: "), result.stderr
        assert expected in result.stderr, (flags, result.stderr)
        assert "Traceback" not in result.stderr and "listening" not in result.stderr


def test_the_environment_sets_tls_on_both_sides(
    tmp_path: Path, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBMON_TLS_CERT", str(certs.cert))
    monkeypatch.setenv("JOBMON_TLS_KEY", str(certs.key))
    with ServerProcess(tmp_path / "data") as server:
        assert f"jobmon listening on 127.0.0.1:{server.port} (TLS)" in server.stderr
        sent = subprocess.run(
            jobmon_cmd("send", "--port", str(server.port), '{"type":"get_stats","msg_id":9}'),
            capture_output=True,
            timeout=60,
            env={**os.environ, "JOBMON_TLS_CA": str(certs.ca)},
        )
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.startswith(b'{"type":"job_stats","in_reply_to":9,"total":0,')
    result = subprocess.run(
        jobmon_cmd("send", "--tls-ca", str(tmp_path / "no-ca.pem"), "{}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"argument --tls-ca: {tmp_path / 'no-ca.pem'}: cannot read it: No such file" in (
        result.stderr
    )
    result = subprocess.run(
        jobmon_cmd("send", "--tls-ca", str(certs.key), "{}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"argument --tls-ca: {certs.key}: no PEM CA certificate in it" in result.stderr


async def test_a_tls_client_that_stops_reading_is_paused_not_buffered(
    server: Server, certs: Certs
) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, ssl=certs.client_context(), limit=1 << 24
    )
    client = LineClient(reader, writer)
    jobs = [
        {"type": "update_status", "job_id": f"job-{i}", "status": "running"} for i in range(100)
    ]
    assert len(await client.pipeline(jobs)) == 100
    request = b'{"type":"list_jobs","msg_id":1}\n'
    sending = asyncio.create_task(client.send_raw(request * 3_000))  # ~80 MB of replies owed
    (conn,) = server.connections
    await asyncio.wait_for(conn.paused.wait(), 30)
    assert conn.congested and conn.transport is not None
    # About the high-water mark of replies held, as over plain TCP (plus TLS's own buffer).
    assert WRITE_HIGH_WATER <= conn.transport.get_write_buffer_size() <= 2 * WRITE_HIGH_WATER
    for _ in range(3_000):  # reading again: every reply, in order
        assert (await client.read_line(timeout=60)).startswith(b'{"type":"jobs","in_reply_to":1,')
    await sending
    assert not conn.paused.is_set()
    await client.close()
