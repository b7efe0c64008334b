"""What every family module provides, and the building blocks they share.

A config is one flat dict: the params Optuna suggests (model keys plus the training keys of
``spaces.training.TrainSettings``). The seed baselines are configs of the same shape, so they can be
enqueued as trial 0 and exported, retrained and compared like any other trial.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from torch import nn

from spaces.errors import UserError
from spaces.training import TRAIN_KEYS

Config = dict[str, Any]
IMAGE_SIDE = 28
N_CLASSES = 10
PARAM_CEILING = 50_000_000  # any family without a cap: nothing past this is built, let alone trained


class InvalidArchitecture(ValueError):
    """The config describes no network (for example, the feature map shrinks below 1×1)."""


@dataclass(frozen=True)
class Budget:
    """Hard limits a trial must respect: parameters (inclusive) and epochs."""

    max_params: int | None
    max_epochs: int


@dataclass(frozen=True)
class Space:
    name: str
    description: str
    suggest: Callable[[optuna.Trial, Budget], Config]
    build: Callable[[Mapping[str, Any]], nn.Module]
    baselines: tuple[Config, ...]  # the seed documents' own configs; the first is trial 0
    model_keys: frozenset[str]
    max_epochs: int  # the family's cap on epochs
    target: float  # the test accuracy a search must beat (a fraction)
    target_reason: str  # where the target comes from: the seed document's figure, or a stated goal
    max_params: int | None = None  # the family's cap on parameters, inclusive
    # Keys added after configs of this family were first exported, each with the value that means
    # what a config without it meant: such a config still checks, builds and retrains.
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def budget(self, max_params: int | None = None, max_epochs: int | None = None) -> Budget:
        """The family budget, tightened by user flags; looser than the family's cap is an error."""
        if max_epochs is not None and not 1 <= max_epochs <= self.max_epochs:
            raise UserError(f"max_epochs {max_epochs} is outside 1..{self.max_epochs}, the cap of space {self.name!r}")
        if max_params is not None:
            if max_params < 1:
                raise UserError(f"max_params must be positive, got {max_params}")
            if self.max_params is not None and max_params > self.max_params:
                raise UserError(
                    f"max_params {max_params} is over the cap of space {self.name!r} ({self.max_params}); "
                    "pass a smaller value"
                )
        return Budget(
            max_params=max_params if max_params is not None else self.max_params,
            max_epochs=max_epochs if max_epochs is not None else self.max_epochs,
        )

    def check_keys(self, config: Mapping[str, Any]) -> None:
        unknown = sorted(set(config) - self.model_keys - TRAIN_KEYS)
        if unknown:
            raise UserError(f"config for space {self.name!r} has unknown keys: {', '.join(map(repr, unknown))}")
        if "epochs" not in config:
            raise UserError(f"config for space {self.name!r} has no 'epochs'")

    def check_config(self, config: Mapping[str, Any], budget: Budget | None = None) -> int:
        """Check every key, type and range of ``config`` against this space's own ``suggest``, then its
        parameter count against the budget (counted on the meta device: nothing is allocated).
        Returns the parameter count; anything wrong is a one-line UserError."""
        budget = budget or self.budget()
        if not isinstance(config, Mapping):
            raise UserError(f"a {self.name} config must be a JSON object, got {type(config).__name__}")
        self.check_keys(config)
        replay = _CheckingTrial(self.name, config, self.defaults)
        expected = self.suggest(replay, budget)  # type: ignore[arg-type]
        for key, value in expected.items():
            if key not in config and key in self.defaults:
                continue  # replayed with its default above
            if key not in config:
                raise UserError(f"{self.name} config is missing {key!r}")
            if not _same(config[key], value):
                raise UserError(f"{self.name} config has {key}={config[key]!r}; this space only allows {value!r}")
        unused = sorted(set(config) - set(expected))
        if unused:
            raise UserError(f"{self.name} config has keys this config does not use: {', '.join(unused)}")
        try:
            with torch.device("meta"):
                params = sum(p.numel() for p in self.build(config).parameters())
        except InvalidArchitecture as error:
            raise UserError(f"{self.name} config describes no network: {error}") from None
        ceiling = budget.max_params if budget.max_params is not None else PARAM_CEILING
        if params > ceiling:
            raise UserError(f"{self.name} config has {params:,} parameters, over the {self.name} budget of {ceiling:,}")
        return params


