"""The one training loop: every family, every trial, every retrain goes through ``train``.

Measured on one H100 (2026-11-23, docs/benchmarks.md, docs/results.md): seed 004's 14,320-parameter
GAP CNN trains at 0.29 s per 58k-image epoch at batch 128 (8.1x a 4-worker DataLoader loop in the
same run), and the best gap_cnn config found (19,198 parameters, 12 epochs) reaches 99.58% +- 0.02%
test accuracy over 3 seeds; in the search that trial took 3.5 s, validation included.

The dataset lives on the device as uint8; each step gathers a batch by index, augments it
(optionally, as batched tensor ops) and standardises it. The step loop never syncs with the host:
the loss is summed on the device and read once per epoch, where NaN/inf ends the run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from search.allocator import keep_pages_mapped
from search.augment import random_affine
from search.cpu import BF16_MIN_FLOPS, cpu_has_native_bf16, forward_flops, swap_cpu_modules
from search.data import Tensors, normalise, standardise
from spaces.errors import UserError
from spaces.training import TrainSettings


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainResult:
    accuracies: list[float] = field(default_factory=list)  # evaluation accuracy after each epoch
    losses: list[float] = field(default_factory=list)  # mean training loss of each epoch
    seconds: float = 0.0  # wall time, evaluation included
    train_seconds: float = 0.0  # training steps only
    images_per_second: float = 0.0  # training throughput

    @property
    def accuracy(self) -> float:
        return self.accuracies[-1]


EpochCallback = Callable[[int, float], None]
PRECISIONS = ("auto", "fp32", "bf16")
GRAPH_WARMUP_STEPS = 3  # eager steps first: optimizer state and cuDNN/cuBLAS set up outside capture


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when there is one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA device is available; use --device auto or cpu")
    return torch.device(name)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train(
    model: nn.Module,
    train_set: Tensors,
    eval_set: Tensors,
    settings: TrainSettings,
    *,
    device: torch.device,
    seed: int = 0,
    on_epoch: EpochCallback | None = None,
    cuda_graph: bool = True,
    precision: str = "auto",
    channels_last: bool = True,
) -> TrainResult:
    """Train ``model`` on ``train_set`` and evaluate on ``eval_set`` after every epoch.

    ``on_epoch(epoch, accuracy)`` may raise (``optuna.TrialPruned``) to stop early. On CUDA the
    step runs as a CUDA graph after a few eager warm-up steps, in bf16 autocast with channels-last
    weights; on a CPU with native bf16, in bf16 autocast with channels-last weights (see
    ``resolve_precision``). The switches exist for the benchmark, which measures each of them.
    """
    torch.manual_seed(seed)  # also the CUDA generator that dropout and augmentation draw from
    generator = torch.Generator(device=device).manual_seed(seed)  # batch order
    train_set, eval_set = train_set.to(device), eval_set.to(device)
    precision = resolve_precision(device, precision, model)  # also for the evaluation passes below
    bf16 = precision == "bf16"
    model = _prepare(model, device, channels_last and (device.type == "cuda" or bf16))
    n = len(train_set)
    batch_size = min(settings.batch_size, n)
    steps = n // batch_size  # drop the ragged last batch: a batch of one breaks BatchNorm
    optimizer = _optimizer(model, settings, device)
    scheduler = _scheduler(optimizer, settings, steps)
    autocast = _autocast(device, bf16)
    loss_sum = torch.zeros((), device=device)
    rows = _row_gather(device)

    def step(index: torch.Tensor) -> None:
        x = normalise(rows(train_set.images, index))
        if settings.augment > 0:
            x = random_affine(x, settings.augment)
        with autocast:
            # For models ending in LogSoftmax (seeds 001, 004) this is exactly NLL loss:
            # log_softmax is idempotent, so cross_entropy(log_probs) == nll_loss(log_probs).
            logits = model(standardise(x)).float()
            loss = F.cross_entropy(logits, rows(train_set.labels, index), label_smoothing=settings.label_smoothing)
        loss.backward()
        optimizer.step()
        loss_sum.add_(loss.detach())

    use_graph = cuda_graph and device.type == "cuda" and steps > GRAPH_WARMUP_STEPS
    run_step = None  # the captured graph, once it exists
    result = TrainResult()
    start = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        order = torch.randperm(n, device=device, generator=generator)
        loss_sum.zero_()
        for i in range(steps):
            index = order[i * batch_size : (i + 1) * batch_size]
            if run_step is not None:
                run_step(index)
            elif use_graph and i == GRAPH_WARMUP_STEPS:
                run_step = _capture(step, optimizer, index)
                run_step(index)
            else:
                optimizer.zero_grad(set_to_none=True)
                step(index)
            if settings.schedule == "onecycle":
                scheduler.step()
        if settings.schedule == "step":
            scheduler.step()
        mean_loss = loss_sum.item() / steps  # the one host sync of the epoch
        result.train_seconds += time.perf_counter() - epoch_start
        if not math.isfinite(mean_loss):
            raise Diverged(f"training loss became {mean_loss} in epoch {epoch}")
        result.losses.append(mean_loss)
        result.accuracies.append(accuracy(model, eval_set, device, precision))
        result.seconds = time.perf_counter() - start
        result.images_per_second = epoch * steps * batch_size / result.train_seconds
        if on_epoch is not None:
            on_epoch(epoch, result.accuracies[-1])
    return result


def _row_gather(device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """How a step gathers its batch. On the CPU ``index_select`` copies whole rows, several times
    faster than indexing a small batch; the CUDA step, measured on a GPU, indexes as it did."""
    if device.type == "cpu":
        return lambda t, index: t.index_select(0, index)
    return lambda t, index: t[index]


def _capture(
    step: Callable[[torch.Tensor], None], optimizer: torch.optim.Optimizer, first_index: torch.Tensor
) -> Callable[[torch.Tensor], None]:
    """Capture one whole training step (gather, augment, forward, backward, optimizer) as a CUDA
    graph: a small network's step is hundreds of tiny kernels, and launching them one by one from
    Python costs more than running them. Replays read the batch's indices from a static buffer.
    """
    static_index = first_index.clone()
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)  # backward inside the graph allocates .grad statically
    with torch.cuda.graph(graph):
        step(static_index)

    def replay(index: torch.Tensor) -> None:
        static_index.copy_(index)
        graph.replay()

    return replay


@torch.inference_mode()
def predict(model: nn.Module, data: Tensors, device: torch.device, precision: str = "auto") -> torch.Tensor:
    """Predicted labels for the whole set, in a few large batches."""
    model.eval()
    # On the CPU, a smaller chunk's activations stay in cache: GAP CNNs evaluated 1.3-2.8x faster in
    # chunks of 512 than of 2048 (docs/benchmarks.md).
    chunk = 8192 if device.type == "cuda" else 512
    with _autocast(device, resolve_precision(device, precision, model) == "bf16"):
        return torch.cat(
            [model(standardise(normalise(data.images[i : i + chunk]))).argmax(1) for i in range(0, len(data), chunk)]
        )


def accuracy(model: nn.Module, data: Tensors, device: torch.device, precision: str = "auto") -> float:
    return (predict(model, data, device, precision) == data.labels).sum().item() / len(data)


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


def _prepare(model: nn.Module, device: torch.device, channels_last: bool = True) -> nn.Module:
    model = model.to(device)
    if device.type == "cpu":
        keep_pages_mapped()
        swap_cpu_modules(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


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


def _scheduler(optimizer: torch.optim.Optimizer, s: TrainSettings, steps: int) -> Any:
    if s.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    if s.schedule == "onecycle":
        # lr only: cycling momentum would change a value a captured graph has baked in.
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=s.lr, total_steps=s.epochs * steps, cycle_momentum=False
        )
    if s.schedule == "none":
        return None
    raise ValueError(f"unknown schedule {s.schedule!r}")
