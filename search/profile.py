"""How one device trains: resolved once per run, asked by the training loop and its evaluation.

Every choice that differs between devices lives here, so ``search.train`` never asks which device
it is on: the precision and its autocast, channels-last, how a step gathers its batch, the
evaluation chunk, the optimizers' arguments, the CUDA graph, and the model's preparation (the CPU's
fast layers). The CUDA lines are the ones measured on a GPU (docs/benchmarks.md), moved here as
they were.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from search.cpu import BF16_MIN_FLOPS, cpu_has_native_bf16, forward_flops, swap_cpu_modules
from search.cpu.threads import CoreShare, NoShare
from spaces.errors import UserError
from spaces.training import TrainSettings

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class DeviceProfile:
    device: torch.device
    precision: str  # resolved: fp32 or bf16
    channels_last: bool  # weights and activations in channels-last memory order
    cuda_graph: bool  # the training step captured as a CUDA graph after a few eager steps
    eval_chunk: int  # images per forward pass when evaluating

    @classmethod
    def resolve(
        cls,
        device: torch.device,
        precision: str = "auto",
        model: nn.Module | None = None,
        *,
        cuda_graph: bool = True,
        channels_last: bool = True,
    ) -> DeviceProfile:
        """The profile for training ``model`` on ``device`` (see ``resolve_precision``). The switches
        exist for the benchmark, which measures each of them; they apply only where they pay."""
        precision = resolve_precision(device, precision, model)
        return cls(
            device=device,
            precision=precision,
            channels_last=channels_last and (device.type == "cuda" or precision == "bf16"),
            cuda_graph=cuda_graph and device.type == "cuda",
            # On the CPU, a smaller chunk's activations stay in cache (chunk sizes timed in docs/benchmarks.md).
            eval_chunk=8192 if device.type == "cuda" else 512,
        )

    def prepare(self, model: nn.Module) -> nn.Module:
        """The module to train: a copy of ``model`` on the device, with the CPU's fast layers and in
        channels-last where the profile says so. ``model`` itself is left as it was (layers, device,
        memory format, weights), so it can still go anywhere; the copy has the same state_dict keys."""
        model = copy.deepcopy(model).to(self.device)
        if self.device.type == "cpu":
            swap_cpu_modules(model)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def core_share(self) -> CoreShare | NoShare:
        """The CPU adapts its thread count to other processes between epochs; other devices do not."""
        return CoreShare() if self.device.type == "cpu" else NoShare()

    def autocast(self) -> torch.autocast:
        return _autocast(self.device, self.precision == "bf16")

    def row_gather(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return _row_gather(self.device)

    def optimizer(self, model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
        return _optimizer(model, settings, self.device)


def resolve_precision(device: torch.device, precision: str = "auto", model: nn.Module | None = None) -> str:
    """``auto``: bf16 on CUDA; on CPUs with native bf16 instructions (AVX512-BF16 or AMX), bf16 for
    models big enough to gain from it (``BF16_MIN_FLOPS``, when ``model`` is given); fp32 elsewhere,
    where bf16 is emulated and slower."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if precision != "auto" or device.type == "cuda":
        return "bf16" if precision == "auto" else precision
    if not cpu_has_native_bf16():
        return "fp32"
    return "bf16" if model is None or forward_flops(model) >= BF16_MIN_FLOPS else "fp32"


def _row_gather(device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """How a step gathers its batch. On the CPU ``index_select`` copies whole rows, several times
    faster than indexing a small batch; the CUDA step, measured on a GPU, indexes as it did."""
    if device.type == "cpu":
        return lambda t, index: t.index_select(0, index)
    return lambda t, index: t[index]


def _autocast(device: torch.device, bf16: bool) -> torch.autocast:
    # bf16: no loss scaling needed. On CUDA, no weight-cast cache: a CUDA graph must recompute the
    # casts on every replay; the CPU has no graph, and the cache saves a cast per use of a weight.
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=device.type != "cuda"
    )


def _optimizer(model: nn.Module, s: TrainSettings, device: torch.device) -> torch.optim.Optimizer:
    params = model.parameters()
    if device.type == "cuda":
        # Fused kernels with the lr held in a device tensor: one launch per step, and a schedule
        # can change the lr inside a captured graph.
        lr = torch.tensor(s.lr, device=device)
        if s.optimizer == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=s.momentum, weight_decay=s.weight_decay, fused=True)
        if s.optimizer in ("adam", "adamw"):
            kind = torch.optim.AdamW if s.optimizer == "adamw" else torch.optim.Adam
            return kind(params, lr=lr, weight_decay=s.weight_decay, fused=True, capturable=True)
    # On the CPU too, one fused call updates every parameter: the per-parameter loop was a quarter
    # of a small MLP's step (docs/benchmarks.md). Other devices keep PyTorch's default.
    fused = True if device.type == "cpu" else None
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay, fused=fused)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay, fused=fused)
    if s.optimizer == "adam":
        return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay, fused=fused)
    raise ValueError(f"unknown optimizer {s.optimizer!r}")
