"""Hostile or malformed files given to predict and export-model: checkpoints, configs, studies and
images are checked before use, nothing read from a file imports code, and every refusal is one line
(CPU, untrained tiny models: no data, no training)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import pickle
import struct
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

import search.export_model
import search.predict
from search.cli import main
from search.export import export, load_record
from search.model import load_checkpoint
from search.predict import read_images
from search.results import study_target
from spaces import get_space
from spaces.errors import UserError
from tests.test_plugins import MY_SPACE

CONFIG = get_space("ffn").baselines[0]
ONE = np.zeros((28, 28), dtype=np.uint8)
ONE[4:24, 12:16] = 255  # a white "1" on black, as MNIST draws digits


def save_checkpoint(path: Path, space: str = "ffn", config: dict | None = None, network=None, **overrides) -> Path:
    """A checkpoint as retrain writes it (search/retrain.py _save_artifacts), from an untrained network."""
    config = config or CONFIG
    torch.manual_seed(0)
    network = network or get_space(space).build(config)
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    torch.save({"state_dict": state, "space": space, "config": config} | overrides, path)
    return path


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    return save_checkpoint(tmp_path / "ffn.pt")


@pytest.fixture
def digit(tmp_path) -> Path:
    path = tmp_path / "one.png"
    Image.fromarray(ONE, mode="L").save(path)
    return path


def cli(capsys, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, *args: object) -> str:
    """Run the CLI and demand the one-line refusal: exit 2, nothing on stdout, one line on stderr."""
    code, out, err = cli(capsys, *args)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (code, out, err)
    return err


# 1. Data never names code.


@pytest.fixture
def evil_module(tmp_path, monkeypatch) -> Path:
    """A module in the current folder that leaves a mark if anything imports it."""
    marker = tmp_path / "imported"
    (tmp_path / "guard_evilmod.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nfrom spaces import get_space\nSPACE = get_space('ffn')\n"
    )
    monkeypatch.chdir(tmp_path)
    yield marker
    sys.modules.pop("guard_evilmod", None)


@pytest.mark.parametrize("command", ["predict", "export-model"])
def test_a_checkpoint_naming_a_module_imports_nothing(command, evil_module, tmp_path, digit, capsys):
    ffn = get_space("ffn").build(CONFIG)
    bad = save_checkpoint(tmp_path / "evil.pt", space="guard_evilmod:SPACE", network=ffn)
    zen = save_checkpoint(tmp_path / "zen.pt", space="this:s", network=ffn)
    rest = [digit] if command == "predict" else ["--format", "torchscript", "--out", tmp_path / "x.pt"]
    for path, spec in ((bad, "guard_evilmod:SPACE"), (zen, "this:s")):
        err = refused(capsys, command, path, *rest)
        assert f"pass --space '{spec}'" in err and "neither built in nor installed" in err
    assert not evil_module.exists() and "this" not in sys.modules


def test_an_exported_config_or_a_study_naming_a_module_imports_nothing(evil_module, tmp_path, capsys):
    config = tmp_path / "trial.json"
    config.write_text(json.dumps({"space": "guard_evilmod:SPACE", "config": CONFIG}))
    err = refused(capsys, "retrain", config, "--seeds", "0", "--no-download")
    assert "pass --space 'guard_evilmod:SPACE'" in err
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("space", "guard_evilmod:SPACE")
    study.add_trial(optuna.trial.create_trial(value=0.9, user_attrs={"config": CONFIG}))
    with pytest.raises(UserError, match="pass --space"):
        export(study, out_dir=tmp_path / "out")
    with pytest.raises(UserError, match="pass --space"):
        study_target(study)  # a study without a recorded target falls back to its space's
    assert not evil_module.exists()


@pytest.fixture
def plugin(tmp_path, monkeypatch) -> str:
    (tmp_path / "guard_tiny.py").write_text(textwrap.dedent(MY_SPACE))
    monkeypatch.chdir(tmp_path)
    yield "guard_tiny:SPACE"
    sys.modules.pop("guard_tiny", None)


def test_a_plugin_space_from_a_file_is_used_only_when_passed_as_space(plugin, tmp_path, digit, capsys):
    space = get_space(plugin)  # as the user's own --space imports it
    path = save_checkpoint(tmp_path / "tiny.pt", plugin, space.baselines[0])
    assert f"pass --space '{plugin}'" in refused(capsys, "predict", path, digit)
    assert "not --space 'ffn'" in refused(capsys, "predict", path, digit, "--space", "ffn")
    code, out, err = cli(capsys, "predict", path, digit, "--space", plugin)
    assert code == 0 and out.startswith(f"{digit}: "), err
    record = tmp_path / "tiny.json"
    record.write_text(json.dumps({"space": plugin, "config": space.baselines[0]}))
    with pytest.raises(UserError, match="pass --space"):
        load_record(record)
    assert load_record(record, trusted=plugin)["space"] == plugin
    assert "not --space 'cnn'" in refused(capsys, "export-model", path, "--format", "torchscript", "--space", "cnn")


# 2. Everything in a checkpoint is checked before use.

WIDE = CONFIG | {"width_0": 2048}  # past ffn's 1024: the config gate, not a shape mismatch, must refuse it


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lambda: [1, 2, 3], "it holds a list, not a dict"),
        (lambda: {"state_dict": {}, "config": CONFIG}, "names no space"),
        (lambda: {"state_dict": {}, "config": CONFIG, "space": 7}, "names no space (its 'space' is int"),
        (lambda: {"state_dict": {}, "config": [1], "space": "ffn"}, "its 'config' is list, not a dict"),
        (lambda: {"state_dict": {"a": 1}, "config": CONFIG, "space": "ffn"}, "not a dict of named tensors"),
        (lambda: {"state_dict": {}, "config": CONFIG | {"evil": 1}, "space": "ffn"}, "unknown keys: 'evil'"),
        (lambda: {"state_dict": get_space("ffn").build(WIDE).state_dict(), "config": WIDE, "space": "ffn"}, "2048"),
        (lambda: {"state_dict": {}, "config": CONFIG, "space": "ffn"}, "weights do not fit its config"),
        (
            lambda: {
                "state_dict": get_space("ffn").build(CONFIG | {"width_0": 65}).state_dict(),
                "config": CONFIG,
                "space": "ffn",
            },
            "weights do not fit its config",
        ),  # fmt: skip
    ],
)
def test_every_part_of_a_checkpoint_is_checked(content, message, tmp_path, digit, capsys):
    path = tmp_path / "bad.pt"
    torch.save(content(), path)
    err = refused(capsys, "predict", path, digit)
    assert message in err and "is not an mnist-search checkpoint" in err or "names no space" in err, err


# 3. Non-checkpoints: one line, never PyTorch's own advice.


class Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def _torch_zip_with_code() -> bytes:
    buffer = io.BytesIO()
    torch.save({"space": "ffn", "x": Payload()}, buffer)  # a real torch zip whose pickle calls a function
    return buffer.getvalue()


def _random_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "hello")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(lambda: pickle.dumps(Payload()), id="pickle"),
        pytest.param(_torch_zip_with_code, id="torch-zip-with-code"),
        pytest.param(_random_zip, id="random-zip"),
        pytest.param(lambda: b"", id="empty"),
        pytest.param(lambda: b"\x89PNG\r\n\x1a\n" + bytes(64), id="png"),
        pytest.param(None, id="folder"),
    ],
)
@pytest.mark.parametrize("command", ["predict", "export-model"])
def test_a_file_that_is_not_a_checkpoint_is_one_line(command, content, tmp_path, digit, capsys):
    path = tmp_path / "model.pt"
    path.mkdir() if content is None else path.write_bytes(content())
    rest = [digit] if command == "predict" else ["--format", "torchscript"]
    err = refused(capsys, command, path, *rest)
    assert "not an mnist-search checkpoint" in err or "not a file" in err
    assert "weights_only" not in err and "pwned" not in err


# 4. Inputs are told apart by content; 5. pictures; 6. arrays.


def _idx(images: np.ndarray, kind: int = 0x08) -> bytes:
    return bytes([0, 0, kind, images.ndim]) + struct.pack(f">{images.ndim}I", *images.shape) + images.tobytes()


def test_inputs_are_told_apart_by_content_not_name(tmp_path):
    png = tmp_path / "my_idx_digit.png"
    Image.fromarray(ONE, mode="L").save(png)
    assert np.array_equal(read_images(png), ONE[None])
    batch = np.stack([ONE, 255 - ONE])
    for name, content in [
        ("digits.png", _npy(batch)),
        ("images.bin", _idx(batch)),
        ("images.dat", gzip.compress(_idx(batch))),
        ("batch.gz", gzip.compress(_npy(batch))),
    ]:
        (tmp_path / name).write_bytes(content)
        assert np.array_equal(read_images(tmp_path / name), batch), name


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lambda: _idx(np.zeros(5, dtype=np.uint8)), "1-dimensional IDX file (labels?)"),
        (lambda: _idx(np.zeros((1, 4, 4), dtype=">f4"), kind=0x0D), "IDX file of type 0x0d"),
        (lambda: _idx(np.zeros((2, 28, 28), dtype=np.uint8))[:-5], "truncated"),
        (lambda: gzip.compress(bytes(4096)), "expands past"),
        (lambda: gzip.compress(_idx(ONE[None]))[:-12], "truncated gzip"),
        (lambda: gzip.compress(gzip.compress(b"x")), "gzip inside gzip"),
        (lambda: b"", "is empty"),
    ],
)
def test_a_bad_array_or_archive_is_one_line(content, message, tmp_path, checkpoint, capsys, monkeypatch):
    monkeypatch.setattr(search.predict, "MAX_BYTES", 2048)
    path = tmp_path / "input"
    path.write_bytes(content())
    assert message in refused(capsys, "predict", checkpoint, path)


def _transparent(mode: str, ink: int) -> Image.Image:
    """The digit drawn only in the alpha channel, in one colour ``ink``."""
    alpha = Image.fromarray(ONE, mode="L")
    if mode == "LA":
        return Image.merge("LA", (Image.new("L", (28, 28), ink), alpha))
    rgba = Image.merge("RGBA", (*[Image.new("L", (28, 28), ink)] * 3, alpha))
    if mode == "P":  # a palette picture with a transparent index, as GIF-like PNGs have
        palette = Image.new("P", (28, 28), 1)
        palette.putpalette([0, 0, 0, ink, ink, ink] + [0] * 762)
        palette.paste(0, mask=Image.fromarray(255 - ONE, mode="L"))
        palette.info["transparency"] = 0
        return palette
    return rgba


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
@pytest.mark.parametrize("ink", [0, 255])
def test_a_digit_drawn_in_the_alpha_channel_is_read(mode, ink, tmp_path):
    path = tmp_path / "alpha.png"
    _transparent(mode, ink).save(path)
    assert np.array_equal(read_images(path)[0], ONE)  # white on black, whatever the ink and background


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 10))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lambda: _png_header(20_000, 20_000), "larger than 67,108,864 pixels"),  # PIL's bomb error
        (lambda: _png_header(10_000, 10_000), "larger than 67,108,864 pixels"),  # PIL's bomb warning
        (lambda: _png_header(28, 28), "cannot read"),  # truncated pixel data
        (lambda: b"GIF89a" + bytes(20), "cannot read"),
    ],
)
def test_a_huge_or_broken_picture_is_one_line(content, message, tmp_path, checkpoint, capsys):
    path = tmp_path / "picture.png"
    path.write_bytes(content())
    assert message in refused(capsys, "predict", checkpoint, path)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.stack([ONE, ONE]).astype(np.float64), "floats from 0 to 255"),
        (np.full((1, 28, 28), np.nan, dtype=np.float32), "NaN or infinite"),
        (np.full((1, 28, 28), -0.5, dtype=np.float32), "divide by 255"),
        (np.full((1, 28, 28), 300, dtype=np.int64), "integers must lie in 0-255"),
        (np.zeros((1, 28, 28), dtype=bool), "expected uint8"),
        (np.zeros((0, 28, 28), dtype=np.uint8), "holds no images"),
    ],
)
def test_an_out_of_range_array_is_one_line(array, message, tmp_path, checkpoint, capsys):
    path = tmp_path / "batch.npy"
    np.save(path, array)
    assert message in refused(capsys, "predict", checkpoint, path)


def test_integers_within_0_255_read_as_uint8(tmp_path):
    np.save(tmp_path / "ints.npy", np.stack([ONE, 255 - ONE]).astype(np.int64))
    images = read_images(tmp_path / "ints.npy")
    assert images.dtype == np.uint8 and np.array_equal(images[0], ONE)


# 7. predict --csv.


def test_csv_quotes_file_names_and_prints_nothing_before_an_error(tmp_path, checkpoint, capsys):
    names = ["a,b.png", 'say "one".png', "two\nlines.png"]
    for name in names:
        Image.fromarray(ONE, mode="L").save(tmp_path / name, format="PNG")
    code, out, err = cli(capsys, "predict", checkpoint, *[tmp_path / n for n in names], "--csv")
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["input", "index", "digit", "probability"]
    assert [r[0] for r in rows[1:]] == [str(tmp_path / n) for n in names]
    np.save(tmp_path / "bad.npy", np.full((1, 28, 28), 255.0))
    refused(capsys, "predict", checkpoint, tmp_path / names[0], tmp_path / "bad.npy", "--csv")


# 8. and 9. export-model: the output location, repeated flags, missing checkpoints.


def test_export_model_writes_into_a_folder(tmp_path, checkpoint, capsys):
    (tmp_path / "models").mkdir()
    for out in (tmp_path / "models", f"{tmp_path / 'new'}/"):
        code, printed, err = cli(capsys, "export-model", checkpoint, "--format", "torchscript", "--out", out)
        assert code == 0, err
        written = Path(printed.strip())
        assert written == Path(out) / "ffn.torchscript.pt" and written.is_file()
    scripted = torch.jit.load(str(written))
    assert torch.allclose(
        scripted(torch.from_numpy(ONE[None])), load_checkpoint(checkpoint)(torch.from_numpy(ONE[None]))
    )


def test_export_model_checks_its_output_before_exporting(tmp_path, checkpoint, capsys, monkeypatch):
    def no_export(*_args, **_kwargs):
        raise AssertionError("exported before checking --out")

    monkeypatch.setattr(search.export_model.torch.jit, "script", no_export)
    (tmp_path / "file").write_text("")
    assert "is a file, not a folder" in refused(capsys, "export-model", checkpoint, "--format", "torchscript",
                                                "--out", tmp_path / "file" / "m.pt")  # fmt: skip
    assert "the checkpoint itself" in refused(capsys, "export-model", checkpoint, "--format", "torchscript",
                                              "--out", checkpoint)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "onnx", "--format", "torchscript"], "--format: given twice"),
        (["--format", "torchscript", "--out", "a", "--out", "b"], "--out: given twice"),
        (["--format", "torchscript", "--space", "ffn", "--space", "cnn"], "--space: given twice"),
    ],
)
def test_export_model_refuses_a_flag_given_twice(args, message, checkpoint, capsys):
    assert message in refused(capsys, "export-model", checkpoint, *args)


def test_export_model_of_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    err = refused(capsys, "export-model", tmp_path / "missing.pt", "--format", "torchscript", "--out", tmp_path / "o")
    assert "does not exist" in err and not (tmp_path / "o").exists()


# Found by the red team of issue 20.


@pytest.mark.parametrize("value", [float("nan"), 1e30])
@pytest.mark.parametrize("command", ["predict", "export-model"])
def test_a_checkpoint_whose_weights_are_not_finite_or_overflow_is_refused(value, command, tmp_path, digit, capsys):
    network = get_space("ffn").build(CONFIG)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.fill_(value)
    path = save_checkpoint(tmp_path / "broken.pt", network=network)
    rest = [digit] if command == "predict" else ["--format", "torchscript", "--out", tmp_path / "x.pt"]
    err = refused(capsys, command, path, *rest)
    assert "NaN or infinite weights" in err or "overflow" in err
    assert not (tmp_path / "x.pt").exists()


def test_a_npy_header_claiming_more_than_the_file_holds_is_one_line(tmp_path, checkpoint, capsys):
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': (100000000, 28, 28), }"
    header = header + " " * (118 - len(header)) + "\n"
    path = tmp_path / "huge.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(1000))
    for target in (path, tmp_path / "huge.npy.gz"):
        if target.suffix == ".gz":
            target.write_bytes(gzip.compress(path.read_bytes()))
        assert "header claims 78,400,000,000 bytes" in refused(capsys, "predict", checkpoint, target)


def test_an_interrupt_inside_the_onnx_exporter_stays_an_interrupt(checkpoint, monkeypatch):
    def wrapped_interrupt(model):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise RuntimeError("Failed to export the model with torch.export") from interrupt

    monkeypatch.setattr(search.export_model, "_export_onnx", wrapped_interrupt)
    with pytest.raises(KeyboardInterrupt):
        search.export_model._onnx_bytes(load_checkpoint(checkpoint))
    monkeypatch.setattr(search.export_model, "_export_onnx", lambda model: 1 / 0)
    with pytest.raises(UserError, match="the ONNX export failed"):
        search.export_model._onnx_bytes(load_checkpoint(checkpoint))
