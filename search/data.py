"""MNIST as whole-dataset uint8 tensors on the training device.

Batches are drawn by index and normalised on the fly: no ``DataLoader``, no per-sample PIL
transforms. The search objective reads only the validation split carved from the 60k training
images; the 10k test set is read only by ``retrain``.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spaces.errors import UserError

DATA_ENV = "MNIST_SEARCH_DATA"
DEFAULT_DATA_DIR = "./data"
# torchvision's own file list and MD5s (torchvision.datasets.MNIST.resources).
FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}
TRAIN_IMAGES = 60_000  # the MD5-checked training file's
MEAN, STD = 0.1307, 0.3081  # the usual MNIST pixel statistics, as in every seed document
DOWNLOAD_TIMEOUT_S = 15


@dataclass(frozen=True)
class Tensors:
    """Images (uint8, N×28×28) and labels (int64, N), both on one device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> Tensors:
        return Tensors(self.images.to(device), self.labels.to(device))

    def select(self, index: torch.Tensor) -> Tensors:
        return Tensors(self.images[index], self.labels[index])


@dataclass(frozen=True)
class Mnist:
    train: Tensors
    test: Tensors


@dataclass(frozen=True)
class Split:
    """How the validation split is carved from the training set; recorded in every study."""

    val_size: int = 10_000
    seed: int = 0
    train_subset: int | None = None

    def as_attrs(self) -> dict[str, int | None]:
        return {"val_size": self.val_size, "split_seed": self.seed, "train_subset": self.train_subset}

    @classmethod
    def from_attrs(cls, attrs: Any, where: str) -> Split:
        """The split a loaded record names, in ``as_attrs``'s keys, checked; a record with none (a
        config written by hand) or a key left empty gets a search's default there."""
        if attrs is None:
            return cls()
        keys = ("val_size", "split_seed", "train_subset")
        if not isinstance(attrs, Mapping) or not set(attrs) <= set(keys):
            raise UserError(f"{where}: 'split' must be an object with only the keys {', '.join(keys)}")
        for key in keys:
            value = attrs.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise UserError(f"{where}: split.{key} must be a whole number of 0 or more, got {value!r}")
        default = cls()
        val_size = default.val_size if attrs.get("val_size") is None else attrs["val_size"]
        seed = default.seed if attrs.get("split_seed") is None else attrs["split_seed"]
        subset = attrs.get("train_subset")
        if not 0 < val_size < TRAIN_IMAGES:
            raise UserError(f"{where}: split.val_size must be between 1 and {TRAIN_IMAGES - 1:,}, got {val_size}")
        if seed >= 2**63:
            raise UserError(f"{where}: split.split_seed must be below 2**63, got {seed}")
        if subset is not None and not 0 < subset <= TRAIN_IMAGES - val_size:
            room = TRAIN_IMAGES - val_size
            raise UserError(f"{where}: split.train_subset must be between 1 and {room:,}, got {subset}")
        return cls(val_size, seed, subset)


def resolve_data_dir(flag: str | None) -> Path:
    """``--data-dir``, else ``$MNIST_SEARCH_DATA``, else ``./data``."""
    return Path(flag or os.environ.get(DATA_ENV) or DEFAULT_DATA_DIR).expanduser()


def raw_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "MNIST" / "raw"


def load_mnist(data_dir: Path | str, download: bool = True) -> Mnist:
    """Read the four IDX files from ``<data_dir>/MNIST/raw/`` after checking their MD5s.

    Missing files are downloaded through torchvision when ``download`` is set, but only into a
    folder that exists or is the default: a mistyped ``--data-dir`` fails instead of downloading.
    """
    data_dir = Path(data_dir)
    raw = raw_dir(data_dir)
    if not data_dir.is_dir() and data_dir != Path(DEFAULT_DATA_DIR):
        raise UserError(
            f"data dir {data_dir} does not exist; pass --data-dir (or set ${DATA_ENV}) to the "
            "folder that holds MNIST/raw/"
        )
    missing = [name for name, _ in FILES.values() if not (raw / name).is_file()]
    if missing and all((data_dir / name).is_file() for name in missing):
        # --data-dir .../MNIST/raw: the files are right here, one level too deep for torchvision's layout.
        raise UserError(
            f"{data_dir} holds the MNIST files itself; pass --data-dir {data_dir.parent.parent} "
            "(the folder that holds MNIST/raw/)"
        )
    tried = ""
    if missing and download:
        tried = _download(data_dir)
        missing = [name for name, _ in FILES.values() if not (raw / name).is_file()]
    if missing:
        raise UserError(
            f"MNIST files missing in {raw}: {', '.join(missing)}{tried}; put the four original files "
            f"there, or point --data-dir / ${DATA_ENV} at a folder that holds MNIST/raw/"
        )
    arrays = {}
    for key, (name, md5) in FILES.items():
        blob = (raw / name).read_bytes()
        digest = hashlib.md5(blob).hexdigest()
        if digest != md5:
            raise UserError(
                f"{raw / name} is corrupt or truncated (MD5 {digest}, expected {md5}); "
                "replace it with the original file"
            )
        arrays[key] = parse_idx(gzip.decompress(blob), raw / name)
    return Mnist(
        train=Tensors(torch.from_numpy(arrays["train_images"]), torch.from_numpy(arrays["train_labels"])),
        test=Tensors(torch.from_numpy(arrays["test_images"]), torch.from_numpy(arrays["test_labels"])),
    )


def parse_idx(data: bytes, path: Path) -> np.ndarray:
    # IDX: magic 0x0000 08 <ndim>, then ndim big-endian uint32 sizes, then uint8 data.
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or data[3] not in (1, 3):
        raise UserError(f"{path} is not an MNIST IDX file")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise UserError(f"{path} is truncated")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != math.prod(shape):
        raise UserError(f"{path} is truncated")
    array = array.reshape(shape)
    return array.astype(np.int64) if ndim == 1 else array.copy()


def _download(data_dir: Path) -> str:
    """torchvision's usual download; returns why it failed (for the "missing" error), or ""."""
    from torchvision.datasets import MNIST

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        MNIST(root=str(data_dir), download=True)
    except Exception as error:  # noqa: BLE001 - any network failure ends in the one-line "missing" error
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return f" (a download was tried and failed: {reason[:160]})"
    finally:
        socket.setdefaulttimeout(previous)
    return ""


def split_train_val(train: Tensors, split: Split) -> tuple[Tensors, Tensors]:
    """A fixed, seeded validation split of the training set, then an optional training subset."""
    n = len(train)
    if not 0 < split.val_size < n:
        raise UserError(f"--val-size must be between 1 and {n - 1}, got {split.val_size}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split.seed))
    val_index, train_index = order[: split.val_size], order[split.val_size :]
    if split.train_subset is not None:
        if not 0 < split.train_subset <= len(train_index):
            raise UserError(f"--train-subset must be between 1 and {len(train_index)}, got {split.train_subset}")
        train_index = train_index[: split.train_subset]
    return train.select(train_index), train.select(val_index)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×28×28 to float N×1×28×28 in [0, 1]; augmentation runs before standardising."""
    return images.unsqueeze(1).float().div_(255.0)


def standardise(x: torch.Tensor) -> torch.Tensor:
    return x.sub_(MEAN).div_(STD)
