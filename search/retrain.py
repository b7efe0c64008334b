"""Retraining: each config once per seed, for its own epochs, measured on the test set (or, to
reproduce a trial, on the study's own split); checkpoints, metrics, a per-class report and a
confusion-matrix page per seed, each written atomically inside ``--out``."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import torch
from torch import nn

from search.cpu import configure_process
from search.data import Split, Tensors, load_mnist, resolve_data_dir, split_train_val
from search.estimate import format_duration
from search.export import config_digest, to_json, versions
from search.files import check_writable_dir, inside, slug, write_atomic, write_text
from search.profile import DeviceProfile
from search.results import format_target
from search.run import Run
from search.train import predict, resolve_device
from spaces import known_names, recorded_space

if TYPE_CHECKING:
    import plotly.graph_objects as go

N_CLASSES = 10


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
    precision: str  # as resolved for this config on this device: fp32 or bf16
    device: str
    target: float  # the study's (from the export), else the space's
    checkpoints: list[Path] = field(default_factory=list)
    model_card: Path | None = None

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
    precision: str = "auto",
    progress: bool = False,
    trusted: str | None = None,
) -> RetrainResult:
    """Train the exact config once per seed for its own fixed epochs, no best-epoch picking.

    By default: on all 60k training images, measured on the 10k test set. With ``on_search_split``:
    on the study's own training split, measured on its validation split, which reproduces the
    trial (same seed, same device and precision) for checking an export. ``progress``: a line per
    epoch on stderr. ``trusted``: the user's --space, which alone lets a record name a plugin module.
    """
    space = recorded_space(record["space"], f"config of {record.get('study', 'a retrain')!r}", trusted)
    config = dict(record["config"])
    space.check_config(config)
    name = "-".join(slug(str(part)) for part in (record.get("study", space.name), f"trial{record.get('trial', 'x')}"))
    digest = config_digest(config)
    if record.get("config_sha256") not in (None, digest):  # an edited copy: never overwrite the original's files
        name += f"-edited-{digest[:8]}"
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
    run_device = resolve_device(device)
    configure_process(run_device)  # an entry point, as a search's worker is
    train_set, eval_set = train_set.to(run_device), eval_set.to(run_device)  # once, for every seed
    result = RetrainResult(
        name=name, space=space.name, params=0, epochs=config["epochs"], seeds=list(seeds), accuracies=[],
        evaluated_on="val" if on_search_split else "test", seconds=0.0, baseline=bool(record.get("baseline")),
        precision="", device=str(run_device), target=record.get("target") or space.target,
    )  # fmt: skip
    for seed in seeds:
        run = Run.build(space, config, seed=seed, device=run_device, precision=precision)
        result.params, result.precision = run.params, run.profile.precision
        on_epoch = _epoch_lines(f"{name} seed {seed}", result.evaluated_on, config["epochs"]) if progress else None
        trained = run.train(train_set, eval_set, on_epoch)
        result.accuracies.append(trained.accuracy)
        result.seconds += trained.seconds
        if out_dir is not None:
            stem = inside(out_dir, name, f"seed{seed}")
            _save_artifacts(
                stem, trained.model, record, trained.accuracies, eval_set, run.profile, plot=seed == seeds[0]
            )
            result.checkpoints.append(Path(f"{stem}.pt"))
    if out_dir is not None:
        result.model_card = write_model_card(inside(out_dir, name, suffix=".model-card.md"), result, record, config)
    return result


def write_model_card(path: Path, result: RetrainResult, record: Mapping[str, Any], config: Mapping[str, Any]) -> Path:
    """A short Markdown card: what the model is, how well it does against its target, how to use it."""
    first = result.checkpoints[0]
    per_class = first.with_suffix(".report.txt").read_text()
    accuracies = ", ".join(f"{a:.2%}" for a in result.accuracies)
    verdict = "reaches" if result.mean >= result.target else "falls short of"
    # A plugin space is used from a checkpoint only when named again by the user.
    trust, plugin = (
        ("", "")
        if record["space"] in known_names()
        else (f" --space {record['space']}", f", space={record['space']!r}")
    )
    lines = [
        f"# Model card: {result.name}",
        "",
        f"- **Family**: `{record['space']}` ({record.get('space_source', 'built in')})"
        + (" — the seed document's own config" if result.baseline else ""),
        f"- **Parameters**: {result.params:,}; **epochs**: {result.epochs}; trained on "
        + ("all 60,000 training images" if result.evaluated_on == "test" else "the study's training split"),
        f"- **{result.evaluated_on.capitalize()} accuracy**: {result.mean:.2%} ± {result.std:.2%} over seeds "
        f"{', '.join(map(str, result.seeds))} ({accuracies}); it {verdict} the {format_target(result.target)} target",
        f"- **Precision**: {result.precision}; **device**: {result.device}; "
        + ", ".join(f"{k} {v}" for k, v in versions().items()),
        "",
        "## Config",
        "",
        "```json",
        to_json(dict(config)),
        "```",
        "",
        f"## Per class ({result.evaluated_on} set, seed {result.seeds[0]})",
        "",
        "```",
        per_class.rstrip(),
        "```",
        "",
        "## Use it",
        "",
        "```bash",
        f"mnist-search predict {first}{trust} digit.png more.png         # or an IDX file, or a .npy batch; --csv",
        f"mnist-search export-model {first}{trust} --format onnx       # or torchscript",
        "```",
        "",
        "```python",
        "from search.model import load_checkpoint",
        f'model = load_checkpoint("{first}"{plugin})   # uint8 0-255 or float 0-1, N×28×28 or N×1×28×28',
        "probabilities = model(images)       # N×10, MNIST's normalisation inside",
        "```",
        "",
    ]
    return write_text(path, "\n".join(lines))


def _epoch_lines(label: str, evaluated_on: str, epochs: int):  # noqa: ANN202 - an on_epoch callback
    """A line per epoch: accuracy so far, the epoch rate and the time this seed still needs."""
    start = time.perf_counter()

    def on_epoch(epoch: int, accuracy: float) -> None:
        per_epoch = (time.perf_counter() - start) / epoch
        print(
            f"{label}: epoch {epoch}/{epochs} {evaluated_on} accuracy {accuracy:.4f} · {per_epoch:.1f} s/epoch · "
            f"~{format_duration(per_epoch * (epochs - epoch))} left",
            file=sys.stderr,
            flush=True,
        )

    return on_epoch


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


def _save_artifacts(
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


def format_retrain(results: Sequence[RetrainResult]) -> str:
    lines = [
        f"| config | params | epochs | seeds | precision | {results[0].evaluated_on} accuracy (mean ± std) "
        "| target | vs target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        label = f"{r.name} (seed baseline)" if r.baseline else r.name
        lines.append(
            f"| {label} | {r.params:,} | {r.epochs} | {len(r.seeds)} | {r.precision} | "
            f"{r.mean:.2%} ± {r.std:.2%} | {format_target(r.target)} | {r.mean - r.target:+.2%} |"
        )
    return "\n".join(lines)


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Rows: true class; columns: predicted class."""
    return torch.bincount(labels * N_CLASSES + predicted, minlength=N_CLASSES * N_CLASSES).reshape(N_CLASSES, -1)


