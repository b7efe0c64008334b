"""``mnist-search export-model CHECKPOINT --format torchscript|onnx``: a file serving stacks load.

Both carry the MNIST standardisation inside and return class probabilities. The TorchScript file
takes what ``Classifier`` takes (uint8 0-255 or float 0-1, N×28×28 or N×1×28×28); the ONNX file
takes float32 N×1×28×28 in 0-1 with any N (ONNX fixes one input type).
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch

from search.errors import UserError
from search.files import check_writable_dir, write_atomic
from search.model import Classifier, load_checkpoint

FORMATS = {"torchscript": ".torchscript.pt", "onnx": ".onnx"}
ONNX_OPSET = 18


def export_model(checkpoint: Path, fmt: str, out: Path | None = None) -> Path:
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fmt == "onnx":
        missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
        if missing:
            raise UserError(
                f"ONNX export needs {' and '.join(missing)}: pip install 'mnist-search[onnx]' (or pip install onnx "
                "onnxscript onnxruntime)"
            )
    model = load_checkpoint(checkpoint)
    out = out or checkpoint.with_name(checkpoint.name.removesuffix(".pt") + FORMATS[fmt])
    check_writable_dir(out.parent, "--out")
    if fmt == "torchscript":
        with warnings.catch_warnings():  # asked for by name: PyTorch's deprecation notice is not news here
            warnings.filterwarnings("ignore", category=FutureWarning, message=r"`torch\.jit")
            scripted = torch.jit.script(model)
            return write_atomic(out, lambda file: torch.jit.save(scripted, file))
    return write_atomic(out, lambda file: file.write(_onnx_bytes(model)))


def _onnx_bytes(model: Classifier) -> bytes:
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
    return program.model_proto.SerializeToString()
