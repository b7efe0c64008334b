"""One config trained for one seed, the sequence a search's trial and a retrain share: seed, build,
count the parameters, resolve the device profile (precision included, once), then train.

Built and trained in two steps, so that a trial can record what it is and turn away an
over-budget model before any training step runs.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from search.data import Tensors
from search.profile import DeviceProfile
from search.train import EpochCallback, TrainResult, count_params, train
from spaces import Space
from spaces.training import TrainSettings


@dataclass(frozen=True)
class Run:
    config: Mapping[str, Any]
    seed: int
    model: nn.Module  # as built, untrained; the trained one is TrainResult.model
    params: int
    device: torch.device
    precision: str  # as asked: auto, fp32 or bf16

    @classmethod
    def build(cls, space: Space, config: Mapping[str, Any], *, seed: int, device: torch.device, precision: str) -> Run:
        """Build ``config``'s model from ``seed``, which fixes its initial weights (an export's
        train_seed rebuilds the same model); the space's ``InvalidArchitecture`` passes through."""
        torch.manual_seed(seed)
        model = space.build(config)
        return cls(config, seed, model, count_params(model), device, precision)

    @functools.cached_property
    def profile(self) -> DeviceProfile:
        """How the device trains this model, resolved on first use and then kept. Not in ``build``:
        auto precision on the CPU runs the model once to count its FLOPs, and a broken model fails
        there, after a trial has recorded its parameter count."""
        return DeviceProfile.resolve(self.device, self.precision, self.model)

    def train(self, train_set: Tensors, eval_set: Tensors, on_epoch: EpochCallback | None = None) -> TrainResult:
        """Train for the config's own settings; data already on the device trains without a copy."""
        settings = TrainSettings.from_config(self.config)
        return train(self.model, train_set, eval_set, settings, profile=self.profile, seed=self.seed, on_epoch=on_epoch)
