"""``--jobs N``: N worker processes of this same CLI on one study (and one GPU, under CUDA MPS).

The parent owns its workers: a signal it gets is passed on, and workers that do not stop within
``STOP_GRACE_S`` are killed (their trials then count as abandoned and go back in the queue); on
Linux each worker also dies with the parent, even one killed with ``kill -9``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import Any

import optuna
from optuna.trial import TrialState

from search.interrupts import SearchInterrupted, StopRequest
from search.mps import mps_daemon
from search.options import SearchOptions
from search.progress import LINES_ENV
from search.recovery import recover_trials
from search.train import resolve_device
from spaces.errors import UserError

WORKER_COMMAND = "_worker"  # hidden: what the parent starts
WORKER_OPTIONS_ENV = "MNIST_SEARCH_WORKER_OPTIONS"  # the worker's SearchOptions, whole, as JSON
STOP_GRACE_S = 20.0
WORKER_MEMORY = 1 << 30  # a worker's resident size, rounded up: Python, torch, MNIST, one model
WORKERS_PER_CORE = 4
PR_SET_PDEATHSIG = 1


def max_jobs() -> int:
    """How many workers this machine can hold: its cores (a few each) and its available memory."""
    cores = os.cpu_count() or 1
    try:
        meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo").read().splitlines())
        available = int(meminfo["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        available = cores * WORKER_MEMORY * WORKERS_PER_CORE
    return max(1, min(cores * WORKERS_PER_CORE, available // WORKER_MEMORY))


def check_jobs(jobs: int) -> None:
    bound = max_jobs()
    if jobs > bound:
        raise UserError(
            f"--jobs {jobs} is more than this machine can hold ({bound}: {WORKERS_PER_CORE} per core, "
            f"{WORKER_MEMORY >> 30} GiB of available memory each); pass --jobs {bound} or fewer"
        )


def run_jobs(options: SearchOptions, url: str, study: optuna.Study, defaults: Mapping[str, Any]) -> None:
    threads = max(1, (os.cpu_count() or 1) // options.jobs)  # never oversubscribe the cores
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MNIST_SEARCH_THREADS": str(threads), LINES_ENV: "1"}
    worker_options = replace(options, storage=url, study_name=study.study_name, jobs=1, mps=True, warm_start=())
    use_mps = options.mps and resolve_device(options.device).type == "cuda"
    stop = StopRequest()
    environment: AbstractContextManager[dict[str, str]] = mps_daemon() if use_mps else nullcontext({})
    with stop.handling(), environment as mps_env:
        if use_mps and not options.quiet:
            how = "under CUDA MPS" if mps_env else "without MPS (none found)"
            print(f"{options.jobs} workers share the GPU {how}")
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "search.cli", WORKER_COMMAND],
                env=env | mps_env | {WORKER_OPTIONS_ENV: replace(worker_options, worker_index=i + 1).to_json()},
                preexec_fn=_die_with_parent(os.getpid()),
            )
            for i in range(options.jobs)
        ]
        codes = _wait(processes, stop)
    if stop.signum is not None:
        pids = {str(p.pid) for p in processes}
        recover_trials(study, heartbeat=False, defaults=defaults)  # the trials of workers killed after the grace period
        requeued = [
            t.number
            for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if "retry_of" in t.user_attrs and _worker_pid(study, t.user_attrs["retry_of"]) in pids
        ]
        raise SearchInterrupted(stop.signum, requeued)
    if any(codes):
        raise UserError(f"{sum(c != 0 for c in codes)} of {options.jobs} workers failed; rerun to resume")


def _wait(processes: list[subprocess.Popen], stop: StopRequest) -> list[int]:
    """Wait for every worker; on a signal, pass SIGTERM on and kill what outlives the grace period."""
    deadline = None
    while any(p.poll() is None for p in processes):
        if stop.signum is not None and deadline is None:
            deadline = time.monotonic() + STOP_GRACE_S
            for p in processes:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
        if deadline is not None and time.monotonic() > deadline:
            for p in processes:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.1)
    return [p.returncode for p in processes]


def _worker_pid(study: optuna.Study, number: int) -> str:
    return study.trials[number].user_attrs.get("worker", "").rpartition(":")[2]


def _die_with_parent(parent: int):  # noqa: ANN202 - a preexec_fn
    """Linux: the kernel sends the worker SIGTERM when its parent dies, however it died."""

    def arrange() -> None:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):  # not Linux: workers outlive a killed parent
            return
        if os.getppid() != parent:  # the parent died before the call above
            os._exit(1)

    return arrange
