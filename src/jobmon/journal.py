"""The append-only journal and the snapshot file format.

A journal record is one line: ``<crc32 of payload, 8 hex> <payload JSON>\\n``,
the payload being ``[ts, type, args]``, the validated arguments of a state
change and the clock reading it was applied with, so replay is deterministic.
Records are buffered during a store turn and written with one ``write`` before
any reply of that turn is released (as Redis's AOF does).

A snapshot is a header line (format, generation, body length and crc) and one
JSON body line. ``snapshot-G`` holds the state as of the start of ``journal-G``.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import threading
import time
import zlib
from bisect import bisect_left
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import orjson

log = logging.getLogger("jobmon.journal")

SNAPSHOT_FORMAT = "jobmon-snapshot"
SNAPSHOT_VERSION = 1


class CorruptData(Exception):
    """Damage that is not a torn tail: refuse to start rather than guess."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(
            f"{path}: damaged at byte offset {offset}: {reason}. jobmon will not start on "
            "damaged data; move the file aside (or restore it from a backup) and start again"
        )
        self.path = path
        self.offset = offset


def encode_frame(ts: float, records: list[tuple[str, Any]]) -> bytes:
    payload = orjson.dumps((ts, records))
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def read_records(path: Path, allow_torn_tail: bool) -> Iterator[tuple[float, str, Any]]:
    """Yield each record; a bad last frame is dropped (and cut off the file) when allowed."""
    for _, ts, records in read_frames(path, allow_torn_tail):
        for name, args in records:
            yield ts, name, args


def read_frames(
    path: Path, allow_torn_tail: bool
) -> Iterator[tuple[int, float, list[tuple[str, Any]]]]:
    """Yield each frame as (its byte offset, its time, its records), as
    ``read_records`` reads them; a frame whose checksum matches but whose body is
    not ``[time, [[type, args], ...]]`` is damage, named by file and offset."""
    data = path.read_bytes()
    offset = 0
    end = len(data)
    while offset < end:
        newline = data.find(b"\n", offset)
        line_end = end if newline < 0 else newline
        frame = _parse_frame(data, offset, line_end)
        if frame is None:
            is_last = newline < 0 or newline + 1 >= end
            if not (allow_torn_tail and is_last):
                raise CorruptData(path, offset, "journal frame checksum or format does not match")
            log.warning(
                "journal %s: dropped a torn last frame at offset %d (%d bytes): "
                "the process stopped mid-write; none of its requests were acknowledged",
                path,
                offset,
                end - offset,
            )
            with open(path, "r+b") as f:
                f.truncate(offset)
                os.fsync(f.fileno())
            return
        ts, records = frame
        if not _well_formed(ts, records):
            raise CorruptData(
                path,
                offset,
                "journal frame's checksum matches but its body is not [time, [[type, args], ...]]",
            )
        yield offset, ts, records
        offset = line_end + 1


def _well_formed(ts: Any, records: Any) -> bool:
    return (
        type(ts) in (int, float)
        and type(records) is list
        and all(type(r) is list and len(r) == 2 and type(r[0]) is str for r in records)
    )


def _parse_frame(data: bytes, start: int, stop: int) -> tuple[float, list[Any]] | None:
    if stop - start < 10 or data[start + 8] != 0x20:
        return None
    try:
        crc = int(data[start : start + 8], 16)
    except ValueError:
        return None
    payload = data[start + 9 : stop]
    if zlib.crc32(payload) != crc:
        return None
    try:
        ts, records = orjson.loads(payload)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return None
    return ts, records


# Upper bounds (seconds) of the fsync latency histogram, as /metrics shows it.
FSYNC_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class FsyncTimes:
    """How long fsyncs took, over the process's life (journal files come and go)."""

    def __init__(self) -> None:
        self.buckets = [0] * (len(FSYNC_BUCKETS_S) + 1)  # per bucket, +Inf last
        self.seconds_total = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(FSYNC_BUCKETS_S, seconds)] += 1
        self.seconds_total += seconds


class TurnLog(Protocol):
    """The journal seam: where a store turn's state changes go, each record in
    order, then the whole turn as one unit before any of its replies is released.

    Two implementations, beside each other: ``JournalWriter`` (below: the data
    directory's file, one checksummed frame per turn, fsync per ``--fsync``;
    the turn was applied first) and ``cluster.proposal.StreamJournal`` (a
    cluster's Redis Stream: one entry per turn, applied by every node, the
    proposer too, once the stream has ordered it)."""

    def append(self, name: str, args: Any) -> None:
        """One record of this turn."""
        ...

    def write(self, ts: float) -> bool:
        """Hand the turn's records over as one unit; True when there were any."""
        ...


