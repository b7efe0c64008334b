"""``mnist-search predict MODEL INPUT...``: classify images with a retrained checkpoint.

Inputs are told apart by their content, never their names: ``.npy`` arrays of N×28×28 (uint8
0-255, integers within 0-255, or finite floats within 0-1), IDX files of uint8 N×28×28 images,
either of them gzipped, and pictures PIL reads (PNG, JPEG, ...; up to ``MAX_PIXELS``), made 28×28
grayscale: transparency is laid on a background that contrasts with the drawing, and a dark digit
on a light background is inverted to MNIST's white on black.
"""

from __future__ import annotations

import io
import math
import re
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from search.data import parse_idx
from search.model import Classifier
from spaces.errors import UserError, first_line

SIDE = 28
BATCH = 2048
MAX_BYTES = 512 * 2**20  # an input file, or what a gzipped one holds: 60k float64 images fit in 360 MiB
MAX_PIXELS = 8192 * 8192  # a picture's width × height; past this it is refused before decoding
NPY_MAGIC = b"\x93NUMPY"
GZIP_MAGIC = b"\x1f\x8b"
IDX_UINT8 = 0x08


@dataclass(frozen=True)
class Prediction:
    source: str
    index: int  # the image's place within its file (0 for a single image)
    digit: int
    probability: float
    picture: bool = False  # a single picture, not an array or IDX file


def read_images(path: Path) -> np.ndarray:
    """N×28×28 uint8 (or float 0-1) images from one input file, whatever its name."""
    return _read(path)[0]


def _read(path: Path) -> tuple[np.ndarray, bool]:
    """The images of one input, and whether it was a single picture (shown without an index)."""
    if not path.is_file():
        raise UserError(f"input {path} does not exist or is not a file")
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise UserError(f"input {path} is {size // 2**20} MiB; inputs are read up to {MAX_BYTES // 2**20} MiB")
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"cannot read input {path} ({error.strerror}); check its permissions") from None
    if data.startswith(GZIP_MAGIC):
        data = _gunzip(data, path)
        if data.startswith(GZIP_MAGIC):
            raise UserError(f"{path} is gzip inside gzip; decompress it once and pass the result")
    return _decode(data, path)


def _decode(data: bytes, path: Path) -> tuple[np.ndarray, bool]:
    if not data:
        raise UserError(f"input {path} is empty")
    if data.startswith(NPY_MAGIC):
        return _from_npy(data, path), False
    if data[:2] == b"\x00\x00" and len(data) >= 4:
        return _from_idx(data, path), False
    return _from_picture(data, path)[None], True


def _gunzip(data: bytes, path: Path) -> bytes:
    """The gzip member's content, refused past ``MAX_BYTES`` (a small file may expand a thousandfold)."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        content = inflater.decompress(data, MAX_BYTES + 1)
    except zlib.error as error:
        raise UserError(f"{path} is not valid gzip ({error})") from None
    if len(content) > MAX_BYTES:
        raise UserError(f"{path} expands past {MAX_BYTES // 2**20} MiB; pass fewer images per file")
    if not inflater.eof:
        raise UserError(f"{path} is a truncated gzip file")
    return content


def _from_idx(data: bytes, path: Path) -> np.ndarray:
    kind, ndim = data[2], data[3]
    if kind != IDX_UINT8:
        raise UserError(f"{path} is an IDX file of type 0x{kind:02x}; only uint8 images (type 0x08) are read")
    if ndim != 3:
        raise UserError(f"{path} is a {ndim}-dimensional IDX file (labels?); expected N×28×28 images")
    images = parse_idx(data, path)
    if images.shape[1:] != (SIDE, SIDE):
        raise UserError(f"{path} holds IDX images of {images.shape[1]}×{images.shape[2]}; expected 28×28")
    return _some(images, path)


def _from_npy(data: bytes, path: Path) -> np.ndarray:
    _check_npy_size(data, path)
    try:
        images = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, EOFError, MemoryError) as error:
        raise UserError(f"cannot read {path} as a .npy array: {first_line(error)}") from None
    images = images[None] if images.ndim == 2 else images
    images = images[:, 0] if images.ndim == 4 and images.shape[1] == 1 else images
    if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
        raise UserError(f"{path} holds an array of shape {images.shape}; expected N×28×28 or N×1×28×28")
    _some(images, path)
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all():
            raise UserError(f"{path} holds NaN or infinite values; pass finite floats in 0-1 (or uint8 0-255)")
        low, high = float(images.min()), float(images.max())
        if low < 0 or high > 1:
            raise UserError(
                f"{path} holds floats from {low:g} to {high:g}; floats must lie in 0-1: divide by 255, or save uint8"
            )
        return images.astype(np.float32)
    if np.issubdtype(images.dtype, np.integer):  # 0-255 as int64 (np.array of a list) means what uint8 means
        low, high = int(images.min()), int(images.max())
        if low < 0 or high > 255:
            raise UserError(f"{path} holds {images.dtype} from {low} to {high}; integers must lie in 0-255")
        return images.astype(np.uint8)
    raise UserError(f"{path} holds {images.dtype}; expected uint8 (0-255) or floats (0-1)")


def _check_npy_size(data: bytes, path: Path) -> None:
    """The size the header claims must be the bytes that follow: a header may claim terabytes."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(stream)
    except (OSError, ValueError, EOFError, TypeError) as error:
        raise UserError(f"cannot read {path} as a .npy array: {first_line(error)}") from None
    if dtype.hasobject:
        raise UserError(f"{path} holds Python objects; save a numeric array")
    claimed = math.prod(shape) * dtype.itemsize
    if claimed != len(data) - stream.tell():
        raise UserError(
            f"{path}'s header claims {claimed:,} bytes of data, but {len(data) - stream.tell():,} follow; the file is "
            "damaged or not a .npy array"
        )


