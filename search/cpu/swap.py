"""The fast CPU layers swapped into a model in place of PyTorch's, with the same values."""

from __future__ import annotations

from torch import nn

from search.cpu.batch_norm import FastBatchNorm2d
from search.cpu.dropout import FastDropout


def swap_cpu_modules(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Dropout`` with a ``FastDropout`` of the same p and every
    ``nn.BatchNorm2d`` with a ``FastBatchNorm2d`` holding the same values (same state_dict keys),
    in ``model`` itself: ``search.profile`` calls it on its own copy."""
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
