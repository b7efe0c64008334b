"""The CPU's fast path: which CPUs run bf16 natively, when bf16 pays, and the swap of the fast
layers (``search.dropout``, ``search.batch_norm``) into a model.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from search.batch_norm import FastBatchNorm2d
from search.dropout import FastDropout

# oneDNN keeps a compiled primitive per layer shape; a search makes new shapes every trial, and at
# its default capacity (1024) the cache held ~600 MB more after 1,000 bf16 matmul shapes on the dev
# CPU. 128 holds a trial's own shapes many times over (docs/benchmarks.md). Read at its first use.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "128")
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
