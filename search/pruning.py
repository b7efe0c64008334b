"""The ``peers`` pruner: a trial is judged against the completed trials trained under its own
learning-rate schedule, from the study's first trial on.

Optuna's median pruner waits for enough completed curves at an epoch (8 here) before it judges
there, so a study's first dozen trials always train to the end. The seed baseline (trial 0) is a
whole learning curve from the first minute, and each completed trial adds one. Comparing only
within a schedule keeps a OneCycle trial, slow while its rate is high, from being stopped for
that dip against a constant-rate curve. The first trial of a schedule has no peer: it trains to
the end and becomes the reference for the rest. (Judging it against the other schedules' curves
pruned every OneCycle trial of a full-data study: at its peak rate an Adam OneCycle run was at
97.8% where the seed's constant rate was at 98.9%; docs/benchmarks.md.)

Under OneCycle the rate follows the share of the run done, not the epoch: at epoch 2 a 20-epoch run
is still warming up, where a 10-epoch one is near its peak rate. So OneCycle trials are compared at
equal shares of their own runs (a peer's curve read straight between its epochs), and a trial is
not judged until a peer has a reading that early. The idea (not measured apart): at equal shares the
rest of each run adds about as much, so the comparison follows the final ranking; a short run
held to a long peer is behind, and the study's objective, the final value, counts that too. A
constant rate, and StepLR's steps, depend on the epoch alone: those are compared at equal epochs.

Within a schedule, a single poor peer sets a bar anyone passes, and under a small budget the seed
config may not fit, leaving no constant-rate reference at all (a 5k frontier search pruned none of
its trials; docs/benchmarks.md). So every trial is also held to a floor that spans schedules:
stopped when its error (the shortfall from a perfect score) is more than ``FLOOR_ERROR_RATIO``
times the median error of all completed curves at the same share of the run. The ratio is loose
on purpose: across schedules a curve's shape differs, and a StepLR run before its step can sit
well behind a finished curve and still win.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

SCHEDULE_KEY = "schedule"  # a config without one is judged against every completed trial
EPOCHS_KEY = "epochs"
BY_SHARE_OF_RUN = frozenset({"onecycle"})  # schedules whose rate follows the share of the run done
# Loose enough to keep the searched 8k winner, a StepLR run, before its step (docs/benchmarks.md).
FLOOR_ERROR_RATIO = 3.0


class PeerPruner(optuna.pruners.BasePruner):
    """Stop a trial at an epoch from ``from_epoch`` on when its best value so far is not among the
    best ``keep`` share of its peers' values at that point (0.5: below their median). Peers are
    completed trials with the same ``schedule`` parameter that have a reading there (the same epoch,
    or the same share of the run under OneCycle); with fewer than ``min_peers`` of them, only the
    floor judges. The floor: an error more than ``floor_ratio`` times the median error of every
    completed curve, whatever its schedule, at the same share of the run (error: 1 - value when
    maximizing an accuracy, the value itself when minimizing); 0 turns it off."""

    def __init__(
        self, from_epoch: int, keep: float, min_peers: int = 1, floor_ratio: float = FLOOR_ERROR_RATIO
    ) -> None:
        self.from_epoch, self.keep, self.min_peers, self.floor_ratio = from_epoch, keep, min_peers, floor_ratio

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.from_epoch:
            return False
        maximize = study.direction == StudyDirection.MAXIMIZE
        own = [v for v in trial.intermediate_values.values() if not math.isnan(v)]
        if not own:
            return True  # only NaN so far: it cannot get better than its peers
        best = max(own) if maximize else min(own)
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if self.floor_ratio and self._below_floor(trial, completed, step, best, maximize):
            return True
        schedule = trial.params.get(SCHEDULE_KEY)
        same_schedule = [t for t in completed if t.params.get(SCHEDULE_KEY) == schedule]
        readings = [_reading(t, _peer_epoch(trial, t, step)) for t in same_schedule]
        peers = [value for value in readings if value is not None]
        if len(peers) < self.min_peers:
            return False  # the first of its schedule: nothing fair to judge it against
        bar = _quantile(peers, 1 - self.keep if maximize else self.keep)
        return best < bar if maximize else best > bar

    def _below_floor(
        self, trial: FrozenTrial, completed: Sequence[FrozenTrial], step: int, best: float, maximize: bool
    ) -> bool:
        readings = [_reading(t, _share_epoch(trial, t, step)) for t in completed]
        errors = [1 - value if maximize else value for value in readings if value is not None]
        if not errors:
            return False
        own_error = 1 - best if maximize else best
        floor = self.floor_ratio * _quantile(errors, 0.5)
        return floor > 0 and own_error > floor  # a ratio to a perfect score tells nothing


def _peer_epoch(trial: FrozenTrial, peer: FrozenTrial, step: int) -> float:
    """Where the peer's curve is comparable with the trial's at ``step``: the same share of the run
    under a schedule in BY_SHARE_OF_RUN, the same epoch otherwise."""
    if trial.params.get(SCHEDULE_KEY) in BY_SHARE_OF_RUN:
        return _share_epoch(trial, peer, step)
    return step


def _share_epoch(trial: FrozenTrial, peer: FrozenTrial, step: int) -> float:
    """The peer's epoch at the share of its run that ``step`` is of the trial's (the same epoch
    where either run's length is unknown)."""
    if EPOCHS_KEY in trial.params and EPOCHS_KEY in peer.params:
        return step * peer.params[EPOCHS_KEY] / trial.params[EPOCHS_KEY]  # exact where it divides
    return step


def _reading(trial: FrozenTrial, epoch: float) -> float | None:
    """The trial's validation value at a possibly fractional epoch, straight between the epochs on
    either side; None before its first epoch, past its last, or where a reading is missing or NaN."""
    low, high = math.floor(epoch), math.ceil(epoch)
    values = trial.intermediate_values
    if low not in values or high not in values or math.isnan(values[low]) or math.isnan(values[high]):
        return None
    return values[low] + (values[high] - values[low]) * (epoch - low)


def _quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile, linear between order statistics (q = 0.5: the median)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
