"""How long the rest of a study takes on this device: epochs still to train × seconds per epoch.

Seconds per epoch come from what this device measured (every finished trial that trained on it,
and the trial in training), so they hold from the first epoch on.

Epochs still to train come from a model of what the pruner will do, not from an average of the
trials so far: a study's first trials are its least typical (the seed baseline trains to the end;
few trials have completed, so the pruner's bar is low, yet the sampler has not learnt yet either).
Each trial still to come

- is over the parameter budget, and never trains, at the share seen among the sampled trials;
- else completes, at the share seen among the sampled trials that trained, and then trains the
  completed trials' mean epochs; under the peers pruner that share thins out as the study goes on
  (each completed trial raises the bar the next must stay above), along a whole-study curve;
- else is pruned, after the mean epochs of the last ``RECENT_PRUNED`` pruned trials (trials are
  stopped sooner as the bar rises).

Shares come from the trials the pruner judged (the peers pruner does not judge the first trial of
each schedule; one such trial is added for each schedule not yet tried). Each share and mean is
blended with a prior worth ``PRIOR_TRIALS`` trials. Time outside training
(sampling, storage, start-up of each trial) is this study's own, per finished trial.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.pruning import SCHEDULE_KEY, PeerPruner
from spaces.states import FINISHED

PRIOR_TRIALS = 5
# The priors (docs/benchmarks.md, "How good the time-to-go estimate is"): the share of sampled
# trials over budget; a completed trial's epochs, as a share of the epoch cap; a pruned trial's
# epochs beyond the pruner's first judging epoch.
PRIOR_OVER_BUDGET = 0.15
PRIOR_COMPLETE_FRACTION = 0.7
PRIOR_PRUNED_EXTRA = 1.0
RECENT_PRUNED = 20


@dataclass(frozen=True)
class Pruning:
    """What the estimate assumes of the study's pruner until the study shows its own: the first
    epoch it may stop a trial at, and the share of trained trials it lets complete."""

    first_judged_epoch: int = 4
    complete_share: float = 0.25  # of the trials it judges
    by_schedule: bool = False  # the first of each lr schedule meets only the floor (search.pruning)
    keep: float | None = None  # the peers pruner's share kept

    @classmethod
    def of(cls, pruner: object) -> Pruning:
        if isinstance(pruner, PeerPruner):
            # Judged at every epoch, about a third of the share kept at each completes
            # (gap_cnn proxies: 0.15-0.16 of trained trials at keep 0.5).
            return cls(pruner.from_epoch, COMPLETE_PER_KEEP * pruner.keep, by_schedule=True, keep=pruner.keep)
        if isinstance(pruner, optuna.pruners.NopPruner):
            return cls(complete_share=1.0)
        if isinstance(pruner, optuna.pruners.PercentilePruner):  # the median pruner's warm-up: private
            return cls(first_judged_epoch=getattr(pruner, "_n_warmup_steps", cls.first_judged_epoch))
        return cls()


COMPLETE_PER_KEEP = 0.32


@dataclass(frozen=True)
class Estimate:
    seconds_per_epoch: float
    epochs_per_trial: float  # expected for each trial still to finish
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


@dataclass(frozen=True)
class Ended:
    """A trial that ended here and is not yet told to the storage (where it is still RUNNING)."""

    number: int
    seconds: float
    epochs: int
    state: TrialState
    infeasible: bool = False
    at: datetime | None = None  # when it ended; None: now (a replay of a recorded study gives its own)


def estimate(
    trials: Sequence[FrozenTrial],
    total: int,
    device: str,
    max_epochs: int,
    running: Running | None = None,
    just_finished: Ended | None = None,
    pruning: Pruning = Pruning(),
) -> Estimate | None:
    """The time to finish ``total`` trials, or None before this device has timed an epoch.
    ``running``: the trial in training here; ``just_finished``: one that ended here and is not yet
    in ``trials``; ``pruning``: what to assume of the study's pruner (``Pruning.of(study.pruner)``)."""
    # Workers sharing the study (--jobs, other hosts) each train one of the trials in flight. Counted
    # before the trial that just ended here is: its worker goes on to the next.
    workers = max(1, sum(t.state == TrialState.RUNNING for t in trials))
    if just_finished is not None:  # counted as it will be stored
        trials = [_as_stored(t, just_finished) if t.number == just_finished.number else t for t in trials]
    finished = [t for t in trials if t.state in FINISHED]
    timed = [t for t in finished if t.user_attrs.get("device") == device and t.user_attrs.get("epochs_run")]
    seconds = sum(t.user_attrs.get("seconds", 0.0) for t in timed)
    epochs = sum(t.user_attrs["epochs_run"] for t in timed)
    if running is not None:
        seconds, epochs = seconds + running.seconds, epochs + running.epochs
    if not epochs:
        return None

    sampled = [t for t in finished if not _enqueued(t)]
    over = sum("infeasible" in t.user_attrs for t in sampled)
    completed = [_epochs(t) for t in finished if t.state == TrialState.COMPLETE and _epochs(t)]
    # The shares come from the trials the pruner judged: the first of each schedule it does not.
    unjudged = _unjudged(finished) if pruning.by_schedule else set()
    judged = [t for t in sampled if t.number not in unjudged]
    # The bar rises as completed trials accumulate, so pruned trials stop sooner as the study goes
    # on: their epochs are the recent ones'.
    pruned = [_epochs(t) for t in judged if t.state == TrialState.PRUNED and _epochs(t)]
    recent_pruned = pruned[-RECENT_PRUNED:]
    trained_complete = sum(t.state == TrialState.COMPLETE and _epochs(t) > 0 for t in judged)
    n_finished, n_sampled = len(finished), len(sampled)
    trained = len(pruned) + trained_complete

    over_share = _blend(PRIOR_OVER_BUDGET, over, n_sampled)
    left = max(total - n_finished, 0)
    unjudged_to_come = min(_schedules_without_reference(finished), left) if pruning.by_schedule else 0
    left_judged = left - unjudged_to_come
    if pruning.keep is not None and left_judged and trained:
        complete_share = _thinned_complete_share(
            pruning.complete_share, pruning.keep, trained, trained_complete, left_judged
        )
    else:
        complete_share = _blend(pruning.complete_share, trained_complete, trained)
    complete_epochs = _blend(PRIOR_COMPLETE_FRACTION * max_epochs, sum(completed), len(completed))
    pruned_epochs = _blend(pruning.first_judged_epoch + PRIOR_PRUNED_EXTRA, sum(recent_pruned), len(recent_pruned))
    per_trial = (1 - over_share) * (complete_share * complete_epochs + (1 - complete_share) * pruned_epochs)
    left_epochs = left_judged * per_trial + unjudged_to_come * (1 - over_share) * complete_epochs
    left_epochs = max(left_epochs - (running.epochs if running else 0), 0.0)
    seconds_per_epoch = seconds / epochs
    remaining = (left_epochs * seconds_per_epoch + left * _outside_training(finished)) / workers
    return Estimate(seconds_per_epoch, per_trial, remaining)


