"""`mnist-search dashboard` in a real headless Chromium (Debian's `chromium`, installed by .ci/run)."""

from __future__ import annotations

import html
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from search import SearchOptions, run_search
from tests.conftest import REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Loopback only: no background networking, no component updates, a fresh profile.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=15000",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rendered_text(url: str, profile) -> str:
    dom = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    dom = re.sub(r"<(style|script)\b.*?</\1>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (.ci/run installs Debian's chromium)")
def test_dashboard_renders_the_study_and_its_trials_in_chromium(tmp_path, data_dir):
    storage = f"sqlite:///{tmp_path}/dash.db"
    run_search(
        SearchOptions(
            space="ffn", trials=3, storage=storage, study_name="dash-check", max_epochs=1, train_subset=500,
            val_size=500, data_dir=str(data_dir), download=False, device="cpu", quiet=True,
            artifacts=str(tmp_path / "artifacts"),
        )
    )  # fmt: skip
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "search.cli", "dashboard", "--storage", storage, "--port", str(port),
         "--artifacts", str(tmp_path / "artifacts")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2).read()
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "dashboard did not come up"
                time.sleep(0.5)
        text = _rendered_text(f"http://127.0.0.1:{port}/dashboard/studies/1/trials", tmp_path / "profile")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "dash-check" in text
    assert "3 Trials" in text
    assert "trial0-learning-curve.csv" in text  # the per-trial artifact