def classification_report(matrix: torch.Tensor) -> str:
    """Per-class precision, recall, F1 and support, laid out as seed 000 shows them."""
    m = matrix.double()
    support = m.sum(1)
    precision = m.diag() / m.sum(0).clamp(min=1)
    recall = m.diag() / support.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    lines = [f"{'':>12}{'precision':>10}{'recall':>10}{'f1-score':>10}{'support':>10}", ""]
    for c in range(N_CLASSES):
        lines.append(f"{c:>12}{precision[c]:>10.4f}{recall[c]:>10.4f}{f1[c]:>10.4f}{int(support[c]):>10}")
    total = int(support.sum())
    lines += ["", f"{'accuracy':>12}{'':>20}{(m.diag().sum() / total).item():>10.4f}{total:>10}"]
    lines.append(f"{'macro avg':>12}{precision.mean():>10.4f}{recall.mean():>10.4f}{f1.mean():>10.4f}{total:>10}")
    return "\n".join(lines) + "\n"


def confusion_figure(matrix: torch.Tensor, title: str) -> go.Figure:
    import plotly.express as px  # only when a retrain writes its plot: every other command starts without it

    return px.imshow(
        matrix.numpy(), text_auto=True, color_continuous_scale="Blues", title=f"Confusion matrix: {title}",
        labels={"x": "predicted", "y": "true", "color": "images"}, x=list(range(10)), y=list(range(10)),
    )  # fmt: skip
