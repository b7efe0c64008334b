"""Pruner replay: what other pruning rules would have done to a study that already ran.

Each recorded trial is replayed, in trial order, into an in-memory study under each candidate
pruner: its real per-epoch validation accuracies are reported one by one until the pruner stops
it. The replay counts the epochs (and, from each trial's own measured seconds per epoch, the
training time) every rule would have spent, and which of the study's best trials it would have cut.

It cannot see past the recorded curves: a trial the real run pruned at epoch k and a replayed rule
lets through is counted as stopped at k, so a rule laxer than the real one looks cheaper than it is
(a harsher one is counted exactly); and the sampler would have proposed other trials once the
pruning changed. Read the result as an estimate from real learning curves, not as a new study.

    python bench/replay_pruners.py --storage sqlite:///studies/mnist-search.db --study-name gap_cnn
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.algorithms import JUDGE_AMONG, make_pruner
from search.storage import open_storage
from spaces.states import FINISHED

TOP = 5
P = optuna.pruners
CANDIDATES: dict[str, Callable[[int], optuna.pruners.BasePruner]] = {
    # name -> factory taking the study's epoch cap
    "median from epoch 4 (mnist-search default)": lambda cap: make_pruner("median", cap),
    "median from epoch 2": lambda cap: make_pruner("median", cap, 2),
    "median from epoch 3": lambda cap: make_pruner("median", cap, 3),
    "median from epoch 1": lambda cap: make_pruner("median", cap, 1),
    "percentile 25 (prune below the top quarter) from epoch 2": lambda _: P.PercentilePruner(
        25.0,
        n_startup_trials=0,
        n_warmup_steps=2,
        n_min_trials=JUDGE_AMONG,  # the median rule's judging crowd
    ),
    "successive halving (--pruner sha)": lambda cap: make_pruner("sha", cap),
    "hyperband (--pruner hyperband)": lambda cap: make_pruner("hyperband", cap),
}


@dataclass
class Replay:
    pruner: str
    epochs: int
    seconds: float  # training time, from each trial's own measured seconds per epoch
    pruned: int
    top_kept: int  # of the recorded study's best completed trials, how many this rule lets finish
    top: int
    best_kept: float | None
    cut_top: list[int]


def _finished(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state in FINISHED]


def _seconds_per_epoch(t: FrozenTrial) -> float:
    return t.user_attrs.get("seconds", 0.0) / max(1, len(t.intermediate_values))


def _top(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.intermediate_values]
    return sorted(done, key=lambda t: -t.values[0])[:TOP]


def recorded(trials: list[FrozenTrial]) -> Replay:
    """What the study really spent, under the pruner it ran with."""
    finished = _finished(trials)
    top = _top(trials)
    return Replay(
        pruner="as recorded",
        epochs=sum(len(t.intermediate_values) for t in finished),
        seconds=round(sum(t.user_attrs.get("seconds", 0.0) for t in finished if t.intermediate_values), 1),
        pruned=sum(t.state == TrialState.PRUNED for t in finished),
        top_kept=len(top),
        top=len(top),
        best_kept=top[0].values[0] if top else None,
        cut_top=[],
    )


def replay(trials: list[FrozenTrial], pruner: optuna.pruners.BasePruner, name: str) -> Replay:
    """Replay the recorded trials, in order, into an in-memory study pruned by ``pruner``."""
    top = _top(trials)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    epochs, seconds = 0, 0.0
    cut: set[int] = set()
    kept: list[float] = []
    for t in _finished(trials):
        if not t.intermediate_values:  # infeasible or invalid: no epoch ran, nothing to prune
            study.add_trial(optuna.trial.create_trial(state=t.state, value=t.value, params={}, distributions={}))
            continue
        trial = study.ask()
        stopped = False
        for step, value in sorted(t.intermediate_values.items()):
            trial.report(value, step)
            epochs += 1
            seconds += _seconds_per_epoch(t)
            if trial.should_prune():
                stopped = True
                break
        if stopped or t.state == TrialState.PRUNED:  # past a recorded pruning nothing is known
            study.tell(trial, state=TrialState.PRUNED)
            cut.add(t.number)
        else:
            study.tell(trial, t.values[0])
            kept.append(t.values[0])
    cut_top = [t.number for t in top if t.number in cut]
    return Replay(
        pruner=name,
        epochs=epochs,
        seconds=round(seconds, 1),
        pruned=len(cut),
        top_kept=len(top) - len(cut_top),
        top=len(top),
        best_kept=max(kept, default=None),
        cut_top=cut_top,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", required=True, help="the study's storage URL or journal file")
    parser.add_argument("--study-name", required=True)
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # storage heartbeat
    study = optuna.load_study(study_name=args.study_name, storage=open_storage(args.storage))
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    cap = max((t.params.get("epochs", 1) for t in trials), default=1)
    rows = [recorded(trials)] + [replay(trials, make(cap), name) for name, make in CANDIDATES.items()]
    print(f"{args.study_name}: {len(trials)} trials; top = its best completed trials ({TOP} at most)")
    print("| pruner | epochs | training s | × recorded | pruned | top kept | best val kept |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        best = f"{r.best_kept:.4f}" if r.best_kept is not None else "-"
        ratio = rows[0].seconds / r.seconds if r.seconds else float("inf")
        cells = [r.pruner, r.epochs, f"{r.seconds:.1f}", f"{ratio:.2f}", r.pruned, f"{r.top_kept}/{r.top}", best]
        print("| " + " | ".join(map(str, cells)) + " |")
    if args.out:
        args.out.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")


if __name__ == "__main__":
    main()
