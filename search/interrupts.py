"""Ctrl-C and SIGTERM: stop the trial in training at once, but never inside Optuna's bookkeeping.

A KeyboardInterrupt raised anywhere can land inside Optuna's tell step (seen: an UnboundLocalError
traceback) or while it joins its heartbeat thread (seen: a hang with the trial left RUNNING). So
the handler only records the signal, and raises only while our own training code runs.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SearchInterrupted(KeyboardInterrupt):
    """The search stopped on a signal; ``requeued`` are the trials put back for the next run."""

    def __init__(self, signum: int, requeued: list[int]) -> None:
        super().__init__(signal_label(signum))
        self.signum, self.requeued = signum, requeued

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM

    def message(self) -> str:
        trials = ", ".join(map(str, self.requeued))
        what = f"trial {trials} was re-queued with its params" if len(self.requeued) == 1 else (
            f"trials {trials} were re-queued with their params" if self.requeued else "no trial was in flight"
        )  # fmt: skip
        return f"interrupted ({signal_label(self.signum)}): {what}; run the same command again to resume"


class Stopped(KeyboardInterrupt):
    """A stop signal, raised like Ctrl-C's KeyboardInterrupt so that every command unwinds the same way."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signal_label(signum))
        self.signum = signum


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """For the duration, SIGTERM raises ``Stopped`` (main thread only), so temporary files are removed
    on the way out and the command can say in one line that it stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(_signum: int, _frame: FrameType | None) -> None:
        raise Stopped(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def signal_number(stop: KeyboardInterrupt) -> int:
    return int(getattr(stop, "signum", signal.SIGINT))


def signal_label(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class StopRequest:
    """Remembers the first stop signal; raises KeyboardInterrupt only inside ``interruptible()``."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._raise_now = False

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def request(self, signum: int) -> None:
        self.signum = self.signum or signum

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.request(signum)
        if self._raise_now:
            self._raise_now = False
            raise KeyboardInterrupt

    def _on_signal_raising(self, signum: int, _frame: FrameType | None) -> None:
        self.request(signum)
        raise KeyboardInterrupt

    @contextmanager
    def handling(self, raise_at_once: bool = False) -> Iterator[StopRequest]:
        """Install the handlers for the duration (main thread only: elsewhere signals stay as they are).
        ``raise_at_once``: every signal also raises KeyboardInterrupt where it lands (a server loop)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        handler = self._on_signal_raising if raise_at_once else self._on_signal
        previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
        try:
            yield self
        finally:
            for s, earlier in previous.items():
                signal.signal(s, earlier)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """A signal here raises KeyboardInterrupt at once (as does one that already came)."""
        if self.requested:
            raise KeyboardInterrupt
        self._raise_now = True
        try:
            yield
        finally:
            self._raise_now = False

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """Inside ``interruptible()``: a storage call here finishes; a signal that came raises after it."""
        was, self._raise_now = self._raise_now, False
        try:
            yield
        finally:
            self._raise_now = was
        if was and self.requested:
            raise KeyboardInterrupt