def _thinned_complete_share(
    prior_share: float, keep: float, trained: int, trained_complete: float, left_judged: int
) -> float:
    """The share of the next ``left_judged`` judged trials that complete under the peers pruner.

    A trial completes only while among the best ``keep`` of the completed ones, so each completion
    raises the bar and completions grow like n^keep over the n judged trials. Two such curves are
    blended: the prior's, on which ``prior_share`` of the whole study's judged trials complete, and
    the one through the completions seen so far.
    """
    n_all = trained + left_judged
    prior_future = prior_share * n_all * (1 - (trained / n_all) ** keep)
    seen_future = trained_complete * ((n_all / trained) ** keep - 1)
    future = (PRIOR_TRIALS * prior_future + trained * seen_future) / (PRIOR_TRIALS + trained)
    return future / left_judged


def _as_stored(trial: FrozenTrial, ended: Ended) -> FrozenTrial:
    stored = copy.copy(trial)
    stored.state = ended.state
    stored.user_attrs = trial.user_attrs | {"epochs_run": ended.epochs, "seconds": ended.seconds}
    if ended.infeasible:
        stored.user_attrs["infeasible"] = True
    stored.datetime_complete = ended.at or datetime.now()
    return stored


def _unjudged(finished: Sequence[FrozenTrial]) -> set[int]:
    """Trials that started before any trial of their schedule had completed: the peers pruner
    had nothing to judge them against."""
    first_done: dict[object, datetime] = {}
    for t in finished:
        if t.state == TrialState.COMPLETE and _epochs(t) and t.datetime_complete:
            schedule = t.params.get(SCHEDULE_KEY)
            first_done[schedule] = min(first_done.get(schedule, t.datetime_complete), t.datetime_complete)
    return {
        t.number
        for t in finished
        if t.datetime_start is not None
        and not ((done := first_done.get(t.params.get(SCHEDULE_KEY))) is not None and done < t.datetime_start)
    }


def _schedules_without_reference(finished: Sequence[FrozenTrial]) -> int:
    """Schedules the study samples with no completed trial yet: the first of each will train to the end."""
    choices: set[object] = set()
    for t in finished:
        distribution = t.distributions.get(SCHEDULE_KEY)
        if isinstance(distribution, optuna.distributions.CategoricalDistribution):
            choices.update(distribution.choices)
    done = {t.params.get(SCHEDULE_KEY) for t in finished if t.state == TrialState.COMPLETE and _epochs(t)}
    return len(choices - done)


def _blend(prior: float, observed_sum: float, observed_count: int) -> float:
    return (prior * PRIOR_TRIALS + observed_sum) / (PRIOR_TRIALS + observed_count)


def _epochs(trial: FrozenTrial) -> int:
    return 0 if "infeasible" in trial.user_attrs else int(trial.user_attrs.get("epochs_run", 0))


def _enqueued(trial: FrozenTrial) -> bool:
    """The seed baselines and warm starts: queued by hand, not the sampler's mix."""
    return bool(trial.user_attrs.get("baseline")) or "warm_start_of" in trial.user_attrs


def _outside_training(finished: Sequence[FrozenTrial]) -> float:
    """Seconds per trial spent outside training (sampling, building, storage writes): each trial's
    wall time less its training seconds, so a pause between two runs of a study does not count."""
    walls = [
        (t.datetime_complete - t.datetime_start).total_seconds() - t.user_attrs.get("seconds", 0.0)
        for t in finished
        if t.datetime_start and t.datetime_complete
    ]
    return max(sum(walls) / len(walls), 0.0) if walls else 0.0


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
