"""How good the time-to-go estimate would have been: replay a recorded study's trials in the order
they ended and, after each from ``--from`` on, compare the estimate the progress bar would have
shown (``search.estimate``) with the wall time the rest of the study then took.

    python bench/replay_estimate.py --storage sqlite:///studies/mnist-search.db --study-name gap_cnn

The wall time it is compared with excludes nothing: sampling, storage writes and the start-up of
each trial count against the estimate, which adds the study's own time outside training.

Each row also splits the error into its factors, and gives a ceiling:

- ``true_epochs_s``: the estimate's seconds per epoch times the epochs the rest really trained;
- ``true_pace_s``: the estimate's epochs times the seconds per epoch the rest really took;
- ``constant_rate_s``: the study's own whole-run rates (epochs per sampled trial, seconds per
  epoch, seconds outside training per trial) times the trials left: a one-pace estimate told the
  rates in hindsight. It is a reference, not a bound (another pace can land more points by
  chance); what it misses is the order the trials came in.

A study run with ``--jobs`` is replayed as each line saw its storage (``as_the_line_saw_it``: the
trials other workers had in flight still RUNNING), and the three reference columns are divided by
the workers the estimate then counts.
"""

from __future__ import annotations

import argparse
import copy
import json
import warnings

import optuna

from search.algorithms import PRUNE_KEEP, make_pruner
from search.estimate import Ended, Pruning, _enqueued, _epochs, _outside_training, estimate
from search.storage import open_storage
from spaces.states import FINISHED


def replay(study: optuna.Study, pruning: Pruning, start: int, device: str | None) -> list[dict]:
    trials = sorted((t for t in study.trials if t.state in FINISHED), key=lambda t: t.datetime_complete)
    if not trials:
        return []
    end = trials[-1].datetime_complete
    device = device or next((t.user_attrs["device"] for t in trials if "device" in t.user_attrs), "cpu")
    max_epochs = study.user_attrs.get("max_epochs", 20)
    sampled = [t for t in trials if not _enqueued(t)] or trials
    whole_epochs_per_trial = sum(map(_epochs, sampled)) / len(sampled)
    whole_pace = _seconds(trials) / max(sum(map(_epochs, trials)), 1)
    whole_outside = _outside_training(trials)
    rows = []
    for done in range(start, len(trials)):
        seen, rest = trials[:done], trials[done:]
        stored, ended = as_the_line_saw_it(seen, rest)
        guess = estimate(stored, len(trials), device, max_epochs, just_finished=ended, pruning=pruning)
        workers = max(1, sum(t.state == optuna.trial.TrialState.RUNNING for t in stored))  # as the estimate counts them
        if guess is None:
            continue
        actual = (end - seen[-1].datetime_complete).total_seconds()
        rest_epochs = sum(map(_epochs, rest))
        outside = len(rest) * _outside_training(seen)
        epochs_guess = guess.epochs_per_trial * len(rest)
        rows.append({
            "finished": done,
            "estimate_s": round(guess.remaining_seconds, 1),
            "actual_s": round(actual, 1),
            "error": round(guess.remaining_seconds / actual - 1, 3) if actual > 0 else None,
            "true_epochs_s": round((rest_epochs * guess.seconds_per_epoch + outside) / workers, 1),
            "true_pace_s": round((epochs_guess * _seconds(rest) / max(rest_epochs, 1) + outside) / workers, 1),
            "constant_rate_s": round(len(rest) * (whole_epochs_per_trial * whole_pace + whole_outside) / workers, 1),
        })  # fmt: skip
    return rows


def as_the_line_saw_it(seen: list, rest: list) -> tuple[list, Ended]:
    """The storage as the progress line of ``seen[-1]`` read it: that trial not yet told, and the
    trials other workers had in flight (started before it ended) still RUNNING."""
    last = seen[-1]
    at = last.datetime_complete
    in_flight = [t for t in (last, *rest) if t.datetime_start and t.datetime_start < at]
    running = []
    for t in in_flight:
        copied = copy.copy(t)
        copied.state = optuna.trial.TrialState.RUNNING
        running.append(copied)
    infeasible = "infeasible" in last.user_attrs
    ended = Ended(last.number, last.user_attrs.get("seconds", 0.0), _epochs(last), last.state, infeasible, at)
    return [*seen[:-1], *running], ended


def within(rows: list[dict], key: str, band: float = 0.3) -> int:
    """How many rows have ``key`` within ``band`` of the time the rest of the study took."""
    return sum(abs(r[key] / r["actual_s"] - 1) <= band for r in rows if r["actual_s"] > 0)


def _seconds(trials: list) -> float:
    return sum(t.user_attrs.get("seconds", 0.0) for t in trials if _epochs(t))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--storage", required=True)
    p.add_argument("--study-name", required=True)
    p.add_argument("--pruner", default="peers", help="the study's --pruner (default: peers)")
    p.add_argument("--prune-from-epoch", type=int, help="the study's --prune-from-epoch")
    p.add_argument(
        "--prune-keep", type=float, default=PRUNE_KEEP, help=f"the study's --prune-keep (default: {PRUNE_KEEP})"
    )
    p.add_argument("--from", dest="start", type=int, default=5, help="first finished-trial count to check")
    p.add_argument("--device", help="the device whose trials time the epochs (default: the study's)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=args.study_name, storage=open_storage(args.storage))  # read-only
    pruner = make_pruner(args.pruner, study.user_attrs.get("max_epochs", 20), args.prune_from_epoch, args.prune_keep)
    rows = replay(study, Pruning.of(pruner), args.start, args.device)
    if args.json:
        print(json.dumps(rows))
        return
    print("| finished | estimate | actual | error |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        error = "-" if r["error"] is None else f"{r['error']:+.0%}"
        print(f"| {r['finished']} | {r['estimate_s']:.0f} s | {r['actual_s']:.0f} s | {error} |")
    errors = [abs(r["error"]) for r in rows if r["error"] is not None and r["actual_s"] > 0]
    if errors:
        n = len(errors)
        print(f"worst {max(errors):.0%}; within ±30% at {within(rows, 'estimate_s')} of {n} points")
        print(
            f"within ±30% with the true epochs: {within(rows, 'true_epochs_s')} of {n}; with the true pace: "
            f"{within(rows, 'true_pace_s')} of {n}; at the study's own constant rate: "
            f"{within(rows, 'constant_rate_s')} of {n}"
        )


if __name__ == "__main__":
    main()
