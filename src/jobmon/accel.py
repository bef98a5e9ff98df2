"""The optional accelerator: the per-message modules compiled by Cython at install.

``setup.py`` compiles the modules in ``COMPILED`` (their plain ``.py`` source,
unchanged) into extension modules beside them, unless ``JOBMON_PURE=1`` is set
or there is no working C compiler; then jobmon is pure Python, as it always is
where an extension module is missing. The ``.py`` files stay the source of
truth: the build records each one's SHA-256 in ``ACCEL_RECORD``, and a module
whose source no longer matches (edited or merged since the build) is imported
from its ``.py``, with one warning, rather than run stale.

At run time ``JOBMON_PURE=1`` imports every one of them from its ``.py``: the
pure-Python fallback that CI tests with the same installed tree. ``describe``
says which is in use (``jobmon --version``, the server's start-up line).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

PACKAGE = Path(__file__).resolve().parent
ACCEL_RECORD = "_accel.json"  # written by setup.py beside the built modules
PURE_VARIABLE = "JOBMON_PURE"

# Chosen by profile (bench/README.md, "A compiled accelerator"): what a message
# runs through, from the wire to the journal. Names relative to the package.
COMPILED = (
    "protocol",
    "framing",
    "connection",
    "engine",
    "batch",
    "publish",
    "store",
    "alerting",
    "monitoring",
    "runs",
    "deadlines",
    "model",
    "jobindex",
    "ranking",
    "settling",
    "sketches",
    "costs",
    "hours",
    "history",
    "analytics",
    "journal",
    "idempotency",
    "commands.fields",
    "commands.once",
    "commands.update_status",
    "commands.job_completed",
    "commands.job_failed",
    "commands.get_stats",
    "commands.heartbeat",
    "commands.start_job",
)


def source_of(name: str) -> Path:
    """The ``.py`` file of a module in ``COMPILED``."""
    return PACKAGE.joinpath(*name.split(".")).with_suffix(".py")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def built_of(name: str) -> Path | None:
    """The module's compiled file beside its source, if one was built."""
    source = source_of(name)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        built = source.with_name(source.stem + suffix)
        if built.is_file():
            return built
    return None


def pure_requested() -> bool:
    return os.environ.get(PURE_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


def recorded() -> dict[str, str]:
    """The sources' digests the build recorded (none: no record, nothing checked)."""
    try:
        record: dict[str, str] = json.loads((PACKAGE / ACCEL_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record


def stale(record: dict[str, str]) -> list[str]:
    """Built modules whose source changed since the build, or that the last build did not
    make (a compiled file left from an earlier one). No record at all: nothing to compare."""
    if not record:
        return []
    return [
        name
        for name in COMPILED
        if built_of(name) is not None and record.get(name) != digest(source_of(name))
    ]


class FromSource:
    """A meta path finder that imports the named modules from their ``.py``."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = {f"{__package__}.{name}" for name in names}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in self.names:
            return None
        source = source_of(fullname.partition(".")[2])
        return importlib.util.spec_from_file_location(fullname, source)


def install() -> None:
    """Called once from the package's ``__init__``, before any listed module loads."""
    if pure_requested():
        sys.meta_path.insert(0, FromSource(COMPILED))
        return
    changed = stale(recorded())
    if changed:
        print(
            f"jobmon: {', '.join(changed)} changed since the accelerator was built; "
            "running them from source (`make install` rebuilds)",
            file=sys.stderr,
        )
        sys.meta_path.insert(0, FromSource(changed))


def in_use() -> list[str]:
    """The listed modules that run compiled in this process (imported or not yet)."""
    if pure_requested():
        return []
    changed = set(stale(recorded()))
    return [name for name in COMPILED if built_of(name) is not None and name not in changed]


def describe() -> str:
    """One line: compiled or pure Python, and why."""
    compiled = in_use()
    if compiled:
        return f"accelerator: {len(compiled)} of {len(COMPILED)} modules compiled (Cython)"
    if pure_requested():
        return f"accelerator: off ({PURE_VARIABLE}=1), pure Python"
    return "accelerator: not built, pure Python"