class JournalWriter:
    """Appends records to one journal file; ``write`` before replying, ``fsync`` per policy."""

    def __init__(self, path: Path, fsync_times: FsyncTimes | None = None) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.size = os.fstat(self.fd).st_size
        self.pending: list[tuple[str, Any]] = []
        self.written_seq = 0  # bumped per write; fsync records what it covered
        self.synced_seq = 0
        self.fsync_times = fsync_times if fsync_times is not None else FsyncTimes()
        self._sync_lock = threading.Lock()

    def append(self, name: str, args: Any) -> None:
        self.pending.append((name, args))

    def write(self, ts: float) -> bool:
        """Hand the turn's records to the OS as one frame stamped with the turn's
        clock reading; True when anything was written."""
        if not self.pending:
            return False
        try:
            data = encode_frame(ts, self.pending)
        except (TypeError, orjson.JSONEncodeError):  # a bug upstream; never the whole store
            data = self._encode_what_can_be(ts)
        self.pending = []
        if not data:
            return False
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.size += len(data)
        self.written_seq += 1
        return True

    def _encode_what_can_be(self, ts: float) -> bytes:
        """A record validation should have refused (too deep, not JSON) is logged
        and left out, so one bad record cannot stop the store task."""
        kept = []
        for record in self.pending:
            try:
                orjson.dumps(record)
            except (TypeError, orjson.JSONEncodeError) as exc:
                log.error(
                    "bug: a %s record could not be journaled (%s); skipped: its change "
                    "lives in this process only",
                    record[0],
                    exc,
                )
                continue
            kept.append(record)
        return encode_frame(ts, kept) if kept else b""

    @property
    def dirty(self) -> bool:
        return self.synced_seq != self.written_seq

    def fsync(self) -> None:
        """Blocking; called from a worker thread so the event loop keeps reading."""
        with self._sync_lock:
            target = self.written_seq
            if target == self.synced_seq:
                return
            started = time.perf_counter()
            os.fsync(self.fd)
            elapsed = time.perf_counter() - started
            self.synced_seq = target
            self.fsync_times.observe(elapsed)

    def close(self) -> None:
        assert not self.pending, "records appended but never written"
        self.fsync()
        os.close(self.fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_snapshot(
    path: Path, generation: int, state: dict[str, Any], default: Callable[[Any], Any] | None = None
) -> int:
    """Write atomically (temp file, fsync, rename, fsync dir); returns the file size."""
    body = orjson.dumps(state, default=default)
    header = orjson.dumps(
        {
            "format": SNAPSHOT_FORMAT,
            "version": SNAPSHOT_VERSION,
            "generation": generation,
            "length": len(body),
            "crc": zlib.crc32(body),
        }
    )
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(header + b"\n" + body + b"\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return len(header) + len(body) + 2


MAP_FROM_BYTES = 1 << 20


def read_snapshot(
    path: Path, loads: Callable[[memoryview], dict[str, Any]] = orjson.loads
) -> dict[str, Any]:
    """The snapshot's body, checked, read by ``loads`` (``jobrows.load_state``)."""
    with open(path, "rb") as f:
        # A large one is mapped, not copied: its pages are the page cache's,
        # unmapped once read (a tenth of a million jobs' restart).
        if os.fstat(f.fileno()).st_size < MAP_FROM_BYTES:
            data: bytes | mmap.mmap = f.read()
        else:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return _read_snapshot(path, data, loads)
    finally:
        if isinstance(data, mmap.mmap):
            with contextlib.suppress(BufferError):  # else unmapped with its last view
                data.close()


def _read_snapshot(
    path: Path, data: bytes | mmap.mmap, loads: Callable[[memoryview], dict[str, Any]]
) -> dict[str, Any]:
    newline = data.find(b"\n")
    try:
        header = orjson.loads(data[:newline]) if newline > 0 else None
    except orjson.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != SNAPSHOT_FORMAT:
        raise CorruptData(path, 0, "not a jobmon snapshot header")
    if header.get("version") != SNAPSHOT_VERSION:
        raise CorruptData(path, 0, f"snapshot version {header.get('version')!r} is not supported")
    length, crc = header.get("length"), header.get("crc")
    if not (type(length) is int and length >= 0 and type(crc) is int and 0 <= crc < 1 << 32):
        raise CorruptData(
            path, 0, f"snapshot header's length {length!r} or crc {crc!r} is out of range"
        )
    body = memoryview(data)[newline + 1 : newline + 1 + length]  # not copied
    if len(body) != length:
        raise CorruptData(path, newline + 1, "snapshot body is truncated or its checksum differs")
    # The checksum on the other core while this one decodes (zlib lets go of
    # the GIL): a tenth of a million jobs' restart. Nothing decoded is used
    # before it matches.
    checked: list[int] = []
    checking = threading.Thread(target=lambda: checked.append(zlib.crc32(body)), daemon=True)
    checking.start()
    try:
        state = loads(body)
    finally:
        checking.join()
        if checked != [crc]:
            raise CorruptData(  # noqa: B012 - a damaged body's own decode error says less
                path, newline + 1, "snapshot body is truncated or its checksum differs"
            )
    return state
