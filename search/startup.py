"""The command line's first instruction. Python spends a second or two importing torch before any
command's code runs; a Ctrl-C or SIGTERM then would print a KeyboardInterrupt traceback from deep
inside that import, or end the process without a word. While the CLI starts (the ``mnist-search``
script, or ``python -m search.cli``), such a signal ends it in one line instead: nothing has been
opened or written yet. ``search.cli.main`` hands the signals back (``release``) before any work.
Imported as a library, this module changes nothing.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _starting_the_cli() -> bool:
    name = os.path.basename(sys.argv[0]) if sys.argv else ""
    if name == "mnist-search":
        return True
    # "-m" is Python's own argv[0] while it imports the packages of any module it was asked to run:
    # only ``python -m search.cli`` is the CLI (another program's module may import search).
    command = getattr(sys, "orig_argv", [])
    pairs = zip(command, command[1:], strict=False)
    return name == "-m" and ("-msearch.cli" in command or any(a == "-m" and b == "search.cli" for a, b in pairs))


def _stop(signum: int, _frame: FrameType | None) -> None:
    label = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    os.write(2, f"\nmnist-search: interrupted ({label}) while starting; nothing was opened or written\n".encode())
    os._exit(128 + signum)


def release() -> None:
    """Python's own handling again: Ctrl-C raises KeyboardInterrupt, SIGTERM ends the process."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


if _starting_the_cli() and threading.current_thread() is threading.main_thread():
    for _signum in STOP_SIGNALS:
        signal.signal(_signum, _stop)
