"""Your own spaces: package.module:NAME, entry points, and the example LeNet-5 outside the package,
through search, export, retrain and report as a user runs them (CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import DATA_DIR, REPO, run_cli

QUICK = ["--epochs", "1", "--train-subset", "1000", "--val-size", "1000", "--device", "cpu", "--no-download"]


@pytest.mark.parametrize(
    "statement", ["import spaces", "from spaces.base import Space", "import search", "from spaces import get_space"]
)
def test_each_package_imports_first_in_a_fresh_interpreter(statement):
    result = subprocess.run([sys.executable, "-c", statement], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_search_train_is_the_module_only():
    code = "import search, search.train, types; assert isinstance(search.train, types.ModuleType); search.train.train"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_lenet5_example_goes_through_search_export_retrain_and_report(tmp_path):
    storage, spec = f"sqlite:///{tmp_path}/s.db", "examples.lenet5:SPACE"
    searched = run_cli("--space", spec, "--trials", "3", *QUICK, "--storage", storage, cwd=tmp_path)
    assert searched.returncode == 0, searched.stderr
    assert "seed baseline" in searched.stdout and "99.05% target (LeCun et al. (1998)" in searched.stdout
    untrusted = run_cli("export", "--storage", storage, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert untrusted.returncode == 2 and f"pass --space '{spec}'" in untrusted.stderr, untrusted.stderr
    # The study records a module to import: only the user's own --space lets export import it.
    exported = run_cli("export", "--storage", storage, "--study-name", f"{spec}-e1-n1000", "--space", spec,
                       "--out", str(tmp_path / "out"), cwd=tmp_path)  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    config = exported.stdout.split()[0]
    record = json.loads(open(config).read())
    assert record["space"] == spec and "examples/lenet5.py" in record["space_source"]
    assert record["target"] == 0.9905 and record["architecture"][0]["type"] == "Conv2d"
    retrain = ["retrain", config, "--seeds", "0", "--device", "cpu", "--no-download", "--out", str(tmp_path / "out"),
               "--search-split"]  # fmt: skip
    untrusted = run_cli(*retrain, cwd=tmp_path)
    assert untrusted.returncode == 2 and f"pass --space '{spec}'" in untrusted.stderr, untrusted.stderr
    retrained = run_cli(*retrain, "--space", spec, cwd=tmp_path)
    assert retrained.returncode == 0, retrained.stderr
    assert "| 99.05% |" in retrained.stdout
    checkpoint = retrained.stdout.split("model card: ")[1].strip().replace(".model-card.md", "-seed0.pt")
    assert f"predict {checkpoint} --space {spec} " in open(checkpoint.replace("-seed0.pt", ".model-card.md")).read()
    digits = tmp_path / "digits.npy"
    np.save(digits, np.zeros((2, 28, 28), dtype=np.uint8))
    assert "pass --space" in run_cli("predict", checkpoint, str(digits), cwd=tmp_path).stderr
    predicted = run_cli("predict", checkpoint, str(digits), "--space", spec, cwd=tmp_path)
    assert predicted.returncode == 0 and predicted.stdout.count(f"{digits}[") == 2, predicted.stderr
    reported = run_cli("report", "--storage", storage, "--out", str(tmp_path / "r.html"), cwd=tmp_path)
    assert reported.returncode == 0, reported.stderr
    assert "99.05% target" in (tmp_path / "r.html").read_text()


MY_SPACE = """
from spaces.base import Space, mlp, suggest_training

def suggest(trial, budget):
    config = {"width": trial.suggest_int("width", 8, 64)}
    return config | suggest_training(trial, budget, optimizers=("adam",), lr=(1e-3, 1e-2), batch_sizes=(128,),
                                     schedules=("none",), min_epochs=1)

SPACE = Space(name="tiny", description="one hidden layer", suggest=suggest,
              build=lambda c: mlp([c["width"]], batch_norm=False, dropout=0.0, log_softmax=False),
              baselines=({"width": 32, "optimizer": "adam", "lr": 3e-3, "batch_size": 128, "epochs": 1,
                          "schedule": "none"},),
              model_keys=frozenset({"width"}), max_epochs=3, target=0.95, target_reason="a stated goal")
NOT_A_SPACE = 42
"""


def test_a_space_in_a_module_of_my_own_runs_like_a_built_in_one(tmp_path):
    (tmp_path / "myspace.py").write_text(textwrap.dedent(MY_SPACE))
    storage = f"sqlite:///{tmp_path}/s.db"
    result = run_cli("--space", "myspace:SPACE", "--trials", "2", *QUICK, "--storage", storage, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "95% target (a stated goal)" in result.stdout


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nowhere.at_all:SPACE", "cannot import the module of space nowhere.at_all:SPACE"),
        ("myspace:MISSING", "module 'myspace' defines no 'MISSING'"),
        ("myspace:NOT_A_SPACE", "is a int, not a spaces.base.Space"),
        ("resnet", "unknown space 'resnet'; choose one of: ffn, fcn, cnn, gap_cnn"),
    ],
)
def test_a_space_that_cannot_be_loaded_is_one_line(spec, message, tmp_path):
    (tmp_path / "myspace.py").write_text(textwrap.dedent(MY_SPACE))
    result = run_cli("--space", spec, *QUICK, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_installed_package_registers_its_space_through_the_entry_point_group(tmp_path):
    site = tmp_path / "site"
    (site / "tiny_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "tiny_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tiny-plugin\nVersion: 1.0\n"
    )
    (site / "tiny_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[mnist_search.spaces]\ntiny = tiny_plugin:SPACE\n"
    )
    (site / "tiny_plugin.py").write_text(textwrap.dedent(MY_SPACE))
    env = os.environ | {"PYTHONPATH": f"{REPO}{os.pathsep}{site}", "MNIST_SEARCH_DATA": str(DATA_DIR)}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "search.cli", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip

    assert "tiny" in cli("--help").stdout
    assert "choose one of: ffn, fcn, cnn, gap_cnn, tiny" in cli("--space", "nope", *QUICK).stderr
    result = cli("--space", "tiny", "--trials", "1", *QUICK, "--storage", f"sqlite:///{tmp_path}/s.db")
    assert result.returncode == 0, result.stderr
    assert "tiny_plugin.py" in json.dumps(
        __import__("optuna").load_study(study_name="tiny-e1-n1000", storage=f"sqlite:///{tmp_path}/s.db").user_attrs
    )
