"""What a flag's text becomes: conversions for argparse (and ``JOBMON_*``
variables) that refuse bad values with an error saying what was expected."""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def finite_number(text: str, zero_allowed: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value >= 0 if zero_allowed else value > 0) or not value < math.inf:
        bound = ">= 0" if zero_allowed else "> 0"
        raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}")
    return value


def non_negative_number(text: str) -> float:
    return finite_number(text, zero_allowed=True)


def positive_number(text: str) -> float:
    return finite_number(text, zero_allowed=False)


def named_path(text: str) -> tuple[str, str]:
    name, _, path = text.partition("=")
    if not name or not path.startswith("/"):
        raise argparse.ArgumentTypeError(f"expected NAME=/absolute/path/to/program, got {text!r}")
    return name, path


def cost_model(text: str) -> dict[str, float]:
    from .analytics import CostModel

    known = set(vars(CostModel()))
    model: dict[str, float] = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if name not in known or not 0 <= number < math.inf:
            raise argparse.ArgumentTypeError(
                f"expected FIELD=NUMBER (>= 0) with FIELD one of {', '.join(sorted(known))}, "
                f"got {item!r}"
            )
        model[name] = number
    return model


def addresses(text: str) -> list[tuple[str, int]]:
    out = []
    for item in filter(None, text.split(",")):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise argparse.ArgumentTypeError(f"expected HOST:PORT[,HOST:PORT...], got {item!r}")
        out.append((host, int(port)))
    return out


def nodes(host: str, port: int) -> list[tuple[str, int]]:
    """``--host``: one host, or several ``HOST[:PORT]`` (``[v6]:PORT``), comma-separated;
    a host without a port takes ``--port``."""
    out = []
    for item in filter(None, (part.strip() for part in host.split(","))):
        if item.startswith("[") and "]" in item:  # [::1]:7070
            name, _, rest = item[1:].partition("]")
            out.append((name, int(rest[1:]) if rest[1:].isdigit() else port))
        elif item.count(":") == 1 and item.rpartition(":")[2].isdigit():
            name, _, given = item.rpartition(":")
            out.append((name, int(given)))
        else:
            out.append((item, port))
    return out or [("127.0.0.1", port)]


def listen_host(text: str) -> str:
    if "," in text or (text.count(":") == 1):
        raise argparse.ArgumentTypeError(
            f"expected one address to listen on (the port is --port), got {text!r}"
        )
    return text
