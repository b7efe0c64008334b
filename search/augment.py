"""Light random augmentation as one batched affine warp on the training device."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_ROTATION_DEG = 15.0
MAX_SHIFT = 0.1  # fraction of the image side
MAX_SCALE = 0.1


def random_affine(x: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate, shift and scale each image of ``x`` (N×1×H×W in [0, 1], black background).

    Draws from the default generator unless given one: CUDA graphs replay only that one's draws.
    """
    n = x.shape[0]

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(n, device=x.device, generator=generator) * 2 - 1) * limit * strength

    angle = uniform(math.radians(MAX_ROTATION_DEG))
    scale = 1 + uniform(MAX_SCALE)
    shift_x, shift_y = uniform(2 * MAX_SHIFT), uniform(2 * MAX_SHIFT)  # grid coordinates span 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
