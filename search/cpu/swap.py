"""The fast CPU layers swapped into a model in place of PyTorch's, with the same values."""

from __future__ import annotations

from torch import nn

from search.cpu.batch_norm import FastBatchNorm2d
from search.cpu.depthwise import Fp32DepthwiseConv2d, gains_from_fp32
from search.cpu.dropout import FastDropout


def swap_cpu_modules(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Dropout`` with a ``FastDropout`` of the same p, every ``nn.BatchNorm2d``
    with a ``FastBatchNorm2d``, and every depthwise ``nn.Conv2d`` of 5×5 or more with an
    ``Fp32DepthwiseConv2d``, holding the same values (same state_dict keys), in ``model`` itself:
    ``search.profile`` calls it on its own copy."""
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
        elif gains_from_fp32(child):
            setattr(model, name, Fp32DepthwiseConv2d.like(child))
        else:
            swap_cpu_modules(child)
    return model
