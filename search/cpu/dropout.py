"""A dropout for training on the CPU, drawn on all cores.

PyTorch's CPU dropout draws one Bernoulli sample per element from a single-threaded generator; in
a GAP CNN's bf16 step that cost more than the convolutions (docs/benchmarks.md). Two faster ways,
each used where it measured faster: at small p on large tensors, the dropped positions are drawn
directly; elsewhere, a mask per element, compared from 16-bit uniforms.

The positions are drawn as the arrivals of a Bernoulli(p) process: the gap to the next drop
is a geometric variate, floor(log U / log(1 - p)), and the positions are the running sum of the
gaps. That is the same distribution as one independent draw per element, for about p·n draws
instead of n. The mask costs the same at any p: one comparison per element, written as the
integer bit pattern of 0 or 1/(1-p) in x's dtype (a bool mask converted to a float dtype was
the slowest op of all). The uniforms come from SplitMix64, a counter-based generator that is a handful of
vectorised integer ops on all cores, seeded once per call from PyTorch's generator (so
``torch.manual_seed`` still fixes every mask). Tensors too small to gain, and tensors on any other
device (the positions are drawn on the CPU), use PyTorch's dropout.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# SplitMix64's constants (Steele, Lea and Flood, 2014) as signed 64-bit integers.
_GOLDEN, _MIX1, _MIX2 = -7046029254386353131, -4658895280553007687, -7723592293110705685
# Below this many elements PyTorch's own dropout, one Bernoulli kernel, is faster than the dozen
# small ops here (docs/benchmarks.md).
SMALL_TENSOR = 1 << 14
# Positions beat the mask below this p on tensors of at least this many elements: forward and
# backward in bf16 on the dev CPU, 128x16x26x26 at p = 0.05 1.44x, 64x20x28x28 0.90x, and from
# p = 0.15 up the mask is as fast or faster at every size (docs/benchmarks.md).
POSITIONS_BELOW_P = 0.1
POSITIONS_MIN_ELEMENTS = 1_200_000
_SLICES, _LEVELS = 4, 1 << 16  # 16-bit uniforms per 64-bit word, and their levels
_SAME_SIZE_INT = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32}
# Draws made up front, in standard deviations of the drop count above its mean: more are drawn
# (the same stream, continued) in the rare call that needs them.
_SPARE_SIGMAS = 6


class FastDropout(nn.Module):
    """``nn.Dropout`` for training on the CPU (identity in eval mode, scaled by 1/(1-p) in training);
    on another device, PyTorch's own dropout."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu" or x.numel() < SMALL_TENSOR or self.p >= 1:
            return F.dropout(x, self.p, training=True)
        layout = torch.contiguous_format
        if not x.is_contiguous():
            layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else layout
        x = x.contiguous(memory_format=layout)  # dense: positions and masks index its memory in order
        seed = int(torch.randint(-(2**62), 2**62, ()))
        if self.p < POSITIONS_BELOW_P and x.numel() >= POSITIONS_MIN_ELEMENTS or x.dtype not in _SAME_SIZE_INT:
            positions = dropped_positions(x.numel(), self.p, seed)
            return _DropAt.apply(x, positions, 1.0 / (1.0 - self.p), layout)
        return x * dropout_mask(x, self.p, seed)


def dropout_mask(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """0 with probability ``p`` (to 1/65536), else 1/(1-p), per element of the dense tensor ``x``,
    laid out like it; the bits depend on ``seed`` alone."""
    n = x.numel()
    words = splitmix64((n + _SLICES - 1) // _SLICES, seed)
    threshold = round(p * _LEVELS) - _LEVELS // 2  # a 16-bit slice below it drops its element
    keep = torch.empty(n, dtype=_SAME_SIZE_INT[x.dtype])
    torch.ge(words.view(torch.int16)[:n], threshold, out=keep)
    scale_bits = torch.tensor(1.0 / (1.0 - p), dtype=x.dtype).view(keep.dtype).item()
    return keep.mul_(scale_bits).view(x.dtype).as_strided(x.shape, x.stride())


class _DropAt(torch.autograd.Function):
    """x·scale with the elements at ``positions`` (of x's memory, in order) set to zero."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, positions: torch.Tensor, scale: float, layout: torch.memory_format
    ) -> torch.Tensor:
        ctx.save_for_backward(positions)
        ctx.scale, ctx.layout = scale, layout
        return _scale_and_zero(x, positions, scale, layout)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (positions,) = ctx.saved_tensors
        return _scale_and_zero(grad, positions, ctx.scale, ctx.layout), None, None, None


def _scale_and_zero(
    x: torch.Tensor, positions: torch.Tensor, scale: float, layout: torch.memory_format
) -> torch.Tensor:
    out = torch.empty_like(x, memory_format=layout)
    torch.mul(x, scale, out=out)
    out.as_strided((out.numel(),), (1,)).index_fill_(0, positions, 0)
    return out


def dropped_positions(n: int, p: float, seed: int, draws: int | None = None) -> torch.Tensor:
    """The sorted positions in 0..n-1 that a Bernoulli(p) draw per position would drop.

    ``draws`` (rounded up to even) is how many gaps to draw at a time; the default covers the drop
    count with a wide margin, and any shortfall is drawn from the same stream, so the positions
    depend on ``seed`` alone.
    """
    expected = n * p
    draws = 2 * math.ceil((draws or expected + _SPARE_SIGMAS * math.sqrt(expected) + 16) / 2)
    log_keep = math.log1p(-p)
    found, last, word = [], -1, 0
    while last < n - 1:
        # Two 32-bit uniforms per word, mapped onto (0, 1], then the gaps to each next drop.
        halves = splitmix64(draws // 2, seed, first=word).view(torch.int32)
        word += draws // 2
        uniform = halves.to(torch.float64).add_(2**31 + 1).mul_(2**-32)
        steps = uniform.log_().div_(log_keep).floor_().add_(1).to(torch.int64)
        steps[0] += last
        positions = steps.cumsum_(0)
        inside = int(torch.searchsorted(positions, n))
        found.append(positions[:inside])
        if inside < len(positions):
            break
        last = int(positions[-1])
    return found[0] if len(found) == 1 else torch.cat(found)


def splitmix64(count: int, seed: int, first: int = 0) -> torch.Tensor:
    """``count`` pseudo-random 64-bit words: SplitMix64's outputs for counters first, first+1, ...
    from ``seed``. Shifts are logical (masked), multiplications wrap, as in the reference."""
    z = torch.arange(first, first + count, dtype=torch.int64).mul_(_GOLDEN).add_(seed)
    shifted = torch.empty_like(z)
    for shift, multiplier in ((30, _MIX1), (27, _MIX2), (31, None)):
        torch.bitwise_right_shift(z, shift, out=shifted)
        shifted.bitwise_and_((1 << (64 - shift)) - 1)  # in place: out of place, a 64-bit scalar takes a slow path
        z ^= shifted
        if multiplier is not None:
            z *= multiplier
    return z
