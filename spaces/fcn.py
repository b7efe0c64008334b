"""fcn: seed 001's fully connected classifier, with widths stepping evenly from 784 down to 10.

Seed 001: ``n_layers`` = 10 gives nine hidden layers (707, 630, ..., 91), each Linear → LeakyReLU →
BatchNorm (or Dropout(p) instead), LogSoftmax with NLL loss, Adam at its default lr 1e-3, batch 256,
10 epochs; 97.85% accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from torch import nn

from spaces.base import IMAGE_SIDE, N_CLASSES, Budget, Config, Space, mlp, suggest_training


def hidden_widths(n_layers: int) -> list[int]:
    """The seed's rule: ``n_layers - 1`` hidden widths, each ``(784 - 10) // n_layers`` smaller."""
    step = (IMAGE_SIDE * IMAGE_SIDE - N_CLASSES) // n_layers
    return [IMAGE_SIDE * IMAGE_SIDE - step * (i + 1) for i in range(n_layers - 1)]


def suggest(trial: optuna.Trial, budget: Budget) -> Config:
    config: Config = {
        "n_layers": trial.suggest_int("n_layers", 2, 12),
        "batch_norm": trial.suggest_categorical("batch_norm", [True, False]),
    }
    config["dropout"] = 0.0 if config["batch_norm"] else trial.suggest_float("dropout", 0.05, 0.6)
    return config | suggest_training(
        trial,
        budget,
        optimizers=("adam",),
        lr=(1e-4, 1e-2),
        batch_sizes=(64, 128, 256, 512),
        # The seed trains at a constant lr with no augmentation; an MLP gains most from a
        # decaying lr and light augmentation, so the recipe is searched along with the shape.
        schedules=("none", "step", "onecycle"),
        min_epochs=3,
        label_smoothing=0.1,
        augment=True,
    )


def build(config: Mapping[str, Any]) -> nn.Module:
    # Seed 001 regularises with BatchNorm *or* Dropout, never both.
    dropout = 0.0 if config["batch_norm"] else config["dropout"]
    return mlp(hidden_widths(config["n_layers"]), batch_norm=config["batch_norm"], dropout=dropout, log_softmax=True)


SEED_001: Config = {
    "n_layers": 10,
    "batch_norm": True,
    "dropout": 0.0,
    "optimizer": "adam",
    "lr": 1e-3,
    "batch_size": 256,
    "epochs": 10,
    "schedule": "none",
    "label_smoothing": 0.0,
    "augment": 0.0,
}

SPACE = Space(
    name="fcn",
    description="n_layers with widths stepping evenly from 784 down to 10 (seed 001)",
    suggest=suggest,
    build=build,
    baselines=(SEED_001,),
    model_keys=frozenset({"n_layers", "batch_norm", "dropout"}),
    max_epochs=30,
    target=0.9785,
    target_reason="seed 001 reports 97.85% test accuracy",
)
