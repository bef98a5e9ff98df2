"""A monitored command's process tree and pipes: sampling its memory and CPU
(psutil, /proc where it exists), signalling and stopping the whole tree, keeping
the tail of its stderr, and wording how it exited. ``runner`` drives these."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil  # type: ignore[import-untyped]

Sink = Callable[[bytes], object]

KILL_GRACE_S = 2.0  # SIGTERM, then SIGKILL this much later
TAIL_BYTES = 16384


# -- the process tree ---------------------------------------------------------------------

MAXRSS_PER_MB = 2**20 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes there, KiB here
_PROC_CHILDREN = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
_PROC_STAT = os.path.exists(f"/proc/{os.getpid()}/stat")


class ProcessTree:
    """The command's process and its descendants (also those orphaned since):
    their summed RSS now and at peak, and the CPU each has used."""

    def __init__(self, pid: int) -> None:
        self.pid = pid  # also the process group's id (a new session)
        self.procs: dict[int, Any] = {}  # pid -> psutil.Process, once seen
        self.cpu: dict[tuple[int, float], float] = {}  # (pid, create_time) -> user+system s
        self.peak_mb = 0.0
        self.over_mb = 0.0

    def sample(self) -> float:
        """The tree's RSS now (MB); updates the peak and the CPU seen."""
        pids = _descendants(self.pid)
        pids.add(self.pid)
        for pid in list(self.procs):
            if pid not in pids:  # exited, or orphaned (re-parented): still ours if alive
                proc = self.procs[pid]
                try:
                    alive = proc.is_running()
                except psutil.Error:
                    alive = False
                if alive:
                    pids.add(pid)
                    pids |= _descendants(pid)
                else:
                    del self.procs[pid]
        rss = 0
        for pid in pids:
            proc = self.procs.get(pid)
            try:
                if proc is None:
                    proc = self.procs[pid] = psutil.Process(pid)
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    times = proc.cpu_times()
                    self.cpu[(pid, proc.create_time())] = times.user + times.system
            except psutil.Error:  # gone since it was listed
                self.procs.pop(pid, None)
        memory_mb = rss / 2**20
        self.peak_mb = max(self.peak_mb, memory_mb)
        return memory_mb

    def cpu_s(self) -> float:
        return sum(self.cpu.values())

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def signal_all(self, signum: int) -> None:
        """The process group, and any descendant that left it (setsid)."""
        self.signal_group(signum)
        for proc in list(self.procs.values()):
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signum)  # psutil checks the pid was not reused

    def group_alive(self) -> bool:
        """Whether anything in the process group still runs (zombies do not: an
        orphan waits for init to reap it, and some inits take their time)."""
        if _PROC_STAT:
            return _group_running(self.pid)
        try:
            os.killpg(self.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    async def terminate(self, exited: asyncio.Event) -> None:
        """SIGTERM to the whole tree; SIGKILL to what is left after KILL_GRACE_S."""
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_S
        while time.monotonic() < deadline:
            if exited.is_set() and not self.group_alive():
                return
            await asyncio.sleep(0.05)
        self.signal_all(signal.SIGKILL)


def _group_running(pgid: int) -> bool:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                stat = file.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _descendants(pid: int) -> set[int]:
    if not _PROC_CHILDREN:
        try:
            return {child.pid for child in psutil.Process(pid).children(recursive=True)}
        except psutil.Error:
            return set()
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as file:
                    children = file.read().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


# -- output ---------------------------------------------------------------------------------


class Tail:
    """The last TAIL_BYTES of a stream."""

    def __init__(self) -> None:
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > 2 * TAIL_BYTES:
            del self.data[:-TAIL_BYTES]

    def text(self, lines: int, chars: int) -> str:
        text = bytes(self.data[-TAIL_BYTES:]).decode("utf-8", "replace").rstrip()
        kept = "\n".join(text.splitlines()[-lines:])
        return kept[-chars:]


class OutputProtocol(asyncio.SubprocessProtocol):
    """Passes the command's output through as it comes; notes its exit."""

    def __init__(self, out: Sink, err: Sink, tail: Tail) -> None:
        self.out = out
        self.err = err
        self.tail = tail
        self.exited = asyncio.Event()
        self.closed = asyncio.Event()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        chunk = data.encode() if isinstance(data, str) else data
        if fd == 2:
            self.tail.add(chunk)
            self.err(chunk)
        else:
            self.out(chunk)

    def process_exited(self) -> None:
        self.exited.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


def exit_code(returncode: int | None) -> int:
    if returncode is None:
        return 1
    return 128 - returncode if returncode < 0 else returncode


def exit_text(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit status {returncode}"
