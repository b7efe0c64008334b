"""mnist-search: hyperparameter and architecture search over MNIST model families.

The public Python API; the ``mnist-search`` CLI is a thin layer over it. The training function is
``search.train.train``: ``search.train`` is the module; a ``DeviceProfile`` says how it trains on a
device. The layers below the engine (``spaces``, with ``UserError`` and ``TrainSettings``) import
nothing from here.
"""

from __future__ import annotations

import search.startup  # noqa: F401 - first: a signal while the CLI imports the engine ends it in one line
from search.algorithms import PRUNERS, SAMPLERS, make_pruner, make_sampler
from search.data import Mnist, Split, Tensors, load_mnist, resolve_data_dir, split_train_val
from search.driver import open_study, run_search
from search.options import SearchOptions
from search.profile import DeviceProfile
from search.results import format_summary, ranked_trials, trials_table
from search.storage import Heartbeat, open_storage
from search.train import Diverged, TrainResult, accuracy, count_params, predict, resolve_device
from spaces.errors import UserError
from spaces.training import TrainSettings

__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "DeviceProfile",
    "Diverged",
    "Heartbeat",
    "Mnist",
    "SearchOptions",
    "Split",
    "Tensors",
    "TrainResult",
    "TrainSettings",
    "UserError",
    "accuracy",
    "count_params",
    "format_summary",
    "load_mnist",
    "make_pruner",
    "make_sampler",
    "open_storage",
    "open_study",
    "predict",
    "ranked_trials",
    "resolve_data_dir",
    "resolve_device",
    "run_search",
    "split_train_val",
    "trials_table",
]
