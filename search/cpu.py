"""The CPU's fast path: which CPUs run bf16 natively, a dropout that does not wait on the RNG, and
the swap of both fast layers into a model.

PyTorch's CPU dropout draws one Bernoulli sample per element from a single-threaded generator; in
a GAP CNN's bf16 step that cost more than the convolutions (docs/benchmarks.md). The dropout here
takes one seed per call from PyTorch's generator (so ``torch.manual_seed`` still fixes every mask)
and expands it with SplitMix64, a counter-based generator that is a handful of vectorised integer
ops on all cores; each 64-bit word gives four 16-bit slices, each compared with the drop
probability (rounded to a multiple of 2**-16). Tensors too small to gain use PyTorch's dropout.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from search.batch_norm import FastBatchNorm2d

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
# Below this many elements PyTorch's own dropout, one Bernoulli kernel, is faster than the dozen
# small ops here (docs/benchmarks.md).
SMALL_TENSOR = 8192
_SAME_SIZE_INT = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}


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
        if x.numel() < SMALL_TENSOR:
            return F.dropout(x, self.p, training=True)
        if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
            x = x.contiguous()
        n = x.numel()
        words = splitmix64((n + _SLICES - 1) // _SLICES, int(torch.randint(-(2**62), 2**62, ())))
        # The mask is written as the integer bit pattern of 0 or 1/(1-p) in x's dtype, and compared
        # straight into that integer type: a bool mask, converted to a float dtype or an integer
        # one, was the slowest step of all (docs/benchmarks.md).
        keep = torch.empty(n, dtype=_SAME_SIZE_INT[x.dtype])
        torch.ge(words.view(torch.int16)[:n], self.threshold, out=keep)
        mask = keep.mul_(_bit_pattern(self.scale, x.dtype)).view(x.dtype)
        # Laid out like x (channels-last or not): the mask is i.i.d., so any order is as good.
        return x * mask.as_strided(x.shape, x.stride())


def splitmix64(count: int, seed: int) -> torch.Tensor:
    """``count`` pseudo-random 64-bit words: SplitMix64's outputs for counters 0..count-1 from ``seed``.
    Shifts are logical (masked), multiplications wrap, as in the reference."""
    z = torch.arange(count, dtype=torch.int64).mul_(_GOLDEN).add_(seed)
    shifted = torch.empty_like(z)
    for shift, multiplier in ((30, _MIX1), (27, _MIX2), (31, None)):
        torch.bitwise_right_shift(z, shift, out=shifted)
        shifted.bitwise_and_((1 << (64 - shift)) - 1)  # in place: out of place, a 64-bit scalar takes a slow path
        z ^= shifted
        if multiplier is not None:
            z *= multiplier
    return z


@functools.lru_cache(maxsize=256)
def _bit_pattern(value: float, dtype: torch.dtype) -> int:
    """The bits of ``value`` in ``dtype``, as the signed integer of the same size."""
    return torch.tensor(value, dtype=dtype).view(_SAME_SIZE_INT[dtype]).item()


def swap_cpu_modules(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Dropout`` with a ``FastDropout`` of the same p and every
    ``nn.BatchNorm2d`` with a ``FastBatchNorm2d`` holding the same values (same state_dict keys)."""
    for name, child in model.named_children():
        if type(child) is nn.Dropout:
            setattr(model, name, FastDropout(child.p))
        elif type(child) is nn.BatchNorm2d:
            fast = FastBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            fast.load_state_dict(child.state_dict())
            fast.train(child.training)
            setattr(model, name, fast)
        else:
            swap_cpu_modules(child)
    return model
