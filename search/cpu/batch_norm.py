"""A 2-D batch norm for channels-last tensors on the CPU, whatever their channel count.

PyTorch's channels-last CPU kernel vectorises across channels, so with a channel count that is
not a multiple of the vector width (most of what a search proposes: 4, 10, 14, 18, ...) it runs
nearly element by element, and it was half of such a GAP CNN's bf16 step (docs/benchmarks.md).
Here each image's H·W·C values are viewed as one row of H·W·C "columns", each column one channel
at one pixel, and PyTorch's own batch-norm kernels run over that view, vectorised along the long
rows: per-column statistics, combined exactly into per-channel ones, and per-column affine maps
with the per-channel terms tiled along the row. Statistics and gradient sums are fp32; the output
is in the input's dtype; the running statistics move as ``nn.BatchNorm2d``'s do.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# PyTorch's kernel is the faster at multiples of this (AVX-512's 16 fp32 lanes), and below this many
# elements, where the row path's few dozen small ops cost more than it saves (docs/benchmarks.md).
VECTOR_CHANNELS = 16
SMALL_TENSOR = 1 << 16


class FastBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with the same parameters and buffers. Training on large channels-last
    input on the CPU whose channel count PyTorch's kernel cannot vectorise takes the row path;
    everything else (evaluation, small tensors, other layouts, a cumulative-average momentum, a batch
    of one, a tensor on another device: the row path's buffers are CPU tensors) PyTorch's own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = (
            self.training
            and x.device.type == "cpu"
            and x.dim() == 4
            and x.shape[0] > 1  # a column of one value has no variance
            and x.shape[1] % VECTOR_CHANNELS != 0
            and x.numel() >= SMALL_TENSOR
            and x.is_contiguous(memory_format=torch.channels_last)
            and self.affine
            and self.track_running_stats
            and self.momentum is not None
        )
        if not fast or self.num_batches_tracked is None:  # the second: for mypy, as track_running_stats implies it
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
        # With momentum 1 the scratch buffers become each column's mean and unbiased variance.
        column_mean, column_var = torch.zeros(rows.shape[1]), torch.ones(rows.shape[1])
        torch.native_batch_norm(rows, None, None, column_mean, column_var, True, 1.0, eps)
        means = column_mean.view(tiles, c)
        mean = means.mean(0)
        # The law of total variance over equal-sized columns: exact, with no E[x²] − mean² to cancel.
        var = column_var.view(tiles, c).mean(0) * ((n - 1) / n) + (means - mean).square_().mean(0)
        with torch.no_grad():
            running_mean.lerp_(mean, momentum)
            running_var.lerp_(var * (count / max(count - 1, 1)), momentum)  # unbiased, as PyTorch
        invstd = torch.rsqrt(var + eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        scale = weight * invstd
        return _per_channel_affine(x, scale, bias - mean * scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, mean, invstd = ctx.saved_tensors
        n, c, h, w = x.shape
        count, tiles = n * h * w, h * w
        dy = grad.contiguous(memory_format=torch.channels_last)
        # Per-column sums of dy·x_hat and dy (no d_x: PyTorch's would centre each column alone).
        _, column_d_weight, column_d_bias = torch.ops.aten.native_batch_norm_backward(
            _rows(dy), _rows(x), None, None, None, _tile(mean, tiles), _tile(invstd, tiles), True, 0.0,
            [False, True, True],
        )  # fmt: skip
        d_weight, d_bias = column_d_weight.view(tiles, c).sum(0), column_d_bias.view(tiles, c).sum(0)
        # d_x = weight·invstd·(dy − (d_bias + x_hat·d_weight)/count), x_hat = (x − mean)·invstd
        slope = -invstd * d_weight / count
        centred = _per_channel_affine(x, slope, -d_bias / count - mean * slope).add_(dy)
        return _per_channel_affine(centred, weight * invstd), d_weight, d_bias, None, None, None, None


def _per_channel_affine(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """x·scale + shift per channel: PyTorch's evaluation kernel (mean 0, variance 1, eps 0) over
    the row view, fp32 inside, returned in x's dtype and channels-last."""
    n, c, h, w = x.shape
    tiles, length = h * w, h * w * c
    rows = torch.batch_norm(
        _rows(x), _tile(scale, tiles), None if shift is None else _tile(shift, tiles), torch.zeros(length),
        torch.ones(length), False, 0.0, 0.0, False,
    )  # fmt: skip
    return rows.view(n, h, w, c).permute(0, 3, 1, 2)


def _tile(per_channel: torch.Tensor, tiles: int) -> torch.Tensor:
    """A per-channel vector repeated along a row of ``tiles`` pixels."""
    return per_channel.expand(tiles, -1).reshape(-1)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """A channels-last N×C×H×W tensor as its N×(H·W·C) memory, without a copy."""
    return x.permute(0, 2, 3, 1).view(x.shape[0], -1)
