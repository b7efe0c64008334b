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
from spaces import recorded_space
from spaces.errors import UserError, first_line

ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format is a zip archive


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


def load_checkpoint(path: Path | str, space: str | None = None) -> Classifier:
    """Rebuild a retrained model in eval mode, checking everything the file holds before using it.

    ``weights_only=True``, so unpickling cannot run code; the recorded space must be built in or
    installed, or equal ``space`` (the user's ``--space``); the config passes the space's own checks,
    parameter budget included, before any layer is allocated; the weights load strictly.
    """
    path = Path(path)
    checkpoint = _read(path)
    where = f"{path} is not an mnist-search checkpoint"
    if not isinstance(checkpoint, dict):
        raise UserError(f"{where} (it holds a {type(checkpoint).__name__}, not a dict)")
    resolved = recorded_space(checkpoint.get("space"), f"checkpoint {path}", space)
    config, state = checkpoint.get("config"), checkpoint.get("state_dict")
    if not isinstance(config, dict):
        raise UserError(f"{where} (its 'config' is {type(config).__name__}, not a dict)")
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise UserError(f"{where} (its 'state_dict' is not a dict of named tensors)")
    try:
        resolved.check_config(config)
    except UserError as error:
        raise UserError(f"{where} ({first_line(error)})") from None
    if any(v.is_floating_point() and not torch.isfinite(v).all() for v in state.values()):
        raise UserError(f"{where} (it holds NaN or infinite weights: the training that wrote it diverged)")
    network = resolved.build(config)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:  # missing, unexpected or misshapen weights
        detail = " ".join(str(error).split())
        detail = detail if len(detail) <= 300 else detail[:297] + "..."
        raise UserError(f"{where} (its weights do not fit its config: {detail})") from None
    model = Classifier(network).eval()
    with torch.inference_mode():
        if not torch.isfinite(model(torch.zeros(2, 28, 28, dtype=torch.uint8))).all():
            raise UserError(f"{where} (its weights overflow: a blank image gets no finite probabilities)")
    return model


def _read(path: Path) -> object:
    """``torch.load`` of a file that at least looks like PyTorch's zip format; anything else is refused
    before torch sees it, and torch's own message (which suggests weights_only=False) never shows."""
    if not path.is_file():
        raise UserError(
            f"checkpoint {path} does not exist or is not a file; pass a .pt written by mnist-search retrain"
        )
    try:
        with path.open("rb") as file:
            magic = file.read(len(ZIP_MAGIC))
    except OSError as error:
        raise UserError(f"cannot read checkpoint {path} ({error.strerror}); check its permissions") from None
    if magic != ZIP_MAGIC:
        raise UserError(f"{path} is not an mnist-search checkpoint (not PyTorch's zip format)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a hostile file; all mean "not ours"
        raise UserError(
            f"{path} is not an mnist-search checkpoint (torch cannot read it as plain weights: {type(error).__name__})"
        ) from None
