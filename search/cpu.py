"""The CPU's fast path: which CPUs run bf16 natively, and a dropout that does not wait on the RNG.

PyTorch's CPU dropout draws one Bernoulli sample per element from a single-threaded generator,
which cost more than the convolutions of a GAP CNN step in bf16 (docs/benchmarks.md). The dropout
here draws one 64-bit word per four elements and compares 16-bit slices of it with the keep
probability: the same mask distribution up to a 2**-16 rounding of p, a quarter of the draws.
"""

from __future__ import annotations

import torch
from torch import nn

_SLICES = 4  # 16-bit slices per 64-bit draw
_LEVELS = 1 << 16


def cpu_has_native_bf16() -> bool:
    """From the flags the kernel reports (Linux: AVX512-BF16 or AMX-BF16); elsewhere assume not."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = set(cpuinfo.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


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
        # Full-range draws: random_() with no bounds leaves the top bit of each word at 0.
        words = torch.empty((n + _SLICES - 1) // _SLICES, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
        # Laid out like x (channels-last or not): the mask is i.i.d., so any order is as good.
        bits = words.view(torch.int16)[:n].as_strided(x.shape, x.stride())
        return x * (bits >= self.threshold).to(x.dtype).mul_(self.scale)  # the mask in x's dtype: no promotion


def swap_dropout(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Dropout`` in ``model`` with a ``FastDropout`` of the same p (no weights change)."""
    for name, child in model.named_children():
        if type(child) is nn.Dropout:
            setattr(model, name, FastDropout(child.p))
        else:
            swap_dropout(child)
    return model
