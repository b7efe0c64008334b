"""An exponential moving average of a model's weights, for configs with ``ema`` > 0.

The average covers the buffers too (batch norm's running statistics), so the averaged copy is a
whole model: the training loop evaluates it after every epoch and hands it back in place of the
live weights. The decay warms up as ``(1 + n) / (10 + n)`` over the first updates, up to the
config's: otherwise the first epochs' average would be mostly the initial weights, and a pruner
judging from epoch 1 would see a network that has not trained.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

WARMUP_UPDATES = 10
TensorList = tuple[torch.Tensor, ...] | list[torch.Tensor]  # as AveragedModel hands them over


class WeightAverage(AveragedModel):
    """A copy of a model that ``update_parameters(model)`` moves toward ``model``'s weights and
    buffers; ``.module`` is the averaged network, with the model's layers and state_dict keys."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"an average's decay must be in (0, 1), got {decay}")
        super().__init__(model, multi_avg_fn=self._move, use_buffers=True)
        self.decay = decay
        # Counted here: the count AveragedModel hands to _move is a copy on the model's device,
        # and reading it would sync a GPU.
        self.updates = 0

    def update_parameters(self, model: nn.Module) -> None:
        super().update_parameters(model)  # the first call copies the model
        self.updates += 1

    @torch.no_grad()
    def _move(self, averaged: TensorList, current: TensorList, _: torch.Tensor | int) -> None:
        # Called once per dtype: integer buffers (num_batches_tracked) are counters, copied as they are.
        if not torch.is_floating_point(averaged[0]):
            torch._foreach_copy_(averaged, current)
            return
        decay = min(self.decay, self.updates / (WARMUP_UPDATES - 1 + self.updates))
        torch._foreach_lerp_(averaged, current, 1.0 - decay)
