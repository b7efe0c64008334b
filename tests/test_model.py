"""A model people can use: the self-contained module, predict, TorchScript and ONNX, the model card (CPU)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from search.model import Classifier, load_checkpoint
from search.profile import DeviceProfile
from search.train import predict
from spaces import get_space
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def retrained(tmp_path_factory, data_dir):
    """A seed-000 ffn retrained for 2 epochs on all 60k images, measured on the 10k test set."""
    folder = tmp_path_factory.mktemp("model")
    config = get_space("ffn").baselines[0] | {"epochs": 2}
    path = folder / "ffn.json"
    path.write_text(json.dumps({"space": "ffn", "study": "ffn", "trial": 0, "config": config, "epochs": 2}))
    result = run_cli("retrain", str(path), "--seeds", "0", "--device", "cpu", "--precision", "fp32",
                     "--out", str(folder / "out"), "--no-download", cwd=folder, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    accuracy = float(result.stdout.split("| fp32 | ")[1].split("%")[0]) / 100
    return folder, folder / "out" / "ffn-trial0-seed0.pt", accuracy


def test_the_checkpoint_is_one_module_from_raw_images_to_probabilities(retrained, mnist):
    _, checkpoint, accuracy = retrained
    model = load_checkpoint(checkpoint)
    assert isinstance(model, Classifier) and not model.training
    images = mnist.test.images  # uint8 N×28×28
    with torch.inference_mode():
        from_uint8 = model(images)
        from_float = model(images.float().div(255).unsqueeze(1))
    assert from_uint8.shape == (10_000, 10) and torch.allclose(from_uint8.sum(1), torch.ones(10_000), atol=1e-5)
    assert torch.allclose(from_uint8, from_float, atol=1e-6)
    hits = (from_uint8.argmax(1) == mnist.test.labels).float().mean().item()
    assert hits == pytest.approx(accuracy, abs=5e-5)  # retrain's own test accuracy, to its printed precision
    fp32 = DeviceProfile.resolve(torch.device("cpu"), "fp32")
    assert torch.equal(from_uint8.argmax(1), predict(model.network, mnist.test, fp32))


def test_predict_reads_pngs_of_any_size_and_polarity_and_matches_retrain(retrained, mnist, tmp_path):
    _, checkpoint, _ = retrained
    n = 300
    paths = []
    for i in range(n):
        pixels = mnist.test.images[i].numpy()
        picture = Image.fromarray(pixels, mode="L")
        if i % 3 == 1:
            picture = Image.fromarray(255 - pixels, mode="L")  # black on white, as people write
        path = tmp_path / f"digit{i}.png"
        picture.save(path)
        paths.append(str(path))
    big = tmp_path / "big.jpg"
    Image.fromarray(255 - mnist.test.images[0].numpy(), mode="L").resize((280, 280)).save(big, quality=95)
    result = run_cli("predict", str(checkpoint), *paths, str(big), "--csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [line.split(",") for line in result.stdout.strip().splitlines()[1:]]
    digits = [int(r[2]) for r in rows]
    expected = load_checkpoint(checkpoint)(mnist.test.images[:n]).argmax(1).tolist()
    assert digits[:n] == expected  # the PNGs, inverted or not, give what the model gives the tensors
    assert digits[n] == expected[0]  # a 280×280 dark-on-light JPEG of the first digit
    assert all(0.1 <= float(r[3]) <= 1 for r in rows)


def test_predict_reads_idx_and_npy_batches(retrained, mnist, tmp_path, data_dir):
    _, checkpoint, _ = retrained
    np.save(tmp_path / "batch.npy", mnist.test.images[:50].numpy().astype(np.float32) / 255)
    idx = data_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    result = run_cli("predict", str(checkpoint), str(tmp_path / "batch.npy"), str(idx), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 50 + 10_000 and lines[0].startswith(f"{tmp_path / 'batch.npy'}[0]: ")
    bad = run_cli("predict", str(checkpoint), str(tmp_path / "missing.png"), cwd=tmp_path)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_torchscript_and_onnx_files_match_pytorch_on_the_test_set(retrained, mnist, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="the [onnx] extra (.ci/run installs it)")
    _, checkpoint, _ = retrained
    model = load_checkpoint(checkpoint)
    with torch.inference_mode():
        reference = model(mnist.test.images)
    for fmt in ("torchscript", "onnx"):
        out = tmp_path / f"model.{fmt}"
        result = run_cli("export-model", str(checkpoint), "--format", fmt, "--out", str(out), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    scripted = torch.jit.load(str(tmp_path / "model.torchscript"))
    with torch.inference_mode():
        from_script = scripted(mnist.test.images)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    floats = mnist.test.images.float().div(255).unsqueeze(1).numpy()
    from_onnx = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: floats})[0])
    for probabilities in (from_script, from_onnx):
        assert torch.equal(probabilities.argmax(1), reference.argmax(1))
        assert (probabilities - reference).abs().max().item() < 1e-4


def test_each_retrain_writes_a_model_card(retrained):
    folder, checkpoint, accuracy = retrained
    card = (folder / "out" / "ffn-trial0.model-card.md").read_text()
    assert card.startswith("# Model card: ffn-trial0")
    assert f"{accuracy:.2%} ± 0.00% over seeds 0" in card and "97.3% target" in card
    assert "**Precision**: fp32" in card and "torch " in card and '"width_0": 64' in card
    assert card.count("\n") > 30 and "precision    recall" in card.replace("  precision", "precision")
    assert f"mnist-search predict {checkpoint}" in card


def test_onnx_export_without_the_extra_says_how_to_install_it(retrained, tmp_path):
    _, checkpoint, _ = retrained
    code = (
        "import sys, importlib.util; real = importlib.util.find_spec;"
        "importlib.util.find_spec = lambda n, *a: None if n == 'onnx' else real(n, *a);"
        "from search.cli import main; sys.exit(main(['export-model', sys.argv[1], '--format', 'onnx']))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(checkpoint)], capture_output=True, text=True)
    assert result.returncode == 2 and "pip install 'mnist-search[onnx]'" in result.stderr