class _CheckingTrial:
    """Stands in for an Optuna trial: each suggest_* call checks the config's value against the range
    the space declares there, so the space's ``suggest`` is the one source of its ranges."""

    def __init__(self, space: str, config: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
        self.space, self.config = space, {**defaults, **config}

    def _value(self, name: str) -> Any:
        if name not in self.config:
            raise UserError(f"{self.space} config is missing {name!r}")
        return self.config[name]

    def _refuse(self, name: str, allowed: str) -> UserError:
        return UserError(f"{self.space} config has {name}={self.config[name]!r}; it must be {allowed}")

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        value = self._value(name)
        if name == "epochs":  # a quick study's --epochs cap sits below the search's floor: any short run is fine
            low = 1
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high or (value - low) % step:
            raise self._refuse(name, f"a whole number in {low}..{high}" + (f" in steps of {step}" if step > 1 else ""))
        return value

    def suggest_float(
        self, name: str, low: float, high: float, *, log: bool = False, step: float | None = None
    ) -> float:
        value = self._value(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise self._refuse(name, f"a number in {low:g}..{high:g}")
        return value

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        value = self._value(name)
        if not any(_same(value, choice) for choice in choices):
            raise self._refuse(name, f"one of {list(choices)}")
        return value


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same kind: JSON's ``true`` is not the batch size 1."""
    return type(a) is type(b) and a == b or (isinstance(a, int | float) and type(b) is float and a == b)


def mlp(widths: Sequence[int], *, batch_norm: bool, dropout: float, log_softmax: bool) -> nn.Sequential:
    """Flatten, then Linear → LeakyReLU → [BatchNorm] → [Dropout] per hidden width, then Linear to 10.

    The block order is the one seeds 000 and 001 use.
    """
    layers: list[nn.Module] = [nn.Flatten()]
    width_in = IMAGE_SIDE * IMAGE_SIDE
    for width in widths:
        layers += [nn.Linear(width_in, width), nn.LeakyReLU()]
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width_in = width
    layers.append(nn.Linear(width_in, N_CLASSES))
    if log_softmax:
        layers.append(nn.LogSoftmax(dim=1))
    return nn.Sequential(*layers)


def conv_block(
    c_in: int,
    c_out: int,
    kernel: int,
    *,
    padding: int = 0,
    bias: bool = True,
    batch_norm: bool = False,
    dropout: float = 0.0,
    separable: bool = False,
) -> list[nn.Module]:
    """Conv → ReLU → [BatchNorm] → [Dropout], the order of seeds 002-004. ``separable``: the conv is
    depthwise (one ``kernel`` filter per input channel, no bias) then pointwise (1×1 to ``c_out``), at
    ``kernel² · c_in + c_in · c_out`` weights instead of ``kernel² · c_in · c_out``."""
    if separable:
        convs: list[nn.Module] = [
            nn.Conv2d(c_in, c_in, kernel, padding=padding, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=bias),
        ]
    else:
        convs = [nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=bias)]
    layers: list[nn.Module] = [*convs, nn.ReLU()]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return layers


def conv_side(side: int, kernel: int, padding: int) -> int:
    side = side + 2 * padding - kernel + 1
    if side < 1:
        raise InvalidArchitecture("the feature map shrinks below 1×1; use fewer blocks, padding or fewer pools")
    return side


def pool_side(side: int) -> int:
    if side < 2:
        raise InvalidArchitecture("pooling a 1×1 feature map; use fewer pools or more padding")
    return side // 2


def suggest_epochs(trial: optuna.Trial, budget: Budget, low: int) -> int:
    return trial.suggest_int("epochs", min(low, budget.max_epochs), budget.max_epochs)


def suggest_training(
    trial: optuna.Trial,
    budget: Budget,
    *,
    optimizers: Sequence[str],
    lr: tuple[float, float],
    batch_sizes: Sequence[int],
    schedules: Sequence[str],
    min_epochs: int,
    weight_decay: tuple[float, float] | None = None,
    label_smoothing: float = 0.0,
    augment: bool = False,
    ema: Sequence[float] = (),
) -> Config:
    """The training half of a config; conditional keys appear only where they matter. ``ema``: the
    weight-average decays to choose from (0 is none), or () to leave the key out."""
    config: Config = {
        "optimizer": _choose(trial, "optimizer", optimizers),
        "lr": trial.suggest_float("lr", *lr, log=True),
        "batch_size": _choose(trial, "batch_size", batch_sizes),
        "epochs": suggest_epochs(trial, budget, min_epochs),
        "schedule": _choose(trial, "schedule", schedules),
    }
    if config["optimizer"] == "sgd":
        config["momentum"] = trial.suggest_float("momentum", 0.8, 0.95)
    if weight_decay is not None:
        config["weight_decay"] = trial.suggest_float("weight_decay", *weight_decay)
    if config["schedule"] == "step":
        config["step_size"] = trial.suggest_int("step_size", 1, 10)
        config["gamma"] = trial.suggest_float("gamma", 0.1, 0.9)
    if label_smoothing > 0:
        config["label_smoothing"] = trial.suggest_float("label_smoothing", 0.0, label_smoothing)
    if augment:
        config["augment"] = trial.suggest_float("augment", 0.0, 1.0)
    if ema:
        config["ema"] = _choose(trial, "ema", ema)
    return config


def _choose(trial: optuna.Trial, name: str, choices: Sequence[Any]) -> Any:
    # A single choice is a constant: keep it out of the search space and out of importances.
    return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, list(choices))
