"""``mnist-search predict MODEL INPUT...``: classify images with a retrained checkpoint.

Inputs: PNG or JPEG files of any size (made 28×28 grayscale; a dark digit on a light background is
inverted to MNIST's white on black), IDX files (``.gz`` or not), or ``.npy`` arrays of N×28×28
(uint8 0-255 or float 0-1).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from search.data import parse_idx
from search.errors import UserError
from search.model import Classifier

SIDE = 28
BATCH = 2048


@dataclass(frozen=True)
class Prediction:
    source: str
    index: int  # the image's place within its file (0 for a single image)
    digit: int
    probability: float


def read_images(path: Path) -> np.ndarray:
    """N×28×28 uint8 (or float 0-1) images from one input file."""
    if not path.is_file():
        raise UserError(f"input {path} does not exist or is not a file")
    name = path.name.lower()
    if name.endswith(".npy"):
        return _from_npy(path)
    if "idx" in name or "ubyte" in name:
        data = path.read_bytes()
        images = parse_idx(gzip.decompress(data) if name.endswith(".gz") else data, path)
        if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
            raise UserError(f"{path} holds labels or other shapes, not 28×28 images")
        return images
    return _from_picture(path)[None]


def _from_npy(path: Path) -> np.ndarray:
    try:
        images = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {path} as a .npy array: {error}") from None
    images = images[None] if images.ndim == 2 else images
    images = images[:, 0] if images.ndim == 4 and images.shape[1] == 1 else images
    if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
        raise UserError(f"{path} holds an array of shape {images.shape}; expected N×28×28 or N×1×28×28")
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise UserError(f"{path} holds {images.dtype}; expected uint8 (0-255) or floats (0-1)")
    return images


def _from_picture(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as picture:
            gray = picture.convert("L")
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(f"cannot read {path} as an image: {error}") from None
    if gray.size != (SIDE, SIDE):
        gray = gray.resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(gray, dtype=np.uint8)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return 255 - pixels if border.mean() > 127 else pixels  # MNIST: a white digit on black


def predict_files(model: Classifier, paths: Sequence[Path]) -> Iterator[Prediction]:
    for path in paths:
        images = torch.from_numpy(np.ascontiguousarray(read_images(path)))
        with torch.inference_mode():
            for start in range(0, len(images), BATCH):
                probabilities = model(images[start : start + BATCH])
                best, digits = probabilities.max(dim=1)
                for offset, (digit, p) in enumerate(zip(digits.tolist(), best.tolist(), strict=True)):
                    yield Prediction(str(path), start + offset, digit, p)
