"""A retrained model as one module people can use: raw images in, class probabilities out.

``Classifier`` takes uint8 images (0-255) or float images (0-1), N×28×28 or N×1×28×28, applies
MNIST's standardisation itself and returns softmax probabilities, so a caller (or a serving stack
loading the TorchScript or ONNX file) never has to know how the network was trained.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from search.data import MEAN, STD
from search.errors import UserError
from spaces import get_space


class Classifier(nn.Module):
    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.mean, self.std = MEAN, STD  # attributes, so TorchScript and ONNX carry them

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if images.dtype == torch.uint8:
            x = x / 255.0
        if x.dim() == 3:
            x = x.unsqueeze(1)
        logits = self.network((x - self.mean) / self.std)
        return torch.softmax(logits.float(), dim=1)  # log-probabilities (LogSoftmax heads) give the same


def load_checkpoint(path: Path | str) -> Classifier:
    """Rebuild a retrained model in eval mode; ``weights_only=True``, so a checkpoint cannot run code."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        network = get_space(checkpoint["space"]).build(checkpoint["config"])
        network.load_state_dict(checkpoint["state_dict"])
    except UserError:
        raise
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as error:
        raise UserError(f"{path} is not an mnist-search checkpoint ({type(error).__name__}: {error})") from None
    return Classifier(network).eval()
