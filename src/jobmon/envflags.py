"""Flags that default from the environment (``JOBMON_<FLAG>``), converted lazily.

A flag's environment value is read when the parser is built but converted only
once parsing has chosen the subcommand: argparse leaves a ``FromEnv`` default
alone (it is not a ``str``), and ``resolve`` converts those of the subcommand
being run, through the flag's own ``type`` and ``choices``. So a bad
``JOBMON_LEASE_MS`` cannot stop ``jobmon run``, and a bad value of a flag in use
is one line that names the variable and what is expected, never a traceback.
An empty variable counts as unset. Each flag's help says its variable and its
default.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import Any

PREFIX = "JOBMON_"
ON = ("1", "true", "yes", "on")
OFF = ("", "0", "false", "no", "off")
Convert = Callable[[str], Any]


def truth(text: str) -> bool:
    """A switch's value, in any case: 1/true/yes/on or 0/false/no/off ("" is off)."""
    word = text.strip().lower()
    if word in ON:
        return True
    if word in OFF:
        return False
    raise argparse.ArgumentTypeError(
        f"expected on ({', '.join(ON)}) or off ({', '.join(OFF[1:])}), in any case, got {text!r}"
    )


def env_truth(name: str) -> bool:
    """``JOBMON_<name>`` as a switch, for code without a command line (the client)."""
    text = os.environ.get(PREFIX + name, "")
    try:
        return truth(text)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(_worded(FromEnv(PREFIX + name, text, truth, False), str(exc))) from None


class FromEnv:
    """A default taken from the environment, not yet converted."""

    __slots__ = ("variable", "text", "convert", "fallback", "whole")

    def __init__(
        self, variable: str, text: str, convert: Convert, fallback: Any, whole: str | None = None
    ) -> None:
        self.variable = variable
        self.text = text  # the value, or one of the several the variable holds
        self.convert = convert
        self.fallback = fallback  # what a lenient subcommand uses instead of a bad value
        self.whole = text if whole is None else whole  # the variable's value

    def __repr__(self) -> str:
        return f"{self.variable}={self.whole}"


class EnvError(Exception):
    """Bad environment values for the subcommand being run (one line each)."""


def variable_of(flag: str) -> str:
    return PREFIX + flag.lstrip("-").upper().replace("-", "_")


def add(
    parser: argparse.ArgumentParser,
    flag: str,
    *,
    default: Any = None,
    type: Convert | None = None,  # noqa: A002 - argparse's own name
    choices: Sequence[str] | None = None,
    action: str | None = None,
    split: str | None = None,
    help: str = "",  # noqa: A002
    shown: str | None = None,
    **options: Any,
) -> argparse.Action:
    """``parser.add_argument(flag, ...)`` whose default comes from ``JOBMON_<FLAG>``.

    ``action="store_true"``: the variable is a switch (``truth``). ``"append"``:
    the variable holds several values separated by ``split`` (None: whitespace).
    ``shown``: the default as the help says it, when ``str(default)`` is not it.
    """
    variable = variable_of(flag)
    text = os.environ.get(variable, "")
    convert = _checked(type or str, choices)
    value: Any = default
    if action == "store_true":
        value = bool(default)
        if text:
            value = FromEnv(variable, text, truth, bool(default))
        help_default = "on" if default else "off"
        options["action"] = action
    elif action == "append":
        value = list(default or [])
        if text.strip():
            items = text.split(split) if split else text.split()
            value = [FromEnv(variable, item.strip(), convert, None, text) for item in items if item]
        help_default = shown or "none"
        options.update(action=action, type=type)
    else:
        if text:
            value = FromEnv(variable, text, convert, default)
        help_default = shown or ("none" if default is None else str(default))
        options["type"] = type
        if choices is not None:
            options["choices"] = choices
    wording = f"env {variable}"
    if action == "append":
        wording += ", comma-separated" if split == "," else ", space-separated"
    wording += f"; default {help_default}"
    full = f"{help} ({wording})" if help else f"({wording})"
    return parser.add_argument(flag, default=value, help=full.replace("%", "%%"), **options)


def resolve(namespace: argparse.Namespace, *, lenient: bool = False) -> list[str]:
    """Convert the environment's defaults left in ``namespace`` (those of the
    subcommand parsed). A bad one raises ``EnvError``; with ``lenient``, it is
    replaced by the flag's own default and its problem returned instead."""
    problems: list[str] = []

    def convert(value: FromEnv) -> Any:
        try:
            return value.convert(value.text)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            problem = _worded(value, str(exc))
            if lenient:
                used = value.fallback
                shown = ("on" if used else "off") if isinstance(used, bool) else used
                problem += "; ignored" if used is None else f"; using the default, {shown}"
            problems.append(problem)
            return value.fallback

    for dest, value in list(vars(namespace).items()):
        if isinstance(value, FromEnv):
            setattr(namespace, dest, convert(value))
        elif isinstance(value, list) and any(isinstance(item, FromEnv) for item in value):
            converted = [convert(item) if isinstance(item, FromEnv) else item for item in value]
            setattr(namespace, dest, [item for item in converted if item is not None])
    if problems and not lenient:
        raise EnvError("\n".join(problems))
    return problems


def _checked(convert: Convert, choices: Sequence[str] | None) -> Convert:
    """``convert``, then the choices argparse checks only on the command line."""
    if choices is None:
        return convert

    def within(text: str) -> Any:
        value = convert(text)
        if value not in choices:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(choices)}")
        return value

    return within


def _worded(value: FromEnv, why: str) -> str:
    # The value is said once, up front: drop a converter's ", got '...'" about it
    # (kept when it names one of several values).
    if value.text == value.whole:
        why = why.removesuffix(f", got {value.text!r}")
    return f"{value!r}: {why}"
