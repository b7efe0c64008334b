"""Getting models out of a study: export configs to JSON, retrain them, measure them on the test set."""

from __future__ import annotations

import json
import platform
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn

from search.data import Split, Tensors, load_mnist, resolve_data_dir, split_train_val
from search.errors import UserError
from search.files import check_writable_dir, inside, slug, write_atomic, write_text
from search.options import TARGET
from search.results import ranked_trials
from search.train import TrainSettings, count_params, predict, resolve_device, train
from spaces import get_space

EXPORTS_DIR = Path("studies") / "exports"
FORMAT_VERSION = 1


def describe(model: nn.Module) -> list[dict[str, Any]]:
    """Layer-by-layer summary (type, output shape, parameters) for one 1×28×28 input."""
    rows: list[dict[str, Any]] = []
    hooks = []
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue

        def hook(mod: nn.Module, _inputs: Any, output: torch.Tensor, name: str = name) -> None:
            params = sum(p.numel() for p in mod.parameters())
            rows.append({"layer": name, "type": type(mod).__name__, "output": list(output.shape[1:]), "params": params})

        hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return rows


def trial_record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """Everything needed to rebuild, retrain and compare one trial."""
    space = get_space(study.user_attrs["space"])
    config = trial.user_attrs["config"]
    model = space.build(config)
    return {
        "format": FORMAT_VERSION,
        "space": space.name,
        "study": study.study_name,
        "trial": trial.number,
        "baseline": bool(trial.user_attrs.get("baseline")),
        "config": config,
        "params": count_params(model),
        "architecture": describe(model),
        "val_accuracy": trial.values[0],
        "val_accuracy_per_epoch": trial.user_attrs.get("val_accuracy_per_epoch"),
        "epochs": config["epochs"],
        "train_seed": trial.user_attrs.get("train_seed"),
        "split": {k: study.user_attrs.get(k) for k in ("val_size", "split_seed", "train_subset")},
        "device": trial.user_attrs.get("device"),
        "versions": versions(),
    }


def versions() -> dict[str, str]:
    return {"torch": torch.__version__, "optuna": optuna.__version__, "python": platform.python_version()}


def select_trials(study: optuna.Study, top: int, with_baseline: bool) -> list[optuna.trial.FrozenTrial]:
    ranked = ranked_trials(study)
    if not ranked:
        raise UserError(f"study {study.study_name!r} has no completed feasible trial to export; run the search first")
    chosen = ranked[:top]
    if with_baseline:
        chosen += [t for t in ranked if t.user_attrs.get("baseline") and t not in chosen]
    return chosen


def export(study: optuna.Study, top: int = 1, out_dir: Path = EXPORTS_DIR, with_baseline: bool = False) -> list[Path]:
    """Write the best ``top`` trials (and the seed baselines, if asked) as JSON files."""
    check_writable_dir(out_dir, "--out")
    return [
        write_text(inside(out_dir, study.study_name, f"trial{trial.number}", suffix=".json"), _to_json(record))
        for trial in select_trials(study, top, with_baseline)
        for record in [trial_record(study, trial)]
    ]


def _to_json(record: Mapping[str, Any]) -> str:
    return json.dumps(record, indent=2)


