"""CUDA MPS for ``--jobs N`` on one GPU.

A small network's training step leaves most of an H100's SMs idle, but kernels of different
processes never run side by side: the GPU time-slices between their contexts. Under NVIDIA's
Multi-Process Service the workers' kernels share the GPU at once. When no MPS daemon is running
and the driver ships ``nvidia-cuda-mps-control``, the parent starts a private daemon (its own pipe
and log folders, default compute mode untouched) for the workers and stops it when they finish,
or, through a watchdog, when the parent itself is killed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CONTROL = "nvidia-cuda-mps-control"
PIPE_ENV = "CUDA_MPS_PIPE_DIRECTORY"
LOG_ENV = "CUDA_MPS_LOG_DIRECTORY"
DEFAULT_PIPE_DIR = Path("/tmp/nvidia-mps")  # where clients look when PIPE_ENV is unset


def running_daemon_env() -> dict[str, str] | None:
    """The environment that reaches an MPS daemon that is already running, if there is one."""
    pipe_dir = Path(os.environ.get(PIPE_ENV, DEFAULT_PIPE_DIR))
    return {PIPE_ENV: str(pipe_dir)} if (pipe_dir / "control").exists() else None


@contextmanager
def mps_daemon() -> Iterator[dict[str, str]]:
    """Yield the environment variables that put CUDA processes under MPS ({} when there is none).

    An existing daemon is reused and left running; a daemon started here is quit on exit.
    """
    existing = running_daemon_env()
    control = shutil.which(CONTROL)
    if existing is not None or control is None:
        yield existing or {}
        return
    root = Path(tempfile.mkdtemp(prefix="mnist-search-mps-"))
    env = {PIPE_ENV: str(root / "pipe"), LOG_ENV: str(root / "log")}
    for folder in env.values():
        Path(folder).mkdir()
    started = subprocess.run([control, "-d"], env=os.environ | env, capture_output=True).returncode == 0
    watchdog = _watchdog(control, env, root) if started else None
    try:
        # The daemon starts its server only when the first client connects; where MPS is not
        # permitted (some containers, exclusive compute modes) that client fails, and so would
        # every worker. One throwaway client finds out first.
        yield env if started and client_connects(env) else {}
    finally:
        if watchdog is not None:
            watchdog.kill()
            watchdog.wait()
        if started:
            subprocess.run([control], input=b"quit\n", env=os.environ | env, capture_output=True, timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def _watchdog(control: str, env: dict[str, str], root: Path) -> subprocess.Popen:
    """A shell that quits the daemon if this process dies without doing so (SIGKILL, OOM).

    In its own session, so the Ctrl-C or kill that ends the process group leaves it to clean up.
    """
    script = f'while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; echo quit | "$0"; rm -rf "$1"'
    return subprocess.Popen(
        ["sh", "-c", script, control, str(root)],
        env=os.environ | env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def client_connects(env: dict[str, str], timeout_s: float = 120) -> bool:
    """Whether a CUDA process started with ``env`` gets a working context through the daemon."""
    probe = "import torch; torch.zeros(1, device='cuda'); torch.cuda.synchronize()"
    try:
        run = subprocess.run(
            [sys.executable, "-c", probe], env=os.environ | env, capture_output=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return False
    return run.returncode == 0
