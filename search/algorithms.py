"""The Optuna samplers and pruners a study can use, by the names the CLI takes."""

from __future__ import annotations

import math
import warnings

import optuna

from search.pruning import PeerPruner

SAMPLERS = ("tpe", "random", "gp", "cmaes")
PRUNERS = ("peers", "median", "hyperband", "sha", "none")


# Trials each model-based sampler draws at random before it models the study: Optuna 5.1's defaults, kept as ours.
STARTUP_TRIALS = {"tpe": 10, "gp": 10, "cmaes": 1}


def make_sampler(name: str, seed: int, startup_trials: int | None = None) -> optuna.samplers.BaseSampler:
    """``startup_trials``: the finished trials (queued ones included) a model-based sampler waits for,
    drawing at random, before it models the study; None keeps the sampler's own count."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name not in STARTUP_TRIALS:
        raise ValueError(f"unknown sampler {name!r}")
    startup = STARTUP_TRIALS[name] if startup_trials is None else startup_trials
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False)
    # multivariate + group model the conditional spaces; constant_liar spreads parallel workers.
    with warnings.catch_warnings():  # gamma is deprecated in Optuna 4.9 and stays until 6, above our pin
        warnings.filterwarnings("ignore", message="`gamma` has been deprecated", category=FutureWarning)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup, multivariate=True, group=True, constant_liar=True,
            gamma=tpe_good_trials,
        )  # fmt: skip


def tpe_good_trials(finished: int) -> int:
    """How many of the finished trials TPE takes as the good ones: ceil(0.25·√n), hyperopt's rule,
    where Optuna's is ceil(0.1·n). Under the peers pruner a 100-trial study completes about one
    trial in ten, and Optuna's share then makes every completion good, however poor; whole studies
    with each rule are in docs/benchmarks.md."""
    return min(math.ceil(0.25 * math.sqrt(finished)), 25)


PRUNE_FROM_EPOCH = 4  # the median pruner's
# The peers pruner's (the default): judged from the first epoch, the best third goes on; whole
# studies with these against epoch 2 and the top half are in docs/benchmarks.md.
PEERS_FROM_EPOCH = 1
PRUNE_KEEP = 0.3333
JUDGE_AMONG = 8  # completed trials the median pruner needs at an epoch before it judges there


def make_pruner(
    name: str, max_epochs: int, prune_from_epoch: int | None = None, keep: float = PRUNE_KEEP
) -> optuna.pruners.BasePruner:
    """Epochs are the pruning steps; ``max_epochs`` is the study's epoch cap. The peers pruner
    (search.pruning) judges a trial from ``prune_from_epoch`` (default 1) on against the completed
    trials of its schedule, keeping the best ``keep`` share, and holds every trial to a floor across
    schedules; the median pruner judges from epoch 4
    on, and only against the median of at least ``JUDGE_AMONG`` completed trials that trained that
    far."""
    if name == "peers":
        # Against the median pruner: far fewer training seconds for an equal best in equal time
        # (bench/ab_pruners.py over 5 seeds; docs/benchmarks.md).
        return PeerPruner(PEERS_FROM_EPOCH if prune_from_epoch is None else prune_from_epoch, keep)
    if name == "median":
        # Epoch 4: OneCycle and augmented trials start slow and finish strong. Replays of recorded
        # studies favoured epoch 2, but real A/B studies, where pruning also steers the sampler,
        # found a lower best with it (docs/benchmarks.md).
        warmup = PRUNE_FROM_EPOCH if prune_from_epoch is None else prune_from_epoch
        # Count curves at the epoch (n_min_trials), not completed trials (n_startup_trials):
        # over-budget trials complete without training, and one curve would judge every trial.
        return optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=warmup, n_min_trials=JUDGE_AMONG)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}")
