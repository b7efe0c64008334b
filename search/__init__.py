"""mnist-search: hyperparameter and architecture search over MNIST model families.

The public Python API; the ``mnist-search`` CLI is a thin layer over it. Names load on first use,
so ``import spaces`` (which needs ``search.errors`` and ``search.train``) works first in a fresh
interpreter. The training function is ``search.train.train``: ``search.train`` is the module.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "PRUNERS": "algorithms",
    "SAMPLERS": "algorithms",
    "make_pruner": "algorithms",
    "make_sampler": "algorithms",
    "Mnist": "data",
    "Split": "data",
    "Tensors": "data",
    "load_mnist": "data",
    "resolve_data_dir": "data",
    "split_train_val": "data",
    "SearchOptions": "options",
    "open_study": "driver",
    "run_search": "driver",
    "UserError": "errors",
    "format_summary": "results",
    "ranked_trials": "results",
    "trials_table": "results",
    "Heartbeat": "storage",
    "open_storage": "storage",
    "Diverged": "train",
    "TrainResult": "train",
    "TrainSettings": "train",
    "accuracy": "train",
    "count_params": "train",
    "predict": "train",
    "resolve_device": "train",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'search' has no attribute {name!r}")
    return getattr(importlib.import_module(f"search.{_HOME[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
