"""Issue 9, smaller: damage whose checksum matches is named by file and byte
offset at start, never a traceback or offset 0."""

from __future__ import annotations

import subprocess
import zlib
from pathlib import Path

import orjson
import pytest

from helpers import jobmon_cmd
from jobmon.journal import CorruptData, encode_frame
from jobmon.node import Node
from jobmon.persistence import DataDir
from jobmon.store import Store

GOOD = encode_frame(
    1_790_000_000.0,
    [("update_status", ["a", "running", None, None, None])],
)


def frame(payload: bytes) -> bytes:
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def recover(data_dir: Path) -> None:
    DataDir(data_dir, 1 << 30).recover(Node(Store()), None)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'[1790000000.0,"x"]', "checksum matches but its body is not [time, [[type, args], ...]]"),
        (b'[1790000000.0,[["update_status"]]]', "checksum matches but its body is not"),
        (b'["now",[]]', "checksum matches but its body is not"),
        (b'[1790000000.0,[["frobnicate",[]]]]', "unknown record type 'frobnicate'"),
        (b'[1790000000.0,[["_tick","x"]]]', "malformed _tick record"),
        (b'[1790000000.0,[["_tick",[null,-1]]]]', "malformed _tick record"),
        (b'[1790000000.0,[["_workers_gone",[["a"]]]]]', "malformed _workers_gone record"),
        (b'[1790000000.0,[["_config",[1]]]]', "malformed _config record"),
    ],
)
def test_a_checksummed_frame_that_makes_no_sense_is_named(
    tmp_path: Path, payload: bytes, reason: str
) -> None:
    tmp_path.mkdir(exist_ok=True)
    journal = tmp_path / "journal-000000.log"
    journal.write_bytes(GOOD + frame(payload) + GOOD)
    with pytest.raises(CorruptData) as caught:
        recover(tmp_path)
    assert caught.value.offset == len(GOOD)
    assert str(caught.value).startswith(f"{journal}: damaged at byte offset {len(GOOD)}: ")
    assert reason in str(caught.value)


def test_the_server_says_so_in_one_line(tmp_path: Path) -> None:
    journal = tmp_path / "journal-000000.log"
    journal.write_bytes(GOOD + frame(b'[1790000000.0,[["update_status"]]]'))
    result = subprocess.run(
        jobmon_cmd("serve", "--port", "0", "--http-port", "0", "--data-dir", str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"jobmon: cannot start: {journal}: damaged at byte offset {len(GOOD)}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("header", "body", "reason"),
    [
        ({"length": -5, "crc": 0}, b"{}", "snapshot header's length -5 or crc 0 is out of range"),
        ({"length": "2", "crc": 0}, b"{}", "snapshot header's length '2'"),
        ({"length": 2, "crc": "x"}, b"{}", "or crc 'x' is out of range"),
        ({"length": 2, "crc": 2**40}, b"{}", "is out of range"),
        ({"length": 2, "crc": None}, b"{}", "is out of range"),
        ({"length": 2}, b"{}", "is not jobmon state"),  # crc filled in below
        ({"length": 10}, b'{"jobs":1}', "is not jobmon state"),
    ],
)
def test_an_odd_snapshot_is_named(
    tmp_path: Path, header: dict[str, object], body: bytes, reason: str
) -> None:
    header = {"format": "jobmon-snapshot", "version": 1, "generation": 1, **header}
    if "crc" not in header:
        header["crc"] = zlib.crc32(body)
    head = orjson.dumps(header)
    snapshot = tmp_path / "snapshot-000001.json"
    snapshot.write_bytes(head + b"\n" + body + b"\n")
    with pytest.raises(CorruptData) as caught:
        recover(tmp_path)
    assert str(caught.value).startswith(f"{snapshot}: damaged at byte offset ")
    assert reason in str(caught.value)
    if "not jobmon state" in reason:
        assert caught.value.offset == len(head) + 1
