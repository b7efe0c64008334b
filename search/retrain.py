"""Retraining: each config once per seed, for its own epochs, measured on the test set (or, to
reproduce a trial, on the study's own split). What each seed leaves inside ``--out`` is written by
``search.artifacts``, the model card by ``search.model_card``."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.artifacts import save_artifacts
from search.cpu import configure_process
from search.data import Split, load_mnist, resolve_data_dir, split_train_val
from search.estimate import format_duration
from search.export import config_digest
from search.files import check_writable_dir, inside, slug
from search.model_card import write_model_card
from search.results import format_target
from search.run import Run
from search.train import resolve_device
from spaces import recorded_space


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
    if "name" in record:  # a zoo entry
        name = slug(str(record["name"]))
    else:
        name = "-".join(
            slug(str(part)) for part in (record.get("study", space.name), f"trial{record.get('trial', 'x')}")
        )
    digest = config_digest(config)
    if record.get("config_sha256") not in (None, digest):  # an edited copy: never overwrite the original's files
        name += f"-edited-{digest[:8]}"
    if out_dir is not None:
        check_writable_dir(out_dir, "--out")  # before training, not after
    mnist = load_mnist(resolve_data_dir(data_dir), download=download)
    if on_search_split:
        where = f"config of {record.get('study', 'a retrain')!r}"
        train_set, eval_set = split_train_val(mnist.train, Split.from_attrs(record.get("split"), where))
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
            save_artifacts(
                stem, trained.model, record, trained.accuracies, eval_set, run.profile, plot=seed == seeds[0]
            )
            result.checkpoints.append(Path(f"{stem}.pt"))
    if out_dir is not None:
        result.model_card = write_model_card(inside(out_dir, name, suffix=".model-card.md"), result, record, config)
    return result


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
