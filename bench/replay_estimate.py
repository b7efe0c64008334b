"""How good the time-to-go estimate would have been: replay a recorded study's trials in the order
they ended and, after each from ``--from`` on, compare the estimate the progress bar would have
shown (``search.estimate``) with the wall time the rest of the study then took.

    python bench/replay_estimate.py --storage sqlite:///studies/mnist-search.db --study-name gap_cnn

The wall time it is compared with excludes nothing: sampling, storage writes and the start-up of
each trial count against the estimate, which adds the study's own time outside training.
"""

from __future__ import annotations

import argparse
import json
import warnings

import optuna

from search.algorithms import PRUNE_KEEP, make_pruner
from search.estimate import Pruning, estimate
from search.storage import open_storage
from spaces.states import FINISHED


def replay(study: optuna.Study, pruning: Pruning, start: int, device: str | None) -> list[dict]:
    trials = sorted((t for t in study.trials if t.state in FINISHED), key=lambda t: t.datetime_complete)
    if not trials:
        return []
    end = trials[-1].datetime_complete
    device = device or next((t.user_attrs["device"] for t in trials if "device" in t.user_attrs), "cpu")
    max_epochs = study.user_attrs.get("max_epochs", 20)
    rows = []
    for done in range(start, len(trials)):
        seen = trials[:done]
        guess = estimate(seen, len(trials), device, max_epochs, pruning=pruning)
        if guess is None:
            continue
        actual = (end - seen[-1].datetime_complete).total_seconds()
        rows.append({
            "finished": done,
            "estimate_s": round(guess.remaining_seconds, 1),
            "actual_s": round(actual, 1),
            "error": round(guess.remaining_seconds / actual - 1, 3) if actual > 0 else None,
        })  # fmt: skip
    return rows


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
        inside = sum(e <= 0.3 for e in errors)
        print(f"worst {max(errors):.0%}; within ±30% at {inside} of {len(errors)} points")


if __name__ == "__main__":
    main()
