"""When the CPU trains in bf16: only where its instructions are native, and only for models big
enough to gain from it."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Below this many forward FLOPs per image, bf16's casts cost more than its faster matmuls
# (dev CPU, ffn configs: 0.11 MFLOP 0.81x, 0.54 MFLOP 1.03x, 1.86 MFLOP 1.44x; docs/benchmarks.md).
BF16_MIN_FLOPS = 1_000_000


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
