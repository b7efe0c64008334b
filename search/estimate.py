"""How long the rest of a study takes on this device: epochs still to train × seconds per epoch.

Seconds per epoch come from what this device measured (every finished trial that trained on it,
and the trial in training), so they hold from the first epoch on. Epochs per trial come from the
study's finished trials (pruned and over-budget ones included: they are the mix the rest will
be), blended with a prior worth ``PRIOR_TRIALS`` trials until the study has its own. Trials per
second would say nothing until trials end, and trials differ tenfold in length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from search.states import FINISHED

PRIOR_TRIALS = 3
# Of the epoch cap: the recorded 100-trial gap_cnn study (H100, median pruner from epoch 4)
# trained 565 epochs with a cap of 20, 0.28 of the cap a trial (docs/benchmarks.md).
PRIOR_EPOCH_FRACTION = 0.28


@dataclass(frozen=True)
class Estimate:
    seconds_per_epoch: float
    epochs_per_trial: float
    remaining_seconds: float

    def describe(self) -> str:
        return (
            f"{self.seconds_per_epoch:.1f} s/epoch · {self.epochs_per_trial:.1f} epochs/trial · "
            f"~{format_duration(self.remaining_seconds)} to go"
        )


@dataclass(frozen=True)
class Running:
    """The trial in training here: seconds so far and epochs done."""

    seconds: float
    epochs: int


def estimate(
    trials: Sequence[FrozenTrial],
    total: int,
    device: str,
    max_epochs: int,
    running: Running | None = None,
    just_finished: Running | None = None,
) -> Estimate | None:
    """The time to finish ``total`` trials, or None before this device has timed an epoch.
    ``running``: the trial in training here; ``just_finished``: one that ended here and is not yet
    in ``trials``."""
    finished = [t for t in trials if t.state in FINISHED]
    timed = [t for t in finished if t.user_attrs.get("device") == device and t.user_attrs.get("epochs_run")]
    seconds = sum(t.user_attrs.get("seconds", 0.0) for t in timed)
    epochs = sum(t.user_attrs["epochs_run"] for t in timed)
    trained = sum(t.user_attrs.get("epochs_run", 0) for t in finished)
    n_finished = len(finished)
    for here in (running, just_finished):
        if here is not None:
            seconds, epochs = seconds + here.seconds, epochs + here.epochs
    if just_finished is not None:
        trained, n_finished = trained + just_finished.epochs, n_finished + 1
    if not epochs:
        return None
    seconds_per_epoch = seconds / epochs
    prior = PRIOR_EPOCH_FRACTION * max_epochs
    epochs_per_trial = (prior * PRIOR_TRIALS + trained) / (PRIOR_TRIALS + n_finished)
    left_epochs = max(total - n_finished, 0) * epochs_per_trial - (running.epochs if running else 0)
    # Workers sharing the study (--jobs, other hosts) each train one of the trials in flight.
    workers = max(1, sum(t.state == TrialState.RUNNING for t in trials))
    return Estimate(seconds_per_epoch, epochs_per_trial, max(left_epochs, 0.0) * seconds_per_epoch / workers)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
