"""The CPU's fast path, in one place: which CPUs run bf16 natively and when bf16 pays
(``precision``), the fast layers (``dropout``, ``batch_norm``, ``depthwise``) and their swap into
a model (``swap``), and the process-wide settings CPU training wants (``process``, ``allocator``).

``search.profile`` is the one user of the layers and the precision rule; the entry points call
``configure_process``.
"""

from __future__ import annotations

from search.cpu.batch_norm import FastBatchNorm2d
from search.cpu.depthwise import Fp32DepthwiseConv2d
from search.cpu.dropout import FastDropout
from search.cpu.precision import BF16_MIN_FLOPS, cpu_has_native_bf16, forward_flops
from search.cpu.process import configure_process
from search.cpu.swap import swap_cpu_modules

__all__ = [
    "BF16_MIN_FLOPS",
    "FastBatchNorm2d",
    "FastDropout",
    "Fp32DepthwiseConv2d",
    "configure_process",
    "cpu_has_native_bf16",
    "forward_flops",
    "swap_cpu_modules",
]
