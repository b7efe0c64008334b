"""Export, retrain and report on small real studies (CPU)."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import torch

from search import SearchOptions, run_search
from search.export import export, load_record
from search.model import load_checkpoint
from search.report import pareto_frame, write_report
from search.retrain import retrain


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory, data_dir):
    path = tmp_path_factory.mktemp("export")
    common = dict(
        storage=f"sqlite:///{path}/s.db", max_epochs=2, train_subset=1000, val_size=1000,
        data_dir=str(data_dir), download=False, device="cpu", quiet=True, artifacts=None,
    )  # fmt: skip
    run_search(SearchOptions(space="ffn", trials=4, **common))
    run_search(SearchOptions(space="fcn", trials=3, max_params=None, **common))
    return path


def _study(study_dir, name="ffn-e2-n1000"):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir}/s.db")


def test_export_writes_everything_needed_to_rebuild_the_trial(study_dir, tmp_path):
    (path,) = export(_study(study_dir), top=1, out_dir=tmp_path)
    record = json.loads(path.read_text())
    assert record["space"] == "ffn" and record["epochs"] == record["config"]["epochs"]
    assert record["params"] == sum(layer["params"] for layer in record["architecture"])
    assert record["architecture"][-1]["output"] == [10]
    assert {"torch", "optuna"} <= set(record["versions"])
    assert record["split"] == {"val_size": 1000, "split_seed": 0, "train_subset": 1000}
    assert isinstance(record["train_seed"], int) and 0 < record["val_accuracy"] <= 1


def test_export_then_retrain_with_the_recorded_seed_reproduces_the_trial(study_dir, tmp_path):
    paths = export(_study(study_dir), top=2, out_dir=tmp_path, with_baseline=True)
    for path in paths:
        record = load_record(path)
        result = retrain(record, [record["train_seed"]], device="cpu", on_search_split=True, download=False)
        assert result.evaluated_on == "val"
        assert result.accuracies[0] == pytest.approx(record["val_accuracy"], abs=0.001), path.name


def test_retrain_saves_a_safe_checkpoint_metrics_and_per_class_report(study_dir, tmp_path):
    (path,) = export(_study(study_dir), top=1, out_dir=tmp_path)
    record = load_record(path)
    record["config"]["epochs"] = 1
    result = retrain(record, [5], device="cpu", on_search_split=True, out_dir=tmp_path, download=False)
    stem = tmp_path / f"{result.name}-seed5"
    model = load_checkpoint(stem.with_suffix(".pt"))  # weights_only=True inside
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    metrics = json.loads((tmp_path / f"{stem.name}.metrics.json").read_text())
    assert metrics["accuracy"] == result.accuracies[0]
    assert sum(map(sum, metrics["confusion_matrix"])) == 1000
    report = (tmp_path / f"{stem.name}.report.txt").read_text()
    assert "precision" in report and len([line for line in report.splitlines() if line.strip()[:1].isdigit()]) == 10
    assert (tmp_path / f"{stem.name}.confusion.html").stat().st_size > 10_000


def test_report_is_one_html_file_with_optuna_figures_a_pareto_view_and_a_csv(study_dir, tmp_path):
    html_path, csv_path = write_report(_study(study_dir), "sqlite:///x.db", tmp_path / "report.html")
    page = html_path.read_text()
    for title in ("Optimization history", "Intermediate values", "Parameter importances", "Parallel coordinates"):
        assert title in page
    assert "Pareto view" in page and "97.3% target" in page and "99.4% target" not in page  # ffn: seed 000's figure
    assert re.search(r"[1-9]\d* epochs trained in \d+ s \(\d+ s in trials pruned later\)", page)
    assert page.count('<script type="text/javascript">/**') <= 1  # plotly.js embedded once
    table = pd.read_csv(csv_path)
    assert "seed baseline" in set(table.note.dropna())
    frame = pareto_frame(_study(study_dir)._storage)
    assert set(frame.study) == {"ffn-e2-n1000", "fcn-e2-n1000"}
    assert frame.pareto.any()


def test_names_from_studies_cannot_leave_the_output_folder():
    from search.files import slug

    assert "/" not in slug("../../etc/passwd") and not slug("../x").startswith(".")
    assert slug("gap_cnn-p8000-e15") == "gap_cnn-p8000-e15"


def test_retrained_checkpoints_are_attached_to_the_study_for_the_dashboard(study_dir, tmp_path):
    import optuna

    from search.artifacts import attach_checkpoints
    from search.export import trial_record
    from search.storage import artifact_store

    study = _study(study_dir)
    trial = study.trials[0]
    record = trial_record(study, trial) | {"config": trial.user_attrs["config"] | {"epochs": 1}}
    result = retrain(record, [0], device="cpu", on_search_split=True, out_dir=tmp_path, download=False)
    attach_checkpoints(study, result, artifact_store(tmp_path / "artifacts"))
    names = {meta.filename for meta in optuna.artifacts.get_all_artifact_meta(study)}
    assert {f"{result.name}-seed0.pt", f"{result.name}-seed0.report.txt"} <= names


def test_retraining_an_edited_copy_never_overwrites_the_originals_files(study_dir, tmp_path):
    (path,) = export(_study(study_dir), top=1, out_dir=tmp_path)
    record = load_record(path)
    original = f"ffn-e2-n1000-trial{record['trial']}"
    edited = record | {"config": record["config"] | {"epochs": 1}}
    kwargs = dict(device="cpu", on_search_split=True, out_dir=tmp_path / "out", download=False)
    assert retrain(edited, [0], **kwargs).name.startswith(f"{original}-edited-")
    assert (
        retrain(record | {"config": record["config"] | {"epochs": 1}, "config_sha256": None}, [0], **kwargs).name
        == original
    )
