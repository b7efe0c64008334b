"""The ranked table of a study's best trials against the study's own target."""

from __future__ import annotations

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from spaces import recorded_space


def is_feasible(trial: FrozenTrial) -> bool:
    return all(value <= 0 for value in trial.constraints.values())


def study_target(study: optuna.Study) -> float:
    """The test accuracy this study must beat: recorded at creation (the space's own, or --target)."""
    return (
        study.user_attrs.get("target")
        or recorded_space(study.user_attrs.get("space"), f"study {study.study_name!r}").target
    )


def format_target(target: float) -> str:
    return f"{target * 100:g}%"  # 99.4%, 97.85%


def ranked_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed, feasible trials, best validation accuracy first (fewer parameters break ties)."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if is_feasible(t)]
    return sorted(trials, key=lambda t: (-t.values[0], t.user_attrs.get("params", 0), t.number))


def trials_table(study: optuna.Study, top: int = 10) -> pd.DataFrame:
    """The top trials plus every seed baseline, one row each."""
    ranked = ranked_trials(study)
    target = study_target(study)
    rows = []
    for rank, trial in enumerate(ranked, start=1):
        baseline = bool(trial.user_attrs.get("baseline"))
        if rank > top and not baseline:
            continue
        rows.append(
            {
                "rank": rank,
                "trial": trial.number,
                "val_acc": trial.values[0],
                "vs_target": round(trial.values[0] - target, 6),
                "params": trial.user_attrs.get("params"),
                "epochs": trial.user_attrs.get("epochs_run"),
                "seconds": trial.user_attrs.get("seconds"),
                "note": "seed baseline" if baseline else "",
            }
        )
    columns = ["rank", "trial", "val_acc", "vs_target", "params", "epochs", "seconds", "note"]
    return pd.DataFrame(rows, columns=columns).astype({"params": "Int64", "epochs": "Int64"})  # no 9844.0


def state_counts(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        state = "INFEASIBLE" if trial.state == TrialState.COMPLETE and not is_feasible(trial) else trial.state.name
        counts[state] = counts.get(state, 0) + 1
    return counts


def training_effort(study: optuna.Study) -> dict[str, float]:
    """Epochs and seconds the study's trials trained, and how much of it went into pruned trials."""
    effort = {"epochs": 0, "seconds": 0.0, "pruned_seconds": 0.0}
    for trial in study.get_trials(deepcopy=False):
        seconds = trial.user_attrs.get("seconds", 0.0)
        effort["epochs"] += trial.user_attrs.get("epochs_run", 0)
        effort["seconds"] += seconds
        if trial.state == TrialState.PRUNED:
            effort["pruned_seconds"] += seconds
    return effort


def format_summary(study: optuna.Study, top: int = 10) -> str:
    table = trials_table(study, top)
    counts = " · ".join(f"{k.lower()} {v}" for k, v in sorted(state_counts(study).items()))
    effort = training_effort(study)
    lines = [
        f"study {study.study_name!r}: {counts}",
        f"trained {effort['epochs']} epochs in {effort['seconds']:.0f} s of trials "
        f"({effort['pruned_seconds']:.0f} s of them in trials pruned later)",
    ]
    if table.empty:
        lines.append("no completed feasible trial yet")
        return "\n".join(lines)
    shown = table.assign(
        val_acc=table.val_acc.map("{:.2%}".format),
        vs_target=table.vs_target.map("{:+.2%}".format),
        params=table.params.map("{:,}".format),
    )
    lines.append(shown.to_string(index=False))
    lines.append(
        f"val_acc: the validation split carved from the training set. The {format_target(study_target(study))} target "
        f"({study.user_attrs.get('target_reason', 'the space')}) is a test-set "
        "figure: `mnist-search retrain` measures it."
    )
    return "\n".join(lines)
