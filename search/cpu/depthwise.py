"""A depthwise convolution that runs in fp32 inside the CPU's bf16 step.

oneDNN's bf16 depthwise kernels at 5×5, their backward above all, are slower than its fp32 ones,
while a full convolution gains from bf16: the step keeps bf16 everywhere else and does its large
depthwise convs in fp32. At 3×3 the casts cost more than fp32 saves, so those stay in bf16 (both
timed in docs/benchmarks.md, "The 5×5 depthwise convs in fp32"). The values are those of an
``nn.Conv2d`` computed in fp32; the output stays fp32, and autocast casts it for the next op.
"""

from __future__ import annotations

import math
from typing import TypeGuard, cast

import torch
from torch import nn

FP32_MIN_KERNEL_AREA = 25  # 5×5 and up


def gains_from_fp32(conv: nn.Module) -> TypeGuard[nn.Conv2d]:
    """A plain ``nn.Conv2d`` with one filter per input channel, more than one channel, and a
    kernel of ``FP32_MIN_KERNEL_AREA`` taps or more."""
    return (
        type(conv) is nn.Conv2d
        and conv.groups > 1
        and conv.groups == conv.in_channels == conv.out_channels
        and math.prod(conv.kernel_size) >= FP32_MIN_KERNEL_AREA
    )


class Fp32DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` (depthwise) that leaves a CPU autocast region to compute in fp32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
            return super().forward(x)
        with torch.autocast("cpu", enabled=False):
            return super().forward(x.float())

    @classmethod
    def like(cls, conv: nn.Conv2d) -> Fp32DepthwiseConv2d:
        """A copy of ``conv`` (same shape, weights, device and mode) of this class."""
        pair = tuple[int, int]  # what a Conv2d holds, typed as any convolution's
        fast = cls(
            conv.in_channels,
            conv.out_channels,
            cast(pair, conv.kernel_size),
            cast(pair, conv.stride),
            cast(str | pair, conv.padding),
            cast(pair, conv.dilation),
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        fast.load_state_dict(conv.state_dict())
        fast.train(conv.training)
        return fast
