"""``mnist-search`` end to end in a subprocess, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import fields
from pathlib import Path

import optuna
import pytest

from search.storage import open_storage
from spaces import get_space
from tests.conftest import DATA_DIR, run_cli

QUICK = ["--epochs", "1", "--train-subset", "1000", "--val-size", "1000", "--device", "cpu"]


def test_cli_end_to_end_then_rerun_adds_to_the_same_study(tmp_path):
    storage = f"sqlite:///{tmp_path}/check.db"
    first = run_cli("--space", "ffn", "--trials", "3", *QUICK, "--storage", storage)
    assert first.returncode == 0, first.stderr
    assert "seed baseline" in first.stdout and "97.3% target (seed 000 reports 97.3% test accuracy)" in first.stdout
    assert "Traceback" not in first.stderr
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert len(study.trials) == 3 and study.trials[0].user_attrs["params"] == 53_962
    seconds = sum(t.user_attrs["seconds"] for t in study.trials)
    assert f"trained 3 epochs in {seconds:.0f} s of trials (0 s of them in trials pruned later)" in first.stdout
    again = run_cli("--space", "ffn", "--trials", "5", *QUICK, "--storage", storage, "--quiet")
    assert again.returncode == 0, again.stderr
    assert len(optuna.load_study(study_name=summary.study_name, storage=storage).trials) == 5


def test_default_storage_is_sqlite_under_studies(tmp_path):
    result = run_cli("--space", "ffn", "--trials", "1", *QUICK, "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    db = tmp_path / "studies" / "mnist-search.db"
    assert db.is_file()
    # The log was folded back into the file at exit: copying the .db alone copies the whole study.
    assert not db.with_name(db.name + "-wal").exists()
    assert _journal_mode(db) == "wal"


def test_read_only_sqlite_study_still_opens(tmp_path):
    """Write-ahead logging cannot be switched on through a read-only connection; such a study
    (a copy on read-only media, say) must still load."""
    db = tmp_path / "ro.db"
    optuna.create_study(study_name="s", storage=f"sqlite:///{db}").optimize(lambda t: t.suggest_float("x", 0, 1), 2)
    assert _journal_mode(db) == "delete"
    storage = open_storage(f"sqlite:///file:{db}?mode=ro&uri=true")
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 2


def _journal_mode(db: Path) -> str:
    connection = sqlite3.connect(db)
    try:
        return connection.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        connection.close()


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
    "pruning after the last epoch": (["--space", "ffn", "--epochs", "5", "--prune-from-epoch", "5"], "not before the"),
    "malformed storage URL": (["--space", "ffn", "--storage", "notadb://x/y"], "cannot open storage"),
    "sqlite for several processes": (["--space", "ffn", "--jobs", "2", "--storage", "sqlite:///x.db"], "not safe"),
    "retrain seed past 32 bits": (["retrain", "--zoo", "gap_cnn-20k-h100", "--seeds", str(2**64)], "seeds run from 0"),
    "negative frontier seed": (["frontier", "--space", "ffn", "--budgets", "500", "--seeds", "-1"], "seeds run from 0"),
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


def test_unreachable_postgres_is_one_line_and_hides_the_password(tmp_path):
    url = "postgresql+psycopg2://user:s3cret@127.0.0.1:1/db"
    result = run_cli("--space", "ffn", "--storage", url, "--no-download", cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot open storage postgresql+psycopg2://user:***@127.0.0.1:1/db" in result.stderr
    assert "s3cret" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


def _study_with_trials(tmp_path, args=()):
    storage = f"sqlite:///{tmp_path}/s.db"
    result = run_cli("--space", "ffn", "--trials", "2", *QUICK, "--storage", storage, "--quiet", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return storage


def test_export_of_a_study_without_completed_trials_is_refused(tmp_path):
    storage = f"sqlite:///{tmp_path}/empty.db"
    optuna.create_study(storage=storage, study_name="empty")
    result = run_cli("export", "--storage", storage, cwd=tmp_path)
    assert result.returncode == 2
    assert "no completed feasible trial" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


OVER_BUDGET_GAP_CNN = get_space("gap_cnn").baselines[0] | {
    "stage2_blocks": 4, "stage2_width_0": 32, "stage2_width_1": 32, "stage2_width_2": 32, "stage2_width_3": 32,
}  # fmt: skip
BAD_CONFIGS = {
    "unknown space": (lambda r: r | {"space": "resnet"}, "unknown space 'resnet'"),
    "unknown keys": (lambda r: r | {"config": r["config"] | {"colour": "red"}}, "unknown keys: 'colour'"),
    "over budget": (lambda r: r | {"space": "gap_cnn", "config": OVER_BUDGET_GAP_CNN}, "over the gap_cnn budget"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_retrain_rejects_bad_configs_in_one_line(tmp_path, case):
    edit, message = BAD_CONFIGS[case]
    storage = _study_with_trials(tmp_path)
    exported = run_cli("export", "--storage", storage, "--out", str(tmp_path), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    path = Path(exported.stdout.split()[0])
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    result = run_cli("retrain", str(path), "--device", "cpu", "--no-download", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_dashboard_port_in_use_is_one_line(tmp_path):
    import socket

    optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path}/d.db")  # the dashboard creates none
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("dashboard", "--storage", f"sqlite:///{tmp_path}/d.db", "--port", str(port), cwd=tmp_path)
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr


def test_existing_study_of_another_space_is_refused_without_change(tmp_path):
    storage = _study_with_trials(tmp_path, ["--study-name", "mine"])
    result = run_cli(
        "--space", "fcn", "--trials", "5", *QUICK, "--storage", storage, "--study-name", "mine", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "was created with space='ffn', not 'fcn'" in result.stderr
    assert len(optuna.load_study(study_name="mine", storage=storage).trials) == 2


def test_jobs_run_worker_processes_on_the_journal_file(tmp_path):
    result = run_cli("--space", "ffn", "--trials", "6", *QUICK, "--jobs", "2", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("seed baseline") == 1  # one table, from the parent
    storage = open_storage(str(tmp_path / "studies" / "mnist-search.journal"))
    study = optuna.load_study(study_name="ffn-e1-n1000", storage=storage)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 6
    assert not (tmp_path / "studies" / "mnist-search.db").exists()


def test_workers_receive_every_option_whole():
    from search import Heartbeat, SearchOptions

    options = SearchOptions(
        space="gap_cnn", trials=7, storage="x.journal", study_name="s", sampler="gp", startup_trials=4,
        pruner="sha", seed=3, prune_from_epoch=3, prune_keep=0.25, timeout=5.0, max_epochs=4, max_params=9000,
        objectives=("accuracy", "params"), data_dir="/d", download=False, device="cpu", precision="fp32",
        target=0.95, warm_start=("a.json", "b#c"), warm_start_top=2, train_subset=100, val_size=50, jobs=3,
        mps=False, worker_index=2, heartbeat=Heartbeat(2, 7), artifacts=None, quiet=True,
    )  # fmt: skip
    defaults = SearchOptions(space="x")
    unchanged = [f.name for f in fields(SearchOptions) if getattr(options, f.name) == getattr(defaults, f.name)]
    assert unchanged == [], f"set every field to a value other than its default: {unchanged}"
    assert SearchOptions.from_json(options.to_json()) == options  # a heartbeat grace of 7, not 3 x 2, included


def test_every_flag_of_the_search_comes_from_its_field():
    from search import SearchOptions
    from search.cli import search_parser
    from search.cli_args import options_from_args

    argv = [
        "--space=gap_cnn", "--trials=7", "--storage=x.journal", "--study-name=-s", "--sampler=gp", "--startup-trials=4",
        "--pruner=sha", "--prune-from-epoch=3", "--prune-keep=0.25", "--seed=3", "--timeout=5", "--max-epochs=4",
        "--max-params=9000",
        "--objectives", "accuracy", "params", "--data-dir=/d", "--no-download", "--device=cpu", "--precision=fp32",
        "--target=0.95", "--warm-start", "a.json", "b#c", "--warm-start-top=2", "--train-subset=100",
        "--val-size=50", "--jobs=3", "--no-mps", "--heartbeat=2", "--artifacts=", "--quiet",
    ]  # fmt: skip
    options = options_from_args(SearchOptions, search_parser().parse_args(argv))
    defaults = SearchOptions(space="x")
    flagged = [f.name for f in fields(SearchOptions) if "flag" in f.metadata]
    assert [n for n in flagged if getattr(options, n) == getattr(defaults, n)] == []
    assert options.heartbeat.grace == 6 and options.artifacts is None and options.objectives == ("accuracy", "params")
    assert {f.name for f in fields(SearchOptions)} - set(flagged) == {"worker_index"}


@pytest.mark.parametrize(
    "command", [[], ["search"], ["export"], ["retrain"], ["report"], ["dashboard"], ["zoo"], ["frontier"]]
)
def test_every_help_page_renders_with_its_defaults(command, capsys):
    from search.cli import main

    with pytest.raises(SystemExit) as stopped:
        main([*command, "--help"])
    assert stopped.value.code == 0
    assert "usage: mnist-search" in capsys.readouterr().out
