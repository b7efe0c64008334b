"""The one training loop: every family, every trial, every retrain goes through ``train``.
Its speed against a DataLoader loop, per device, is in docs/benchmarks.md.

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

from search.augment import random_affine
from search.averaging import WeightAverage
from search.data import Tensors, normalise, standardise
from search.profile import DeviceProfile
from spaces.errors import UserError
from spaces.training import TrainSettings


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainResult:
    model: nn.Module  # the trained module: the profile's copy of the caller's model, or with ``ema`` its average
    accuracies: list[float] = field(default_factory=list)  # evaluation accuracy after each epoch
    seconds: float = 0.0  # wall time, evaluation included
    train_seconds: float = 0.0  # training steps only

    @property
    def accuracy(self) -> float:
        return self.accuracies[-1]


EpochCallback = Callable[[int, float], None]
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
    profile: DeviceProfile,
    seed: int = 0,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train a copy of ``model`` on ``train_set`` and evaluate it on ``eval_set`` after every epoch.

    ``profile`` (``DeviceProfile.resolve(device, precision, model)``) says how: on CUDA the step
    runs as a CUDA graph after a few eager warm-up steps, in bf16 autocast with channels-last
    weights; on a CPU with native bf16, in bf16 autocast with channels-last weights for models that
    gain from it, with the CPU's fast dropout and batch norm and fused optimizers. The trained
    weights are in ``result.model``, the profile's copy (with ``settings.ema``, the copy's moving
    average, which is also what each epoch evaluates); ``model`` is left as it was, and
    ``model.load_state_dict(result.model.state_dict())`` puts them into it (the keys are the same).

    ``on_epoch(epoch, accuracy)`` may raise (``optuna.TrialPruned``) to stop early. ``seed`` fixes
    the batch order and the global generator that dropout and augmentation draw from.

    Called from Python, this is the loop a search and a retrain run, step for step. What it does
    not do is change the process: the entry points call ``search.cpu.configure_process(device)``
    first, which caps oneDNN's kernel cache (memory, over a search's many shapes) and keeps glibc's
    heap mapped between steps (a GAP CNN's CPU step at batch 512 was about a fifth faster for it);
    a Python caller training on the CPU calls it once too, for the same speed.
    """
    device = profile.device
    torch.manual_seed(seed)  # also the CUDA generator that dropout and augmentation draw from
    generator = torch.Generator(device=device).manual_seed(seed)  # batch order
    # A no-op for data already there: the worker and retrain move it once, for every run.
    train_set, eval_set = train_set.to(device), eval_set.to(device)
    model = profile.prepare(model)
    n = len(train_set)
    batch_size = min(settings.batch_size, n)
    steps = n // batch_size  # drop the ragged last batch: a batch of one breaks BatchNorm
    optimizer = profile.optimizer(model, settings)
    scheduler = _scheduler(optimizer, settings, steps)
    autocast = profile.autocast()
    loss_sum = torch.zeros((), device=device)
    rows = profile.row_gather()
    # Updated after each step, outside a captured graph; the loop evaluates and returns it.
    averaged = WeightAverage(model, settings.ema) if settings.ema > 0 else None
    evaluated = model if averaged is None else averaged.module

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

    use_graph = profile.cuda_graph and steps > GRAPH_WARMUP_STEPS
    run_step = None  # the captured graph, once it exists
    result = TrainResult(evaluated)
    start = time.perf_counter()
    # A CPU shared with other work: fewer threads while it is busy, the caller's count restored after.
    with profile.core_share() as cores:
        for epoch in range(1, settings.epochs + 1):
            cores.before_epoch()
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
                if averaged is not None:
                    averaged.update_parameters(model)
                if settings.schedule == "onecycle":
                    scheduler.step()
            if settings.schedule == "step":
                scheduler.step()
            mean_loss = loss_sum.item() / steps  # the one host sync of the epoch
            result.train_seconds += time.perf_counter() - epoch_start
            if not math.isfinite(mean_loss):
                raise Diverged(f"training loss became {mean_loss} in epoch {epoch}")
            result.accuracies.append(accuracy(evaluated, eval_set, profile))
            result.seconds = time.perf_counter() - start
            if on_epoch is not None:
                on_epoch(epoch, result.accuracies[-1])
    return result


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
def predict(model: nn.Module, data: Tensors, profile: DeviceProfile) -> torch.Tensor:
    """Predicted labels for the whole set, in a few large batches; ``model`` and ``data`` on the
    profile's device (``result.model`` of ``train`` is)."""
    model.eval()
    chunk = profile.eval_chunk
    with profile.autocast():
        return torch.cat(
            [model(standardise(normalise(data.images[i : i + chunk]))).argmax(1) for i in range(0, len(data), chunk)]
        )


def accuracy(model: nn.Module, data: Tensors, profile: DeviceProfile) -> float:
    return (predict(model, data, profile) == data.labels).sum().item() / len(data)


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
