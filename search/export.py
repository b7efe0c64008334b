"""Getting models out of a study: export configs to JSON, retrain them, measure them on the test set."""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn

from search.data import Split
from search.files import check_writable_dir, inside, write_text
from search.results import ranked_trials, study_target
from search.train import count_params
from spaces import recorded_space, source
from spaces.errors import UserError

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


def trial_record(study: optuna.Study, trial: optuna.trial.FrozenTrial, trusted: str | None = None) -> dict[str, Any]:
    """Everything needed to rebuild, retrain and compare one trial; ``trusted``: the user's --space."""
    spec = study.user_attrs.get("space")
    space = recorded_space(spec, f"study {study.study_name!r}", trusted)
    config = trial.user_attrs["config"]
    model = space.build(config)
    return {
        "format": FORMAT_VERSION,
        "space": spec,
        "space_source": study.user_attrs.get("space_source") or source(space.name if spec is None else str(spec)),
        "study": study.study_name,
        "trial": trial.number,
        "baseline": bool(trial.user_attrs.get("baseline")),
        "config": config,
        "config_sha256": config_digest(config),  # retrain names an edited copy apart from the original
        "params": count_params(model),
        "architecture": describe(model),
        "val_accuracy": trial.values[0],
        "target": study_target(study),
        "val_accuracy_per_epoch": trial.user_attrs.get("val_accuracy_per_epoch"),
        "epochs": config["epochs"],
        "train_seed": trial.user_attrs.get("train_seed"),
        "split": {k: study.user_attrs.get(k) for k in ("val_size", "split_seed", "train_subset")},
        "device": trial.user_attrs.get("device"),
        "precision": trial.user_attrs.get("precision", "fp32" if trial.user_attrs.get("device") == "cpu" else "bf16"),
        "versions": versions(),
    }


def config_digest(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


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


def export(
    study: optuna.Study,
    top: int = 1,
    out_dir: Path = EXPORTS_DIR,
    with_baseline: bool = False,
    trusted: str | None = None,
) -> list[Path]:
    """Write the best ``top`` trials (and the seed baselines, if asked) as JSON files."""
    check_writable_dir(out_dir, "--out")
    return [
        write_text(inside(out_dir, study.study_name, f"trial{trial.number}", suffix=".json"), to_json(record))
        for trial in select_trials(study, top, with_baseline)
        for record in [trial_record(study, trial, trusted)]
    ]


def to_json(record: Mapping[str, Any]) -> str:
    return json.dumps(record, indent=2)


def load_record(path: Path, trusted: str | None = None) -> dict[str, Any]:
    """Read and validate an exported config: known space (a plugin only if ``trusted``, the user's
    --space, names it), known keys, within the family budget."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read config {path}: {error}") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise UserError(f"{path} is not an exported mnist-search config (no 'config' object)")
    space = recorded_space(record.get("space"), f"config {path}", trusted)
    try:
        space.check_config(record["config"])
    except UserError as error:
        raise UserError(f"{path}: {error}") from None
    Split.from_attrs(record.get("split"), str(path))  # refused here, before any record trains
    if "epochs" in record and record["epochs"] != record["config"]["epochs"]:
        raise UserError(
            f"{path}: top-level epochs {record['epochs']!r} differs from config.epochs "
            f"{record['config']['epochs']!r}; edit config.epochs (the one retrain uses) and make them agree"
        )
    return record
