"""A 2-D batch norm for channels-last tensors on the CPU, whatever their channel count.

PyTorch's channels-last CPU kernel vectorises across channels, so with a channel count that is
not a multiple of the vector width (most of what a search proposes: 4, 10, 14, 18, ...) it runs
nearly element by element, and it was half of such a GAP CNN's bf16 step (docs/benchmarks.md).
Here each image's H·W·C values form one contiguous row and the per-channel terms are tiled along
it, so every op runs over long rows, a cache-sized block of images at a time. Statistics and
gradients are computed in fp32 (same-dtype ops only: mixed bf16/fp32 ops took 10x longer), the
output is in the input's dtype, and the running statistics move as ``nn.BatchNorm2d``'s do.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

CHUNK_ELEMENTS = 1 << 18  # fp32 temporaries of 1 MiB: they stay in cache
# PyTorch's kernel is the faster at multiples of this (AVX-512's 16 fp32 lanes; docs/benchmarks.md).
VECTOR_CHANNELS = 16


class FastBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with the same parameters and buffers. Training on channels-last input
    whose channel count PyTorch's kernel cannot vectorise takes the row path; everything else
    (evaluation, other layouts, a cumulative-average momentum) PyTorch's own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = (
            self.training
            and x.dim() == 4
            and x.shape[1] % VECTOR_CHANNELS != 0
            and x.is_contiguous(memory_format=torch.channels_last)
            and self.affine
            and self.track_running_stats
            and self.momentum is not None
        )
        if not fast:
            return super().forward(x)
        self.num_batches_tracked.add_(1)
        return _TrainingBatchNorm.apply(
            x, self.weight, self.bias, self.running_mean, self.running_var, self.momentum, self.eps
        )


class _TrainingBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        running_mean: torch.Tensor,
        running_var: torch.Tensor,
        momentum: float,
        eps: float,
    ) -> torch.Tensor:
        n, c, h, w = x.shape
        count, tiles = n * h * w, h * w
        rows = _rows(x)
        sums = torch.zeros(rows.shape[1])
        for part in _parts(rows):
            sums += part.sum(0, dtype=torch.float32)
        mean = _channel_sums(sums, c) / count
        mean_row = mean.repeat(tiles)
        squares = torch.zeros_like(sums)
        for part in _parts(rows):  # two-pass variance
            centered = _fp32_copy(part).sub_(mean_row)
            squares += centered.mul_(centered).sum(0)
        var = _channel_sums(squares, c) / count  # biased, as the normalisation uses
        invstd = torch.rsqrt(var + eps)
        with torch.no_grad():
            running_mean.lerp_(mean, momentum)
            running_var.lerp_(var * (count / max(count - 1, 1)), momentum)  # unbiased, as PyTorch
        ctx.save_for_backward(x, weight, mean, invstd)
        scale = weight * invstd
        return _affine(x, scale, bias - mean * scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, mean, invstd = ctx.saved_tensors
        n, c, h, w = x.shape
        count, tiles = n * h * w, h * w
        rows, dy = _rows(x), _rows(grad.contiguous(memory_format=torch.channels_last))
        mean_row = mean.repeat(tiles)
        dy_sums, dy_centered = torch.zeros(rows.shape[1]), torch.zeros(rows.shape[1])
        for x_part, dy_part in zip(_parts(rows), _parts(dy), strict=True):
            dy_float = _fp32_copy(dy_part)
            dy_sums += dy_float.sum(0)
            dy_centered += _fp32_copy(x_part).sub_(mean_row).mul_(dy_float).sum(0)
        d_bias = _channel_sums(dy_sums, c)
        d_weight = _channel_sums(dy_centered, c) * invstd
        # d_x = a·(dy − mean(dy) − x_hat·mean(dy·x_hat)) with a = weight·invstd and
        # x_hat = (x − mean)·invstd: per channel, d_x = a·dy + b·x + offset.
        a = weight * invstd
        b = -a * invstd * d_weight / count
        offset = (-a * d_bias / count - b * mean).repeat(tiles)
        a, b = a.repeat(tiles), b.repeat(tiles)
        d_x = torch.empty_like(x, memory_format=torch.channels_last)
        for out, x_part, dy_part in zip(_parts(_rows(d_x)), _parts(rows), _parts(dy), strict=True):
            out.copy_(_fp32_copy(dy_part).mul_(a).add_(offset).addcmul_(x_part.float(), b))
        return d_x, d_weight, d_bias, None, None, None, None


def _affine(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """x · scale + shift per channel, computed in fp32, returned in x's dtype and layout."""
    tiles = x.shape[2] * x.shape[3]
    scale, shift = scale.repeat(tiles), shift.repeat(tiles)
    out = torch.empty_like(x, memory_format=torch.channels_last)
    for out_part, part in zip(_parts(_rows(out)), _parts(_rows(x)), strict=True):
        out_part.copy_(_fp32_copy(part).mul_(scale).add_(shift))
    return out


def _fp32_copy(t: torch.Tensor) -> torch.Tensor:
    """A new fp32 tensor (``.float()`` of an fp32 tensor is the tensor itself: no writing to it)."""
    return t.to(torch.float32, copy=True)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """A channels-last N×C×H×W tensor as its N×(H·W·C) memory, without a copy."""
    return x.permute(0, 2, 3, 1).view(x.shape[0], -1)


def _parts(rows: torch.Tensor) -> list[torch.Tensor]:
    """Blocks of whole images of about ``CHUNK_ELEMENTS`` each."""
    step = max(1, CHUNK_ELEMENTS // rows.shape[1])
    return list(rows.split(step))


def _channel_sums(row_sums: torch.Tensor, channels: int) -> torch.Tensor:
    """Per-channel totals of a row of H·W·C sums."""
    return row_sums.view(-1, channels).sum(0)