def load_record(path: Path) -> dict[str, Any]:
    """Read and validate an exported config: known space, known keys, within the family budget."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read config {path}: {error}") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise UserError(f"{path} is not an exported mnist-search config (no 'config' object)")
    space = get_space(str(record.get("space")))
    try:
        space.check_config(record["config"])
    except UserError as error:
        raise UserError(f"{path}: {error}") from None
    if "epochs" in record and record["epochs"] != record["config"]["epochs"]:
        raise UserError(
            f"{path}: top-level epochs {record['epochs']!r} differs from config.epochs "
            f"{record['config']['epochs']!r}; edit config.epochs (the one retrain uses) and make them agree"
        )
    return record


@dataclass
class RetrainResult:
    name: str
    space: str
    params: int
    epochs: int
    seeds: list[int]
    accuracies: list[float]
    evaluated_on: str  # "test" (full 60k training set) or "val" (the study's search split)
    seconds: float
    baseline: bool
    checkpoints: list[Path] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else 0.0


def retrain(
    record: Mapping[str, Any],
    seeds: Sequence[int],
    *,
    data_dir: str | None = None,
    download: bool = True,
    device: str = "auto",
    on_search_split: bool = False,
    out_dir: Path | None = None,
) -> RetrainResult:
    """Train the exact config once per seed for its own fixed epochs, no best-epoch picking.

    By default: on all 60k training images, measured on the 10k test set. With ``on_search_split``:
    on the study's own training split, measured on its validation split, which reproduces the
    trial (same seed, same device) for checking an export.
    """
    space = get_space(record["space"])
    config = dict(record["config"])
    space.check_config(config)
    name = "-".join(slug(str(part)) for part in (record.get("study", space.name), f"trial{record.get('trial', 'x')}"))
    if out_dir is not None:
        check_writable_dir(out_dir, "--out")  # before training, not after
    mnist = load_mnist(resolve_data_dir(data_dir), download=download)
    if on_search_split:
        split = record["split"]
        train_set, eval_set = split_train_val(
            mnist.train, Split(split["val_size"], split["split_seed"], split["train_subset"])
        )
    else:
        train_set, eval_set = mnist.train, mnist.test
    target = resolve_device(device)
    train_set, eval_set = train_set.to(target), eval_set.to(target)  # once, for every seed
    result = RetrainResult(
        name=name, space=space.name, params=0, epochs=config["epochs"], seeds=list(seeds), accuracies=[],
        evaluated_on="val" if on_search_split else "test", seconds=0.0, baseline=bool(record.get("baseline")),
    )  # fmt: skip
    settings = TrainSettings.from_config(config)
    for seed in seeds:
        torch.manual_seed(seed)
        model = space.build(config)
        result.params = count_params(model)
        run = train(model, train_set, eval_set, settings, device=target, seed=seed)
        result.accuracies.append(run.accuracy)
        result.seconds += run.seconds
        if out_dir is not None:
            stem = inside(out_dir, name, f"seed{seed}")
            _save_artifacts(stem, model, record, run.accuracies, eval_set, target, plot=seed == seeds[0])
            result.checkpoints.append(Path(f"{stem}.pt"))
    return result


def attach_checkpoints(study: optuna.Study, result: RetrainResult, store: Any) -> None:
    """Upload a retrain's checkpoints and per-class reports to the study, for the dashboard.

    To the study, not the trial: Optuna refuses new artifacts on a finished trial. The file names
    (``STUDY-trialN-seedS.pt``) say which trial each belongs to.
    """
    for checkpoint in result.checkpoints:
        for path in (checkpoint, checkpoint.with_suffix(".report.txt")):
            optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study)


def _save_artifacts(
    stem: Path,
    model: nn.Module,
    record: Mapping[str, Any],
    curve: list[float],
    eval_set: Tensors,
    device: torch.device,
    plot: bool,
) -> None:
    """Checkpoint (state_dict + config, loadable with weights_only=True), metrics, per-class report,
    and (for the first seed: each page carries plotly, ~4 MB) a self-contained confusion-matrix plot."""
    from search.report import classification_report, confusion_figure, confusion_matrix

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    checkpoint = {"state_dict": state, "space": record["space"], "config": record["config"]}
    write_atomic(Path(f"{stem}.pt"), lambda file: torch.save(checkpoint, file))
    matrix = confusion_matrix(predict(model, eval_set, device).cpu(), eval_set.labels.cpu())
    metrics = {"accuracy": curve[-1], "accuracy_per_epoch": curve, "confusion_matrix": matrix.tolist(), **versions()}
    write_text(Path(f"{stem}.metrics.json"), _to_json(metrics))
    write_text(Path(f"{stem}.report.txt"), classification_report(matrix))
    if plot:
        figure = confusion_figure(matrix, title=stem.name)
        write_text(Path(f"{stem}.confusion.html"), figure.to_html(include_plotlyjs=True))


def load_checkpoint(path: Path) -> nn.Module:
    """Rebuild a retrained model; ``weights_only=True`` so a checkpoint cannot run code."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = get_space(checkpoint["space"]).build(checkpoint["config"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def format_retrain(results: Sequence[RetrainResult]) -> str:
    lines = [
        f"| config | params | epochs | seeds | {results[0].evaluated_on} accuracy (mean ± std) | vs {TARGET:.1%} |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        label = f"{r.name} (seed baseline)" if r.baseline else r.name
        lines.append(
            f"| {label} | {r.params:,} | {r.epochs} | {len(r.seeds)} | "
            f"{r.mean:.2%} ± {r.std:.2%} | {r.mean - TARGET:+.2%} |"
        )
    return "\n".join(lines)
