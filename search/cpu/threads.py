"""Threads for a CPU shared with other work: each epoch takes the cores other processes left free.

PyTorch's OpenMP threads spin while they wait for each other, so a 2-thread run beside another busy
process on 2 cores ran at about a quarter of its quiet speed, where one thread kept about 40%
(docs/benchmarks.md). Before each epoch, ``CoreShare`` reads how much CPU the rest of the machine
used during the last one (``/proc/stat`` over the CPUs this process may run on, less its own time)
and trains with the cores left free, never more than the thread count the run started with (the user's or ``--jobs``'s
choice), never fewer than one. A quiet machine keeps every thread. Linux only; elsewhere, and on
other devices, nothing changes.
"""

from __future__ import annotations

import os
import time

import torch

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
MIN_WINDOW_S = 0.5


class CoreShare:
    """Entered for one training run: the thread count it finds is that run's budget, and is
    restored on the way out, however the run ends (a pruned trial raises)."""

    def __init__(self) -> None:
        self.budget = torch.get_num_threads()  # the user's OMP_NUM_THREADS, or what --jobs gave
        self.cores = len(usable_cpus()) or 1
        self._last: tuple[float, float, float] | None = None

    def __enter__(self) -> CoreShare:
        self.budget = torch.get_num_threads()
        self._last = _sample()
        return self

    def __exit__(self, *exc: object) -> None:
        if torch.get_num_threads() != self.budget:
            torch.set_num_threads(self.budget)

    def before_epoch(self) -> None:
        """Set this epoch's thread count from what the machine did since the last call."""
        now = _sample()
        if now is None or self._last is None or self.budget == 1:
            self._last = now
            return
        (wall0, busy0, own0), (wall1, busy1, own1) = self._last, now
        wall = wall1 - wall0
        if wall < MIN_WINDOW_S:  # too short to tell (the first epoch): keep counting from the last sample
            return
        self._last = now
        others = max(0.0, (busy1 - busy0) - (own1 - own0)) / wall  # cores' worth of other processes' work
        threads = max(1, min(self.budget, round(self.cores - others)))
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)


class NoShare:
    """Devices whose threads are not the CPU's."""

    def __enter__(self) -> NoShare:
        return self

    def __exit__(self, *exc: object) -> None:
        return

    def before_epoch(self) -> None:
        return


def usable_cpus() -> set[int]:
    """The CPUs this process may run on (its affinity: a pinned container's, not the host's)."""
    if hasattr(os, "sched_getaffinity"):
        return os.sched_getaffinity(0)
    return set(range(os.cpu_count() or 1))


def _sample() -> tuple[float, float, float] | None:
    """(wall seconds, CPU seconds the CPUs this process may use spent busy, CPU seconds this
    process spent): other processes' work on CPUs it cannot use does not count. Where /proc/stat
    numbers CPUs otherwise than the affinity does (LXCFS renumbers a container's from 0), the
    whole machine's line is read instead."""
    usable = usable_cpus()
    whole, per_cpu = 0, {}
    try:
        with open("/proc/stat") as stat:
            for line in stat:
                name, *values = line.split()
                if name.startswith("cpu") and (name == "cpu" or name[3:].isdigit()):
                    fields = [int(v) for v in values]
                    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and iowait
                    busy = sum(fields[:8]) - idle  # user..steal; guest time is counted in user
                    if name == "cpu":
                        whole = busy
                    else:
                        per_cpu[int(name[3:])] = busy
    except (OSError, ValueError, IndexError):
        return None
    busy_ticks = sum(per_cpu[c] for c in usable) if usable <= per_cpu.keys() else whole
    times = os.times()
    return time.monotonic(), busy_ticks / CLOCK_TICKS, times.user + times.system
