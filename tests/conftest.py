"""Shared fixtures: real MNIST from $MNIST_SEARCH_DATA (CI points it at ../shared/data), small subsets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from search.data import DATA_ENV, Split, Tensors, load_mnist, split_train_val

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get(DATA_ENV) or REPO.parent / "shared" / "data")
os.environ.setdefault(DATA_ENV, str(DATA_DIR))  # in-process calls that take the data dir from the environment


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "MNIST" / "raw").is_dir():
        pytest.fail(f"MNIST not found under {DATA_DIR}; set ${DATA_ENV}")
    return DATA_DIR


@pytest.fixture(scope="session")
def mnist(data_dir: Path):
    return load_mnist(data_dir, download=False)


@pytest.fixture(scope="session")
def small_split(mnist) -> tuple[Tensors, Tensors]:
    """2,000 training and 1,000 validation images, the same split the driver would carve."""
    return split_train_val(mnist.train, Split(val_size=1000, train_subset=2000))


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``mnist-search`` as a user would, in a subprocess."""
    env = os.environ | {DATA_ENV: str(DATA_DIR), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "search.cli", *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def small_search(tmp_path: Path, data_dir: Path, **overrides):
    """SearchOptions for a tiny CPU study in ``tmp_path``: 1 epoch, 1,000 + 1,000 images."""
    from search import SearchOptions

    base = dict(
        space="ffn", trials=3, storage=f"sqlite:///{tmp_path}/s.db", max_epochs=1, train_subset=1000,
        val_size=1000, data_dir=str(data_dir), download=False, device="cpu", quiet=True, artifacts=None,
    )  # fmt: skip
    return SearchOptions(**(base | overrides))
