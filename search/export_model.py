"""``mnist-search export-model CHECKPOINT --format torchscript|onnx``: a file serving stacks load.

Both carry the MNIST standardisation inside and return class probabilities. The TorchScript file
takes what ``Classifier`` takes (uint8 0-255 or float 0-1, N×28×28 or N×1×28×28); the ONNX file
takes float32 N×1×28×28 in 0-1 with any N (ONNX fixes one input type).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import torch

from search.files import check_writable_dir, write_atomic
from search.model import Classifier, load_checkpoint
from spaces.errors import UserError, first_line

FORMATS = {"torchscript": ".torchscript.pt", "onnx": ".onnx"}
ONNX_OPSET = 18


def export_model(checkpoint: Path, fmt: str, out: Path | str | None = None, space: str | None = None) -> Path:
    """Write ``checkpoint`` as ``fmt`` to ``out`` (a file, or a folder for the default name); ``space``:
    the user's --space, trusting a plugin space the checkpoint records. Returns the file written."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fmt == "onnx":
        missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
        if missing:
            raise UserError(
                f"ONNX export needs {' and '.join(missing)}: pip install 'mnist-search[onnx]' (or pip install onnx "
                "onnxscript onnxruntime)"
            )
    checkpoint = Path(checkpoint)
    model = load_checkpoint(checkpoint, space)  # a bad checkpoint creates no --out folder
    target = output_path(checkpoint, fmt, out)  # before the export, which takes seconds
    if fmt == "torchscript":
        with warnings.catch_warnings():  # asked for by name: PyTorch's deprecation notice is not news here
            warnings.filterwarnings("ignore", category=FutureWarning, message=r"`torch\.jit")
            scripted = torch.jit.script(model)
            return write_atomic(target, lambda file: torch.jit.save(scripted, file))
    return write_atomic(target, lambda file: file.write(_onnx_bytes(model)))


def _onnx_bytes(model: Classifier) -> bytes:
    """The ONNX file's bytes. torch's exporter turns a Ctrl-C inside it into its own error: that is
    raised again as the interrupt it was, and any other export failure is one line."""
    try:
        return _export_onnx(model)
    except Exception as error:  # noqa: BLE001 - the exporter wraps whatever went wrong in its own types
        cause: BaseException | None = error
        while cause is not None:
            if isinstance(cause, KeyboardInterrupt):
                raise cause from None
            cause = cause.__cause__ or cause.__context__
        raise UserError(f"the ONNX export failed ({type(error).__name__}: {first_line(error)})") from None


def output_path(checkpoint: Path, fmt: str, out: Path | str | None) -> Path:
    """Where the export goes, checked writable: ``out`` itself, or the default name inside a folder
    ``out`` (one that exists, or is written with a trailing slash), or beside the checkpoint."""
    default = checkpoint.name.removesuffix(".pt") + FORMATS[fmt]
    if out is None:
        target = checkpoint.with_name(default)
    elif Path(out).is_dir() or str(out).endswith(("/", os.sep)):
        target = Path(out) / default
    else:
        target = Path(out)
    check_writable_dir(target.parent, "--out")
    if target.is_dir():
        raise UserError(f"--out {target} is a folder; pass a file name, or a folder without {target.name}")
    if target.exists() and checkpoint.exists() and target.samefile(checkpoint):
        raise UserError(f"--out {target} is the checkpoint itself; pass another file name")
    return target


def _export_onnx(model: Classifier) -> bytes:
    example = torch.rand(2, 1, 28, 28)
    program = torch.onnx.export(
        model,
        (example,),
        input_names=["images"],
        output_names=["probabilities"],
        dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
        opset_version=ONNX_OPSET,
        dynamo=True,
        verbose=False,
    )
    if program is None:  # only without dynamo=True
        raise UserError("torch.onnx.export returned no program; update torch")
    return program.model_proto.SerializeToString()