def _some(images: np.ndarray, path: Path) -> np.ndarray:
    if len(images) == 0:
        raise UserError(f"{path} holds no images")
    return images


def _from_picture(data: bytes, path: Path) -> np.ndarray:
    try:
        with warnings.catch_warnings():  # PIL's bomb warning becomes the refusal below, not a second line
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as picture:
                if picture.width * picture.height > MAX_PIXELS:
                    raise Image.DecompressionBombError
                gray = _grayscale(picture)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(
            f"{path} is larger than {MAX_PIXELS:,} pixels (8192×8192), the most predict decodes; scale it down"
        ) from None
    except Exception as error:  # noqa: BLE001 - PIL's decoders raise many types for a bad file; all mean "not a picture"
        reason = first_line(error).replace(repr(error.args[0]) if error.args else "", "").strip()
        reason = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", str(path), reason)
        raise UserError(f"cannot read {path} as an image ({type(error).__name__}: {reason})") from None
    if gray.size != (SIDE, SIDE):
        gray = gray.resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    pixels = np.array(gray, dtype=np.uint8)  # a copy: torch warns on read-only arrays
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return 255 - pixels if border.mean() > 127 else pixels  # MNIST: a white digit on black


def _grayscale(picture: Image.Image) -> Image.Image:
    """8-bit grayscale; a transparent picture is first laid on white if what is drawn is dark, else on
    black, so a digit drawn only in the alpha channel stays visible."""
    if picture.mode == "P" and "transparency" in picture.info:
        picture = picture.convert("RGBA")
    if picture.mode not in ("RGBA", "RGBa", "LA", "La", "PA"):
        return picture.convert("L")
    rgba = picture.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float64) / 255
    gray = np.asarray(rgba.convert("L"), dtype=np.float64)
    ink = (gray * alpha).sum() / max(alpha.sum(), 1e-9)  # the drawing's mean shade, weighted by opacity
    background = 255.0 if ink < 128 else 0.0
    return Image.fromarray(np.rint(gray * alpha + background * (1 - alpha)).astype(np.uint8), mode="L")


def read_inputs(paths: Sequence[Path]) -> list[tuple[Path, np.ndarray, bool]]:
    """Every input read and checked, each with whether it was a single picture, before any is predicted."""
    return [(path, *_read(path)) for path in paths]


def predict_images(model: Classifier, inputs: Sequence[tuple[Path, np.ndarray, bool]]) -> Iterator[Prediction]:
    for path, array, picture in inputs:
        images = torch.from_numpy(np.ascontiguousarray(array))
        with torch.inference_mode():
            for start in range(0, len(images), BATCH):
                probabilities = model(images[start : start + BATCH])
                best, digits = probabilities.max(dim=1)
                for offset, (digit, p) in enumerate(zip(digits.tolist(), best.tolist(), strict=True)):
                    yield Prediction(str(path), start + offset, digit, p, picture)


def predict_files(model: Classifier, paths: Sequence[Path]) -> Iterator[Prediction]:
    """Predictions for every image of ``paths``, all of them read and checked first."""
    return predict_images(model, read_inputs(paths))
