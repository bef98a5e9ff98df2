"""The data directory: recovery at start (snapshot + journals) and compaction.

Files: ``snapshot-G.json`` is the state as of the start of ``journal-G.log``.
Recovery loads the newest snapshot, replays every journal from its generation
on (only the newest may have a torn tail), then appends to the newest journal.
``LOCK`` is held by the one process using the directory (``datalock``).
Compaction starts ``journal-(G+1)`` and forks: the child writes
``snapshot-(G+1)`` from its copy-on-write view of the state while the store
goes on serving. Only once that file is renamed into place are older files
deleted, so a crash at any point leaves a recoverable directory.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import datalock
from .commands import HANDLERS, ONCE, once
from .datalock import DataDirLock
from .errors import RequestError
from .jobrows import load_state
from .journal import (
    CorruptData,
    FsyncTimes,
    JournalWriter,
    fsync_dir,
    read_frames,
    read_snapshot,
    write_snapshot,
)
from .model import snapshot_default
from .node import Node

log = logging.getLogger("jobmon.persistence")

_FILE = re.compile(r"^(journal|snapshot)-(\d{6,})\.(log|json)$")
# Internal record: the server default that replay of job_failed depends on.
CONFIG_RECORD = "_config"
# Internal record: deadlines came due at this record's time (see Store.expire).
TICK_RECORD = "_tick"
# Internal record: the connections reporting these jobs running are gone.
WORKERS_GONE_RECORD = "_workers_gone"


@dataclass
class Recovery:
    snapshot_generation: int | None = None
    records_replayed: int = 0
    journals: int = 0
    seconds: float = 0.0


def _journal(dir_: Path, gen: int) -> Path:
    return dir_ / f"journal-{gen:06d}.log"


def _snapshot(dir_: Path, gen: int) -> Path:
    return dir_ / f"snapshot-{gen:06d}.json"


def _generations(dir_: Path) -> tuple[list[int], list[int]]:
    journals: list[int] = []
    snapshots: list[int] = []
    for path in dir_.iterdir():
        match = _FILE.match(path.name)
        if match:
            (journals if match.group(1) == "journal" else snapshots).append(int(match.group(2)))
    return sorted(journals), sorted(snapshots)


class DataDir:
    def __init__(self, path: Path, compact_min_bytes: int) -> None:
        self.path = path
        self.compact_min_bytes = compact_min_bytes
        self.generation = 0
        self.writer: JournalWriter | None = None
        self.fsync_times = FsyncTimes()
        self.snapshot_bytes = 0
        self.compacting = False
        self.compactions = 0
        self.retry_at_bytes = 0  # after a failed compaction, wait for this much journal
        self.lock: DataDirLock | None = None  # held from recovery until close (datalock)

    # -- start -------------------------------------------------------------
    def recover(self, node: Node, settings: dict[str, Any] | None) -> Recovery:
        """Load the snapshot and replay the journals; then, if ``settings`` (the
        server's, see ``Store.settings``) differ from those recorded, apply them
        from here on and journal them. ``None``: keep what was recorded."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.lock is None:  # before anything in it is read or changed
            self.lock = datalock.acquire(self.path)
        # Recovery creates millions of long-lived objects and no garbage cycles:
        # the cyclic collector would only rescan them, over and over.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._recover(node, settings)
        except BaseException:
            self.close()  # nothing was started here: the next one may try
            raise
        finally:
            if collecting:
                gc.enable()

    def _recover(self, node: Node, settings: dict[str, Any] | None) -> Recovery:
        started = time.perf_counter()
        for leftover in self.path.glob("*.tmp"):
            leftover.unlink()  # a compaction that never finished; its journals remain
        journals, snapshots = _generations(self.path)
        report = Recovery()
        base = 0
        # What replay depends on (the default max_retries, the slow_run factor,
        # the cost model's thresholds), as last recorded.
        recorded: dict[str, Any] = {}
        if snapshots:
            base = snapshots[-1]
            snap_path = _snapshot(self.path, base)
            _load_snapshot(node, snap_path)
            recorded = node.store.settings()
            self.snapshot_bytes = snap_path.stat().st_size
            report.snapshot_generation = base
        live = [g for g in journals if g >= base]
        for index, gen in enumerate(live):
            path = _journal(self.path, gen)
            for offset, ts, records in read_frames(path, allow_torn_tail=index == len(live) - 1):
                for name, args in records:
                    try:
                        if name == CONFIG_RECORD:
                            _configure(node, args)
                            recorded.update(args)
                        else:
                            _replay(node, ts, name, args, path)
                    except _Malformed as exc:
                        raise CorruptData(path, offset, str(exc)) from None
                    report.records_replayed += 1
        report.journals = len(live)
        self.generation = live[-1] if live else base
        self._delete_older_than(base)
        self.writer = JournalWriter(_journal(self.path, self.generation), self.fsync_times)
        fsync_dir(self.path)
        if settings is not None and any(recorded.get(k) != v for k, v in settings.items()):
            node.store.apply_settings(settings)
            self.writer.append(CONFIG_RECORD, settings)
            self.writer.write(time.time())
            self.writer.fsync()
        report.seconds = time.perf_counter() - started
        return report

    # -- compaction --------------------------------------------------------
    def should_compact(self) -> bool:
        writer = self.writer
        return (
            writer is not None
            and not self.compacting
            and writer.size >= max(self.compact_min_bytes, self.snapshot_bytes, self.retry_at_bytes)
        )

    def begin_compaction(self, node: Node) -> tuple[int, int]:
        """In the store task: switch journals, then fork a child that writes the
        snapshot from its copy-on-write view of the state (as Redis's BGSAVE).
        The store stalls only for the fork. Returns (generation, child pid)."""
        generation = self._rotate()
        pid = fork_writer(lambda: self._write_snapshot(node, generation), "compaction")
        self.compacting = True
        return generation, pid

    def compact_in_background(self, node: Node) -> asyncio.Future[None]:
        """Fork the snapshot's child (the store task stalls for the fork only, logged)
        and wait for it in a thread; the engine tracks the future."""
        started = time.perf_counter()
        generation, pid = self.begin_compaction(node)
        log.info(
            "compaction started",
            extra={
                "fields": {
                    "generation": generation,
                    "jobs": len(node.store.jobs),
                    "child_pid": pid,
                    "stall_ms": round((time.perf_counter() - started) * 1000, 1),
                }
            },
        )
        loop = asyncio.get_running_loop()
        return asyncio.ensure_future(
            loop.run_in_executor(None, self.finish_compaction, generation, pid)
        )

    async def fsync_every_second(self) -> None:
        """``--fsync everysec``: what the OS holds reaches the disk within about a second."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            writer = self.writer
            if writer is not None and writer.dirty:
                await loop.run_in_executor(None, writer.fsync)

    def finish_compaction(self, generation: int, pid: int) -> None:
        """Blocking, in a worker thread: wait for the child, then drop older files."""
        started = time.perf_counter()
        try:
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                # Nothing is lost: the older snapshot and journals are all still
                # there. Retry once the journal has grown again, not every turn.
                written = self.writer.size if self.writer is not None else 0
                self.retry_at_bytes = written + self.compact_min_bytes
                log.error(
                    "compaction %d failed (child exit status %d); retrying after %d more bytes",
                    generation,
                    status,
                    self.compact_min_bytes,
                )
                return
            self.retry_at_bytes = 0
            self.snapshot_bytes = _snapshot(self.path, generation).stat().st_size
            self._delete_older_than(generation)
            self.compactions += 1
        finally:
            self.compacting = False
        log.info(
            "compaction finished",
            extra={
                "fields": {
                    "generation": generation,
                    "snapshot_bytes": self.snapshot_bytes,
                    "seconds": round(time.perf_counter() - started, 3),
                }
            },
        )

    def compact_now(self, node: Node) -> int:
        """Offline (``jobmon compact``): the same, in this process."""
        generation = self._rotate()
        self._write_snapshot(node, generation)
        self.snapshot_bytes = _snapshot(self.path, generation).stat().st_size
        self._delete_older_than(generation)
        self.compactions += 1
        return generation

    def _rotate(self) -> int:
        assert self.writer is not None
        self.writer.close()
        self.generation += 1
        self.writer = JournalWriter(_journal(self.path, self.generation), self.fsync_times)
        fsync_dir(self.path)
        return self.generation

    def _write_snapshot(self, node: Node, generation: int) -> None:
        write_snapshot(
            _snapshot(self.path, generation), generation, node.store.to_snapshot(), snapshot_default
        )

    def _delete_older_than(self, generation: int) -> None:
        journals, snapshots = _generations(self.path)
        for gen in journals:
            if gen < generation:
                _journal(self.path, gen).unlink()
        for gen in snapshots:
            if gen < generation:
                _snapshot(self.path, gen).unlink()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def fork_writer(write: Callable[[], None], what: str) -> int:
    """Fork a child that runs ``write`` on its copy-on-write view of the state
    (as Redis's BGSAVE) and exits; the caller stalls only for the fork. The pid."""
    # Objects alive now move out of the collector's sight: the parent's
    # collections stay cheap and do not dirty pages the child still reads.
    gc.freeze()
    pid = os.fork()
    if pid == 0:  # the child: write, then leave without running any cleanup
        code = 1
        try:
            gc.disable()
            write()
            code = 0
        except BaseException as exc:  # noqa: BLE001 - report, never return into the loop
            os.write(2, f"jobmon {what} child failed: {exc!r}\n".encode())
        finally:
            os._exit(code)
    return pid


class _Malformed(Exception):
    """A record replay cannot read; recovery names its file and frame offset."""


def _load_snapshot(node: Node, path: Path) -> None:
    try:
        node.store.load_snapshot(read_snapshot(path, load_state))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        with open(path, "rb") as f:
            body_offset = len(f.readline())
        raise CorruptData(
            path,
            body_offset,
            f"snapshot body's checksum matches but it is not jobmon state ({exc!r})",
        ) from None


def _configure(node: Node, settings: Any) -> None:
    try:
        if type(settings) is not dict:
            raise TypeError("not an object")
        node.store.apply_settings(settings)
    except (TypeError, ValueError) as exc:
        raise _Malformed(f"malformed {CONFIG_RECORD} record ({exc})") from None


def _is_time(value: Any) -> bool:
    return type(value) in (int, float)


def _replay(node: Node, ts: float, name: str, args: Any, path: Path) -> None:
    if name == TICK_RECORD:
        # [restarted_at]: every deadline due (before slices); [restarted_at, n]: the first n.
        if not (
            type(args) is list
            and 1 <= len(args) <= 2
            and (args[0] is None or _is_time(args[0]))
            and (len(args) == 1 or (type(args[1]) is int and args[1] >= 0))
        ):
            raise _Malformed(f"malformed {name} record {args!r:.80}")
        node.store.expire(ts, args[0], args[1] if len(args) == 2 else None)
        return
    if name == WORKERS_GONE_RECORD:
        if not (
            type(args) is list
            and all(
                type(a) is list and len(a) == 2 and type(a[0]) is str and _is_time(a[1])
                for a in args
            )
        ):
            raise _Malformed(f"malformed {name} record {args!r:.80}")
        node.store.lose_workers(ts, args)
        return
    if name == once.RECORD:
        known = type(args) is list and len(args) > 1 and type(args[1]) is str
        handler = ONCE.get(args[1]) if known else None
    else:
        handler = HANDLERS.get(name)
    if handler is None or not handler.mutates:
        raise _Malformed(f"unknown record type {name[:64]!r} (written by a newer jobmon?)")
    try:
        apply_command(node, ts, name, args, path)
    except RequestError as exc:
        # It was accepted once, so this means the journal and the code disagree.
        log.warning("replay of %s record in %s refused (%s); skipped", name, path, exc.text)
    except Exception:
        # Live, this record hit a bug and was journaled for that reason: replay
        # ends in the same state as the process that wrote it.
        log.exception("replay of %s record in %s failed as it did live; continuing", name, path)


def apply_command(node: Node, ts: float, name: str, args: Any, path: Path) -> dict[str, Any]:
    """A command's record applied (replay, or a cluster's log); its reply body."""
    handler = HANDLERS.get(name) if name != once.RECORD else ONCE.get(args[1])
    if handler is None or not handler.mutates:
        raise CorruptData(path, 0, f"unknown record type {name!r} (written by a newer jobmon?)")
    return handler.apply(node, ts, args, None)
