"""cnn: plain convolutional networks of seeds 002 and 003, searched over blocks, filters, kernel,
max-pool placement and the dense head.

Seed 002: conv 32 → pool → conv 64 → pool → Linear(1600, 10); Adam lr 1e-4, batch 512, 30 epochs;
34,826 parameters, 98.36% test accuracy after 30 epochs.
Seed 003 (``--nf 32``), as we read its text: 3×3 convs of 32, 64, 64 filters with max-pool after
the first two, so the flattened features are 64×3×3 = 576, then a dense layer of 64 and the 10-way
head; Adam lr 0.01, batch 64, 10 epochs; 93,322 parameters. The seed gives no accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from torch import nn

from spaces.base import IMAGE_SIDE, N_CLASSES, Budget, Config, Space, conv_block, conv_side, pool_side, suggest_training

MAX_BLOCKS = 4


def suggest(trial: optuna.Trial, budget: Budget) -> Config:
    n_blocks = trial.suggest_int("n_blocks", 1, MAX_BLOCKS)
    config: Config = {"n_blocks": n_blocks}
    for i in range(n_blocks):
        config[f"filters_{i}"] = trial.suggest_int(f"filters_{i}", 8, 128, log=True)
        config[f"pool_{i}"] = trial.suggest_categorical(f"pool_{i}", [True, False])
    config["kernel"] = trial.suggest_categorical("kernel", [3, 5])
    config["padding"] = trial.suggest_categorical("padding", ["valid", "same"])
    config["head_width"] = trial.suggest_categorical("head_width", [0, 32, 64, 128, 256])
    config["dropout"] = trial.suggest_float("dropout", 0.0, 0.5)
    return config | suggest_training(
        trial,
        budget,
        optimizers=("adam", "sgd"),
        lr=(1e-4, 1e-1),
        batch_sizes=(64, 128, 256, 512),
        schedules=("none", "onecycle"),
        min_epochs=3,
    )


def build(config: Mapping[str, Any]) -> nn.Module:
    kernel = config["kernel"]
    padding = kernel // 2 if config["padding"] == "same" else 0
    layers: list[nn.Module] = []
    channels, side = 1, IMAGE_SIDE
    for i in range(config["n_blocks"]):
        layers += conv_block(channels, config[f"filters_{i}"], kernel, padding=padding)
        channels, side = config[f"filters_{i}"], conv_side(side, kernel, padding)
        if config[f"pool_{i}"]:
            layers.append(nn.MaxPool2d(2))
            side = pool_side(side)
    layers.append(nn.Flatten())
    features = channels * side * side
    if config["dropout"] > 0:
        layers.append(nn.Dropout(config["dropout"]))
    if config["head_width"]:
        layers += [nn.Linear(features, config["head_width"]), nn.ReLU()]
        features = config["head_width"]
    layers.append(nn.Linear(features, N_CLASSES))
    return nn.Sequential(*layers)


SEED_002: Config = {
    "n_blocks": 2,
    "filters_0": 32,
    "pool_0": True,
    "filters_1": 64,
    "pool_1": True,
    "kernel": 3,
    "padding": "valid",
    "head_width": 0,
    "dropout": 0.0,
    "optimizer": "adam",
    "lr": 1e-4,
    "batch_size": 512,
    "epochs": 30,
    "schedule": "none",
}
SEED_003: Config = {
    "n_blocks": 3,
    "filters_0": 32,
    "pool_0": True,
    "filters_1": 64,
    "pool_1": True,
    "filters_2": 64,
    "pool_2": False,
    "kernel": 3,
    "padding": "valid",
    "head_width": 64,
    "dropout": 0.0,
    "optimizer": "adam",
    "lr": 0.01,
    "batch_size": 64,
    "epochs": 10,
    "schedule": "none",
}

SPACE = Space(
    name="cnn",
    description="convolution filters, kernels, pooling and a dense head (seeds 002, 003)",
    suggest=suggest,
    build=build,
    baselines=(SEED_002, SEED_003),
    model_keys=frozenset(
        {"n_blocks", "kernel", "padding", "head_width", "dropout"}
        | {f"{key}_{i}" for key in ("filters", "pool") for i in range(MAX_BLOCKS)}
    ),
    max_epochs=30,
    target=0.9836,
    target_reason="seed 002 reports 98.36% test accuracy after 30 epochs",
)
