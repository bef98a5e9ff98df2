"""One process at a time on a data directory: an exclusive ``flock`` on its ``LOCK`` file.

Two writers on one journal (two ``jobmon serve``, or ``jobmon compact`` under a
running server) would interleave frames and delete each other's files, losing
acknowledged events. ``serve`` and ``compact`` take the lock before they read or
write anything in the directory and hold it for the life of the process; the
file holds the holder's pid, so the one refused can say who has it. The kernel
releases a ``flock`` when its holder dies, ``kill -9`` included, so a crash
never leaves a lock that blocks the restart. A compaction child (``fork``)
shares its parent's lock; programs the server starts (``exec``) do not inherit
it (Python opens files non-inheritable).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import BinaryIO

LOCK_NAME = "LOCK"


class DataDirLocked(OSError):
    """Another process holds the data directory."""

    def __init__(self, path: Path, holder: int | None) -> None:
        self.path = path
        self.holder = holder
        super().__init__(f"{self.in_use()}: stop it first, or give this one another --data-dir")

    def in_use(self) -> str:
        who = f"process {self.holder}" if self.holder is not None else "another process"
        return f"the data directory {self.path} is in use by {who} (it holds {LOCK_NAME})"


class DataDirLock:
    """The held lock; ``release`` (or the process's end) lets the next one in."""

    def __init__(self, path: Path, file: BinaryIO) -> None:
        self.path = path
        self._file: BinaryIO | None = file  # closed (the lock released) if it is dropped

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the last descriptor releases the flock
            self._file = None


def acquire(path: Path) -> DataDirLock:
    """Lock ``path`` (an existing directory) for this process, or raise
    ``DataDirLocked`` having changed nothing in it but the lock file's creation."""
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    file = os.fdopen(fd, "r+b", buffering=0)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        file.close()
        raise DataDirLocked(path.resolve(), holder) from None
    except BaseException:
        file.close()
        raise
    # Ours: say who holds it (a pid left by a process that died is overwritten).
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return DataDirLock(path, file)


def _holder(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None
