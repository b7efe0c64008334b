"""How a field of an options dataclass appears on the command line: one declaration per field
(``flag(...)`` in the field's metadata), and the range-checked value types the flags use."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

MAX_PORT = 65535
MAX_SEED = 2**32 - 1  # numpy's samplers take 32-bit seeds


@dataclass(frozen=True)
class Flag:
    """One field's flag. ``to_option`` turns the parsed value into the field's; ``to_flag`` the field's
    default into the flag's (``--heartbeat 10`` for ``Heartbeat(10, 30)``)."""

    names: tuple[str, ...]
    help: str
    type: Callable[[str], Any] | None = None
    choices: Sequence[Any] | None = None
    nargs: str | None = None
    action: str | None = None  # "store_true" / "store_false" for switches
    metavar: str | None = None
    required: bool = False
    to_option: Callable[[Any], Any] | None = None
    to_flag: Callable[[Any], Any] | None = None


def flag(*names: str, help: str, **kwargs: Any) -> dict[str, Flag]:
    """Field metadata: ``field(default=..., metadata=flag("--trials", help=..., type=positive_int))``."""
    return {"flag": Flag(names, help, **kwargs)}


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def positive_int(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive, finite number, got {text}")
    return value


def seed(text: str) -> int:
    value = _whole_number(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"seeds run from 0 to {MAX_SEED} (2**32 - 1), got {value}")
    return value


def port(text: str) -> int:
    value = positive_int(text)
    if value > MAX_PORT:
        raise argparse.ArgumentTypeError(f"ports run from 1 to {MAX_PORT}, got {value}")
    return value
