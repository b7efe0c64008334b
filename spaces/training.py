"""The training recipe a config carries: every training hyperparameter in one place, and so the
keys a space may put in a config besides its model's."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class TrainSettings:
    """Every training hyperparameter, in one place; the keys a space may put in a config."""

    epochs: int
    batch_size: int = 128
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    schedule: str = "none"  # none | step (StepLR per epoch) | onecycle (per step)
    step_size: int = 5
    gamma: float = 0.5
    label_smoothing: float = 0.0
    augment: float = 0.0  # 0 off; 1 = up to ±15° rotation, ±10% shift, ±10% scale
    ema: float = 0.0  # 0 off; else the decay of a moving average of the weights, evaluated and kept

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TrainSettings:
        return cls(**{k: config[k] for k in TRAIN_KEYS if k in config})


TRAIN_KEYS = frozenset(f.name for f in fields(TrainSettings))
