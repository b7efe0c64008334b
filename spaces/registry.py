"""Finding a space by what the user typed: a built-in family, a space another package registers
under the ``mnist_search.spaces`` entry-point group, or ``package.module:NAME``.

A space named by data (a checkpoint, an exported config, a study's record) goes through
``recorded_space``: data never names code to import, so a ``package.module:NAME`` there is used
only when the user typed the same spec as ``--space``."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points

from spaces import cnn, fcn, ffn, gap_cnn
from spaces.base import Space
from spaces.errors import UserError

ENTRY_POINT_GROUP = "mnist_search.spaces"
IMPORT_LIMIT_S = 60.0  # a module that sleeps or waits at import time must not hang the command
BUILT_IN: dict[str, Space] = {module.SPACE.name: module.SPACE for module in (ffn, fcn, cnn, gap_cnn)}


def installed() -> dict[str, str]:
    """Spaces other packages register: name -> ``module:attr``."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in BUILT_IN}


def known_names() -> list[str]:
    return [*BUILT_IN, *installed()]


def get_space(spec: str) -> Space:
    """The space named ``spec``: built in, installed, or ``package.module:NAME`` importable from here."""
    if spec in BUILT_IN:
        return BUILT_IN[spec]
    plugins = installed()
    if spec in plugins:
        return _load(plugins[spec], f"the {ENTRY_POINT_GROUP} entry point {spec!r}")
    if ":" in spec:
        return _load(spec, spec)
    raise UserError(
        f"unknown space {spec!r}; choose one of: {', '.join(known_names())}, or name your own as package.module:NAME"
    )


def recorded_space(spec: object, where: str, trusted: str | None = None) -> Space:
    """The space a file or study records, as built in or installed; a plugin module only if ``trusted``
    (the user's ``--space``) is the same spec, since importing a module runs its code."""
    if not isinstance(spec, str) or not spec:
        raise UserError(f"{where} names no space (its 'space' is {type(spec).__name__}, not a name)")
    shown = repr(spec[:120])  # repr: a hostile name stays one line
    if trusted is not None and trusted != spec:
        raise UserError(f"{where} was made with space {shown}, not --space {trusted!r}; pass --space {shown}")
    if spec in BUILT_IN or spec in installed() or spec == trusted or ":" not in spec:
        return get_space(spec)  # a plain name that is none of these: get_space's "unknown space"
    raise UserError(
        f"{where} names space {shown}, which is neither built in nor installed, and a file may not choose code to "
        f"import; if you trust that module, pass --space {shown}"
    )


def source(spec: str) -> str:
    """Where the space came from, for exports: built in, or the module and file that define it."""
    if spec in BUILT_IN:
        return f"built in (spaces.{spec})"
    module_name = (installed().get(spec) or spec).split(":", 1)[0]
    module = sys.modules.get(module_name)
    return f"{module_name} ({getattr(module, '__file__', 'no file')})"


class _ImportTooSlow(Exception):
    pass


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise ``_ImportTooSlow`` in the main thread after ``seconds`` (elsewhere: no limit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _expire(_signum: int, _frame: object) -> None:
        raise _ImportTooSlow

    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _load(target: str, label: str) -> Space:
    module_name, _, attr = target.partition(":")
    if os.getcwd() not in sys.path:  # as `python -m` would: a space module beside the user's work
        sys.path.append(os.getcwd())
    try:
        with _time_limit(IMPORT_LIMIT_S):
            module = importlib.import_module(module_name)
    except ImportError as error:
        raise UserError(f"cannot import the module of space {label}: {error}; check the name and PYTHONPATH") from None
    except _ImportTooSlow:
        raise UserError(
            f"importing space {label} took over {IMPORT_LIMIT_S:g} s; a space module should only define its space"
        ) from None
    except SystemExit as stop:
        raise UserError(
            f"importing space {label} called sys.exit({stop.code!r}); a space module must not exit"
        ) from None
    except Exception as error:  # noqa: BLE001 - the user's module failed while importing
        raise UserError(f"importing space {label} failed: {type(error).__name__}: {error}") from None
    space = getattr(module, attr, None) if attr else None
    if space is None:
        raise UserError(f"module {module_name!r} defines no {attr or 'NAME'!r}; write the space as {module_name}:NAME")
    if not isinstance(space, Space):
        raise UserError(f"{label} is a {type(space).__name__}, not a spaces.base.Space; see docs/spaces.md")
    return space
