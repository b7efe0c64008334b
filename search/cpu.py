"""The CPU's fast path: which CPUs run bf16 natively, and a dropout that does not wait on the RNG.

PyTorch's CPU dropout draws one Bernoulli sample per element from a single-threaded generator; in
a GAP CNN's bf16 step that cost more than the convolutions (docs/benchmarks.md). The dropout here
takes one seed per call from PyTorch's generator (so ``torch.manual_seed`` still fixes every mask)
and expands it with SplitMix64, a counter-based generator that is a handful of vectorised integer
ops on all cores; each 64-bit word gives four 16-bit slices, each compared with the drop
probability (rounded to a multiple of 2**-16).
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

_SLICES = 4  # 16-bit slices per 64-bit word
_LEVELS = 1 << 16
# oneDNN keeps a compiled primitive per layer shape; a search makes new shapes every trial, and at
# its default capacity (1024) the cache held ~600 MB more after 1,000 bf16 matmul shapes on the dev
# CPU. 128 holds a trial's own shapes many times over (docs/benchmarks.md). Read at its first use.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "128")
# Below this many forward FLOPs per image, bf16's casts cost more than its faster matmuls
# (dev CPU, ffn configs: 0.11 MFLOP 0.81x, 0.54 MFLOP 1.03x, 1.86 MFLOP 1.44x; docs/benchmarks.md).
BF16_MIN_FLOPS = 1_000_000
# SplitMix64's constants (Steele, Lea and Flood, 2014) as signed 64-bit integers.
_GOLDEN, _MIX1, _MIX2 = -7046029254386353131, -4658895280553007687, -7723592293110705685


def cpu_has_native_bf16() -> bool:
    """From the flags the kernel reports (Linux: AVX512-BF16 or AMX-BF16); elsewhere assume not."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = set(cpuinfo.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def forward_flops(model: nn.Module) -> int:
    """FLOPs of one image's forward pass (matmuls and convolutions), counted by PyTorch."""
    was_training = model.training
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(torch.zeros(1, 1, 28, 28, device=next(model.parameters()).device))
    model.train(was_training)
    return counter.get_total_flops()


class FastDropout(nn.Module):
    """``nn.Dropout`` for training on the CPU (identity in eval mode, scaled by 1/(1-p) in training)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        # A 16-bit slice is uniform on -32768..32767: below this, its element is dropped.
        self.threshold = round(p * _LEVELS) - _LEVELS // 2
        self.scale = 1.0 / (1.0 - p) if p < 1 else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        n = x.numel()
        words = splitmix64((n + _SLICES - 1) // _SLICES, int(torch.randint(-(2**62), 2**62, ())))
        # Laid out like x (channels-last or not): the mask is i.i.d., so any order is as good.
        bits = words.view(torch.int16)[:n].as_strided(x.shape, x.stride())
        return x * (bits >= self.threshold).to(x.dtype).mul_(self.scale)  # the mask in x's dtype: no promotion


def splitmix64(count: int, seed: int) -> torch.Tensor:
    """``count`` pseudo-random 64-bit words: SplitMix64's outputs for counters 0..count-1 from ``seed``.
    Shifts are logical (masked), multiplications wrap, as in the reference."""
    z = torch.arange(count, dtype=torch.int64).mul_(_GOLDEN).add_(seed)
    z ^= (z >> 30) & ((1 << 34) - 1)
    z *= _MIX1
    z ^= (z >> 27) & ((1 << 37) - 1)
    z *= _MIX2
    z ^= (z >> 31) & ((1 << 33) - 1)
    return z


def swap_dropout(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Dropout`` in ``model`` with a ``FastDropout`` of the same p (no weights change)."""
    for name, child in model.named_children():
        if type(child) is nn.Dropout:
            setattr(model, name, FastDropout(child.p))
        else:
            swap_dropout(child)
    return model
