"""Process-wide settings for CPU training, applied once by the entry points (a search's workers,
a retrain, the CLI), never by the training loop: they change the whole process, not one run."""

from __future__ import annotations

import os

import torch

from search.cpu.allocator import keep_pages_mapped

# oneDNN keeps a compiled primitive per layer shape; a search makes new shapes every trial, and at
# its default capacity (1024) the cache held ~600 MB more after 1,000 bf16 matmul shapes on the dev
# CPU. 128 holds a trial's own shapes many times over (docs/benchmarks.md).
ONEDNN_CACHE = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "128")


def configure_process(device: torch.device) -> None:
    """Before the first model runs in this process, for training on ``device``: oneDNN's cache
    capacity (read at its first use; a value set by hand wins) and glibc's heap kept mapped
    (``keep_pages_mapped``). Only the CPU uses either; calling it again does nothing more."""
    if device.type != "cpu":
        return
    os.environ.setdefault(*ONEDNN_CACHE)
    keep_pages_mapped()
