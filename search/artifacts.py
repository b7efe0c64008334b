"""What a retrain leaves for each seed: the checkpoint, its metrics, the per-class report and a
confusion plot, each written atomically; and their upload to the study, for the dashboard."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import torch
from torch import nn

from search.data import Tensors
from search.export import to_json, versions
from search.files import write_atomic, write_text
from search.metrics import classification_report, confusion_figure, confusion_matrix
from search.profile import DeviceProfile
from search.train import predict

if TYPE_CHECKING:
    from search.retrain import RetrainResult


def save_artifacts(
    stem: Path,
    trained: nn.Module,
    record: Mapping[str, Any],
    curve: list[float],
    eval_set: Tensors,
    profile: DeviceProfile,
    plot: bool,
) -> None:
    """Checkpoint (``trained``'s state_dict + config, loadable with weights_only=True), metrics,
    per-class report, and (for the first seed: each page carries plotly, ~4 MB) a self-contained
    confusion-matrix plot. ``trained``: the module training returned, on the profile's device."""
    state = {k: v.detach().cpu() for k, v in trained.state_dict().items()}
    checkpoint = {"state_dict": state, "space": record["space"], "config": record["config"]}
    write_atomic(Path(f"{stem}.pt"), lambda file: torch.save(checkpoint, file))
    matrix = confusion_matrix(predict(trained, eval_set, profile).cpu(), eval_set.labels.cpu())
    metrics = {
        "accuracy": curve[-1], "accuracy_per_epoch": curve, "confusion_matrix": matrix.tolist(),
        "device": str(profile.device), "precision": profile.precision, **versions(),
    }  # fmt: skip
    write_text(Path(f"{stem}.metrics.json"), to_json(metrics))
    write_text(Path(f"{stem}.report.txt"), classification_report(matrix))
    if plot:
        figure = confusion_figure(matrix, title=stem.name)
        write_text(Path(f"{stem}.confusion.html"), figure.to_html(include_plotlyjs=True))


def attach_checkpoints(study: optuna.Study, result: RetrainResult, store: Any) -> None:
    """Upload a retrain's checkpoints and per-class reports to the study, for the dashboard.

    To the study, not the trial: Optuna refuses new artifacts on a finished trial. The file names
    (``STUDY-trialN-seedS.pt``) say which trial each belongs to.
    """
    for checkpoint in result.checkpoints:
        for path in (checkpoint, checkpoint.with_suffix(".report.txt")):
            optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study)
    if result.model_card is not None:  # for the HTML report's links
        study.set_user_attr(f"model_card:{result.name}", str(result.model_card.resolve()))
