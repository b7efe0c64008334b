"""``mnist-search`` end to end in a subprocess, and one-line errors with exit status 2."""

from __future__ import annotations

import shutil

import optuna
import pytest

from tests.conftest import DATA_DIR, run_cli

QUICK = ["--epochs", "1", "--train-subset", "1000", "--val-size", "1000", "--device", "cpu"]


def test_cli_end_to_end_then_rerun_adds_to_the_same_study(tmp_path):
    storage = f"sqlite:///{tmp_path}/check.db"
    first = run_cli("--space", "ffn", "--trials", "3", *QUICK, "--storage", storage)
    assert first.returncode == 0, first.stderr
    assert "seed baseline" in first.stdout and "99.4% target" in first.stdout
    assert "Traceback" not in first.stderr
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert len(study.trials) == 3 and study.trials[0].user_attrs["params"] == 53_962
    again = run_cli("--space", "ffn", "--trials", "5", *QUICK, "--storage", storage, "--quiet")
    assert again.returncode == 0, again.stderr
    assert len(optuna.load_study(study_name=summary.study_name, storage=storage).trials) == 5


def test_default_storage_is_sqlite_under_studies(tmp_path):
    result = run_cli("--space", "ffn", "--trials", "1", *QUICK, "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "studies" / "mnist-search.db").is_file()


def _corrupt_data(tmp_path):
    raw = tmp_path / "corrupt" / "MNIST" / "raw"
    shutil.copytree(DATA_DIR / "MNIST" / "raw", raw)
    target = raw / "train-labels-idx1-ubyte.gz"
    target.chmod(0o644)
    target.write_bytes(target.read_bytes()[:1000])
    return str(tmp_path / "corrupt")


BAD_INPUTS = {
    "unknown space": (["--space", "resnet"], "unknown space 'resnet'"),
    "zero trials": (["--space", "ffn", "--trials", "0"], "--trials"),
    "negative trials": (["--space", "ffn", "--trials", "-3"], "--trials"),
    "trials not a number": (["--space", "ffn", "--trials", "many"], "not a whole number"),
    "epochs over the family cap": (["--space", "gap_cnn", "--epochs", "21"], "outside 1..20"),
    "params over the family cap": (["--space", "gap_cnn", "--max-params", "25000"], "over the cap"),
    "missing data dir": (["--space", "ffn", "--data-dir", "/nonexistent/mnist"], "does not exist"),
    "malformed storage URL": (["--space", "ffn", "--storage", "notadb://x/y"], "cannot open storage"),
    "sqlite for several processes": (["--space", "ffn", "--jobs", "2", "--storage", "sqlite:///x.db"], "not safe"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gets_one_line_error_and_exit_2(case, tmp_path):
    args, message = BAD_INPUTS[case]
    result = run_cli(*args, "--no-download", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_corrupt_mnist_file_is_named_in_the_error(tmp_path):
    result = run_cli("--space", "ffn", "--data-dir", _corrupt_data(tmp_path), "--no-download", cwd=tmp_path)
    assert result.returncode == 2
    assert "train-labels-idx1-ubyte.gz is corrupt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_files_in_an_existing_dir_say_where_they_are_expected(tmp_path):
    result = run_cli("--space", "ffn", "--data-dir", str(tmp_path), "--no-download", cwd=tmp_path)
    assert result.returncode == 2
    assert f"MNIST files missing in {tmp_path}/MNIST/raw" in result.stderr
