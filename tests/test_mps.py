"""--jobs on a GPU: the private CUDA MPS daemon is started for the workers and always stopped.

A stand-in ``nvidia-cuda-mps-control`` records how it is called, so this runs without a GPU.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from search import mps

FAKE_CONTROL = """#!/bin/sh
# -d: "start" a daemon (its control pipe appears); no argument: read a command from stdin.
if [ "$1" = "-d" ]; then
    echo "start $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY" >> "$MPS_CALLS"
    touch "$CUDA_MPS_PIPE_DIRECTORY/control"
else
    read command
    echo "$command $CUDA_MPS_PIPE_DIRECTORY" >> "$MPS_CALLS"
fi
"""


@pytest.fixture
def fake_control(tmp_path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    control = bin_dir / mps.CONTROL
    control.write_text(FAKE_CONTROL)
    control.chmod(control.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("MPS_CALLS", str(calls))
    monkeypatch.delenv(mps.PIPE_ENV, raising=False)
    monkeypatch.setattr(mps, "DEFAULT_PIPE_DIR", tmp_path / "no-daemon-here")
    monkeypatch.setattr(mps, "client_connects", lambda env: (Path(env[mps.PIPE_ENV]) / "control").exists())
    return calls


def test_a_private_daemon_serves_the_block_and_is_quit_after(fake_control):
    with mps.mps_daemon() as env:
        pipe = Path(env[mps.PIPE_ENV])
        assert (pipe / "control").exists() and Path(env[mps.LOG_ENV]).is_dir()
        assert fake_control.read_text().split() == ["start", str(pipe), env[mps.LOG_ENV]]
    assert fake_control.read_text().splitlines()[-1] == f"quit {pipe}"
    assert not pipe.exists()  # its folders are removed too


def test_the_daemon_is_quit_when_the_workers_fail(fake_control):
    with pytest.raises(KeyboardInterrupt), mps.mps_daemon() as env:
        raise KeyboardInterrupt
    assert fake_control.read_text().splitlines()[-1] == f"quit {env[mps.PIPE_ENV]}"


def test_a_running_daemon_is_reused_and_left_running(fake_control, tmp_path, monkeypatch):
    pipe = tmp_path / "site-mps"
    pipe.mkdir()
    (pipe / "control").touch()
    monkeypatch.setenv(mps.PIPE_ENV, str(pipe))
    with mps.mps_daemon() as env:
        assert env == {mps.PIPE_ENV: str(pipe)}
    assert not fake_control.exists()  # neither started nor quit


def test_without_the_control_binary_workers_run_without_mps(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(mps.PIPE_ENV, raising=False)
    monkeypatch.setattr(mps, "DEFAULT_PIPE_DIR", tmp_path / "no-daemon-here")
    with mps.mps_daemon() as env:
        assert env == {}


def test_a_daemon_that_no_client_can_use_is_quit_and_workers_run_without_it(fake_control, monkeypatch):
    monkeypatch.setattr(mps, "client_connects", lambda env: False)  # e.g. MPS not permitted here
    with mps.mps_daemon() as env:
        assert env == {}
    assert fake_control.read_text().splitlines()[-1].startswith("quit ")


def test_the_client_probe_fails_without_a_usable_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert not mps.client_connects({})


def test_the_daemon_is_quit_even_when_its_parent_is_killed(fake_control, tmp_path):
    holder = (
        "from pathlib import Path; from search import mps\n"
        "mps.client_connects = lambda env: True\n"
        "with mps.mps_daemon() as env:\n"
        "    print(env[mps.PIPE_ENV], flush=True)\n"
        "    import time; time.sleep(60)\n"
    )
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True, env=env)
    pipe = child.stdout.readline().strip()
    assert pipe and fake_control.read_text().startswith("start ")
    child.send_signal(signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 20
    while f"quit {pipe}" not in fake_control.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert fake_control.read_text().splitlines()[-1] == f"quit {pipe}"
    while Path(pipe).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(pipe).exists()
