"""The optional accelerator (jobmon.accel): which modules run compiled, and the switch off.

The rest of the suite is the accelerator's real test: CI runs it on the compiled
build (`make test`) and again with JOBMON_PURE=1 (`make test-pure`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import ServerProcess, jobmon_cmd
from jobmon import accel

WHERE = (
    "import importlib, json, jobmon.accel as a; "
    "print(json.dumps({n: importlib.import_module('jobmon.' + n).__file__ for n in a.COMPILED}))"
)


def current() -> list[str]:
    """The modules a process without JOBMON_PURE runs compiled (built, source unchanged)."""
    changed = accel.stale(accel.recorded())
    return [n for n in accel.COMPILED if accel.built_of(n) is not None and n not in changed]


def run(*argv: str, pure: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != accel.PURE_VARIABLE}
    if pure:
        env[accel.PURE_VARIABLE] = "1"
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=True)


def test_jobmon_pure_imports_every_listed_module_from_its_source() -> None:
    files = json.loads(run(sys.executable, "-c", WHERE, pure=True).stdout)
    assert sorted(files) == sorted(accel.COMPILED)
    assert all(path == str(accel.source_of(name)) for name, path in files.items()), files


def test_without_the_switch_the_built_modules_are_the_ones_imported() -> None:
    files = json.loads(run(sys.executable, "-c", WHERE, pure=False).stdout)
    compiled = current()
    for name, path in files.items():
        built = accel.built_of(name)
        expected = built if name in compiled else accel.source_of(name)
        assert path == str(expected), (name, path)


def test_version_says_whether_the_accelerator_is_in_use() -> None:
    pure = run(*jobmon_cmd("--version"), pure=True).stdout.strip()
    assert pure == "jobmon 0.1.0, accelerator: off (JOBMON_PURE=1), pure Python"
    default = run(*jobmon_cmd("--version"), pure=False).stdout.strip()
    compiled = len(current())
    if compiled:
        expected = f"accelerator: {compiled} of {len(accel.COMPILED)} modules compiled (Cython)"
    else:
        expected = "accelerator: not built, pure Python"
    assert default == f"jobmon 0.1.0, {expected}"


def test_a_module_whose_source_changed_since_the_build_runs_from_source() -> None:
    built = [name for name in accel.COMPILED if accel.built_of(name) is not None]
    record = {name: accel.digest(accel.source_of(name)) for name in accel.COMPILED}
    assert accel.stale(record) == []
    record["store"] = "0" * 64  # as if store.py had been edited after the build
    assert accel.stale(record) == (["store"] if "store" in built else [])
    del record["store"]  # a compiled store left from an earlier build that this one failed
    assert accel.stale(record) == (["store"] if "store" in built else [])
    assert accel.stale({}) == []  # no record (a wheel without one): nothing to compare


def test_the_server_says_at_start_up_which_it_runs(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as server:
        assert f"jobmon {accel.describe()}\n" in server.stderr_lines
