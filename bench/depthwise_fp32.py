"""A separable block's step on the CPU with its depthwise conv in bf16 and in fp32.

The rule in ``search.cpu.depthwise`` (which depthwise convs the bf16 step runs in fp32) rests on
this: for each shape, a depthwise conv, a 1×1 conv and a ReLU, forward and backward under bf16
autocast in channels-last, timed with PyTorch's conv and with ``Fp32DepthwiseConv2d``, each arm
twice in turn, the faster of its two runs kept.

    python bench/depthwise_fp32.py --shapes 64x40x24x5 128x20x28x3 --steps 30
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from search.cpu import Fp32DepthwiseConv2d, configure_process

# batch x channels x side x kernel: study 6's separable trials and the zoo's 8k net, 3×3 and 5×5.
SHAPES = ("128x20x28x3", "128x36x28x3", "128x42x14x3", "64x24x26x3", "64x40x24x3",
          "128x20x28x5", "128x36x28x5", "128x42x14x5", "64x16x24x5", "64x40x24x5", "64x40x12x5")  # fmt: skip


def step_ms(batch: int, channels: int, side: int, kernel: int, fp32: bool, steps: int) -> float:
    """Milliseconds per forward and backward step, after 5 steps of warm-up."""
    torch.manual_seed(0)
    depthwise = nn.Conv2d(channels, channels, kernel, padding="same", groups=channels, bias=False)
    if fp32:
        depthwise = Fp32DepthwiseConv2d.like(depthwise)
    block = nn.Sequential(depthwise, nn.Conv2d(channels, channels, 1), nn.ReLU()).to(memory_format=torch.channels_last)
    x = torch.randn(batch, channels, side, side).to(torch.bfloat16).to(memory_format=torch.channels_last)
    x.requires_grad_()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = block(x)
        out.float().sum().backward()

    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), metavar="NxCxSIDExK", help="default: %(default)s")
    p.add_argument("--steps", type=int, default=30, help="timed steps per run (default: %(default)s)")
    args = p.parse_args()
    configure_process(torch.device("cpu"))
    for shape in args.shapes:
        batch, channels, side, kernel = (int(part) for part in shape.split("x"))
        runs: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(2):
            for fp32 in (False, True):
                runs[fp32].append(step_ms(batch, channels, side, kernel, fp32, args.steps))
        bf16_ms, fp32_ms = min(runs[False]), min(runs[True])
        row = {"shape": shape, "bf16_ms": bf16_ms, "fp32_depthwise_ms": fp32_ms, "ratio": bf16_ms / fp32_ms}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
