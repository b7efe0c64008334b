"""LeNet-5 as an mnist-search space: the worked example of docs/spaces.md, outside the package.

    mnist-search --space examples.lenet5:SPACE --trials 30      # from the repository root

LeCun et al. (1998): 5×5 convolutions of 6 and 16 maps with 2×2 subsampling, then 120 and 84
units, 0.95% test error (99.05% accuracy). The baseline here is that network with ReLU and max
pooling, as it is usually trained today; the search moves the widths, activation, pooling,
dropout and the training recipe.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from torch import nn

from spaces.base import Budget, Config, Space, suggest_training

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def suggest(trial: optuna.Trial, budget: Budget) -> Config:
    config: Config = {
        "conv1": trial.suggest_int("conv1", 4, 16),
        "conv2": trial.suggest_int("conv2", 8, 32),
        "fc1": trial.suggest_int("fc1", 32, 256, log=True),
        "fc2": trial.suggest_int("fc2", 16, 128, log=True),
        "activation": trial.suggest_categorical("activation", list(ACTIVATIONS)),
        "pool": trial.suggest_categorical("pool", list(POOLS)),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
    }
    return config | suggest_training(
        trial,
        budget,
        optimizers=("adam", "sgd"),
        lr=(1e-4, 1e-1),
        batch_sizes=(64, 128, 256),
        schedules=("none", "onecycle"),
        min_epochs=3,
    )


def build(config: Mapping[str, Any]) -> nn.Module:
    act, pool = ACTIVATIONS[config["activation"]], POOLS[config["pool"]]
    c1, c2 = config["conv1"], config["conv2"]
    return nn.Sequential(
        nn.Conv2d(1, c1, 5, padding=2), act(), pool(2),  # 28 → 14
        nn.Conv2d(c1, c2, 5), act(), pool(2),  # 14 → 10 → 5
        nn.Flatten(),
        nn.Linear(c2 * 5 * 5, config["fc1"]), act(), nn.Dropout(config["dropout"]),
        nn.Linear(config["fc1"], config["fc2"]), act(),
        nn.Linear(config["fc2"], 10),
    )  # fmt: skip


LENET5: Config = {
    "conv1": 6, "conv2": 16, "fc1": 120, "fc2": 84, "activation": "relu", "pool": "max", "dropout": 0.0,
    "optimizer": "adam", "lr": 1e-3, "batch_size": 128, "epochs": 10, "schedule": "none",
}  # fmt: skip

SPACE = Space(
    name="lenet5",
    description="LeNet-5's widths, activation and pooling (LeCun et al., 1998)",
    suggest=suggest,
    build=build,
    baselines=(LENET5,),
    model_keys=frozenset({"conv1", "conv2", "fc1", "fc2", "activation", "pool", "dropout"}),
    max_epochs=20,
    target=0.9905,
    target_reason="LeCun et al. (1998) report 0.95% test error for LeNet-5",
)
