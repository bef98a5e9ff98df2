"""Builds jobmon, with the optional accelerator (src/jobmon/accel.py says what it is).

The modules in ``jobmon.accel.COMPILED`` are compiled by Cython from their
plain ``.py`` source when Cython imports and a C compiler works; each is an
optional extension, so one that fails to build leaves that module in pure
Python with a warning, never a failed install. ``JOBMON_PURE=1`` at install
builds nothing. Everything else is in pyproject.toml.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
PACKAGE = ROOT / "src" / "jobmon"
# Python's own semantics, exactly: no C types read from annotations (an `x: float`
# would otherwise turn the 0 a reply writes as `0` into `0.0`).
DIRECTIVES = {"language_level": 3, "annotation_typing": False, "binding": True}


def say(text: str) -> None:
    print(f"jobmon accelerator: {text}", file=sys.stderr, flush=True)


def compiled_names() -> list[str]:
    """``COMPILED`` from accel.py, read without importing the package."""
    tree = ast.parse((PACKAGE / "accel.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "COMPILED" for target in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise SystemExit("setup.py: no COMPILED in src/jobmon/accel.py")


def source(name: str) -> Path:
    return PACKAGE.joinpath(*name.split(".")).with_suffix(".py")


def pure(reason: str) -> list[Extension]:
    """No extensions; and none of an earlier build left beside the sources to be imported."""
    left = [
        built
        for name in compiled_names()
        for suffix in EXTENSION_SUFFIXES
        if (built := source(name).with_name(source(name).stem + suffix)).is_file()
    ]
    for built in left:
        built.unlink()
    (PACKAGE / "_accel.json").unlink(missing_ok=True)
    removed = f" (removed {len(left)} compiled modules of an earlier build)" if left else ""
    say(f"{reason}: pure Python{removed}")
    return []


def extensions() -> list[Extension]:
    if os.environ.get("JOBMON_PURE", "").strip().lower() in ("1", "true", "yes", "on"):
        return pure("off (JOBMON_PURE=1)")
    try:
        from Cython.Build import cythonize
    except ImportError:
        return pure("Cython is not installed")
    modules = [
        Extension(f"jobmon.{name}", [str(source(name).relative_to(ROOT))], optional=True)
        for name in compiled_names()
    ]
    try:
        return list(
            cythonize(modules, compiler_directives=DIRECTIVES, build_dir="build/cython", quiet=True)
        )
    except Exception as error:  # a module Cython cannot translate: all stay pure
        return pure(f"Cython failed ({error})")


class BuildAccelerator(build_ext):
    """Compiles in parallel; a module that fails stays pure Python; records what it built."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1
        self.failed: list[str] = []

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as error:  # no compiler, no Python.h: this module runs from its .py
            self.failed.append(ext.name)
            reason = str(error).splitlines()[0][:160]
            say(f"{ext.name} did not compile ({type(error).__name__}: {reason})")

    def run(self) -> None:
        if not self.extensions:
            return
        super().run()
        record = {}
        for ext in self.extensions:
            target = Path(self.get_ext_fullpath(ext.name))
            if ext.name not in self.failed and target.is_file():
                name = ext.name.partition(".")[2]
                record[name] = hashlib.sha256(source(name).read_bytes()).hexdigest()
        package = Path(self.get_ext_fullpath("jobmon.accel")).parent
        (package / "_accel.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        if self.failed:
            say(f"{len(record)} modules compiled; {len(self.failed)} stay pure Python")
        else:
            say(f"{len(record)} modules compiled")


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildAccelerator})
