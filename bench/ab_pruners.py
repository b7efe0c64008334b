"""Pruner A/B: the same search run for real under several pruners (``[REV@]PRUNER:EPOCH[:KEEP]``
arms: --pruner, --prune-from-epoch and --prune-keep, run by this tree or, with ``REV@``, by that git
revision's tree checked out in a temporary worktree, to measure a change to a pruner itself).

Where bench/replay_pruners.py replays recorded curves (cheap, but blind to how pruning changes what
the sampler proposes next), this runs whole studies through the real CLI, one per (epoch, seed),
and compares the epochs and seconds they trained and the best validation accuracy they found.
Studies with the same seed start from the same trials; they part ways once pruning differs.

    python bench/ab_pruners.py --space ffn --trials 40 --epochs 10 --train-subset 10000 \\
        --arms median:4 median:2 --seeds 0 1 2 3 4 5 --device cpu --parallel 2
    python bench/ab_pruners.py --space gap_cnn --arms a6be49b@peers:1 peers:1 ...

Besides epochs, seconds and the best three, each study reports the training seconds it took to
first hold a trial at ``--to`` validation accuracy, and its best within the first ``--at``
training seconds (default: the shortest study's total), trials taken in the order they ended.
``--max-params`` gives every study a frontier's budget, under which the seed config may not fit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna

from search.results import ranked_trials, training_effort

REPO = Path(__file__).resolve().parents[1]


def parse_arm(arm: str) -> tuple[str, str, str, list[str]]:
    """``[REV@]PRUNER:EPOCH[:KEEP]`` as (revision, or "" for this tree; pruner; epoch; [keep])."""
    revision, _, setting = arm.rpartition("@")
    pruner, prune_from, *keep = setting.split(":")
    return revision, pruner, prune_from, keep


def revision_slug(revision: str) -> str:
    """A revision as part of a file name: it may hold '/' ('origin/main')."""
    return re.sub(r"[^A-Za-z0-9.]+", "_", revision)


def study_file(arm: str, seed: int) -> str:
    revision, pruner, prune_from, keep = parse_arm(arm)
    prefix = f"{revision_slug(revision)}-" if revision else ""
    return f"{prefix}{pruner}{prune_from}{'k' + keep[0] if keep else ''}-s{seed}.db"


def run_study(args: argparse.Namespace, arm: str, seed: int, folder: Path, threads: int, tree: Path) -> dict:
    _, pruner, prune_from, keep = parse_arm(arm)
    storage = f"sqlite:///{folder}/{study_file(arm, seed)}"
    command = [
        sys.executable, "-m", "search.cli", "--space", args.space, "--trials", str(args.trials),
        "--epochs", str(args.epochs), "--train-subset", str(args.train_subset), "--val-size", str(args.val_size),
        "--seed", str(seed),
        "--pruner", pruner, "--prune-from-epoch", prune_from, *(["--prune-keep", keep[0]] if keep else []),
        "--storage", storage, "--study-name", "ab",
        "--device", args.device, "--artifacts", "", "--quiet",
    ]  # fmt: skip
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    if args.max_params:
        command += ["--max-params", str(args.max_params)]
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MNIST_SEARCH_THREADS": str(threads)}
    subprocess.run(command, cwd=tree, env=env, check=True, capture_output=True)
    study = optuna.load_study(study_name="ab", storage=storage)
    effort = training_effort(study)
    ended = sorted((t for t in study.trials if t.datetime_complete), key=lambda t: t.datetime_complete)
    timeline, clock = [], 0.0  # (training seconds so far, the trial's value if complete and feasible)
    feasible = {t.number for t in ranked_trials(study)}
    for t in ended:
        clock += t.user_attrs.get("seconds", 0.0)
        timeline.append((round(clock, 1), t.values[0] if t.number in feasible else None))
    return {
        "arm": arm,
        "seed": seed,
        "epochs": effort["epochs"],
        "train_seconds": round(effort["seconds"], 1),
        "pruned": sum(t.state.name == "PRUNED" for t in study.trials),
        "best_val": [round(t.values[0], 4) for t in ranked_trials(study)[:3]],
        "timeline": timeline,
    }


def seconds_to(row: dict, accuracy: float) -> float | None:
    return next((clock for clock, value in row["timeline"] if value is not None and value >= accuracy), None)


def best_within(row: dict, seconds: float) -> float:
    return max((value for clock, value in row["timeline"] if value is not None and clock <= seconds), default=0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="ffn")
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--epochs", type=int, default=10, help="epoch cap per trial")
    p.add_argument("--train-subset", type=int, default=10_000)
    p.add_argument("--val-size", type=int, default=10_000)
    p.add_argument("--max-params", type=int, help="parameter budget, as a frontier study's (default: the family cap)")
    p.add_argument(
        "--arms",
        nargs="+",
        default=["median:4", "peers:2"],
        help="[REV@]PRUNER:EPOCH[:KEEP]; the first is the baseline (default: median:4 peers:2)",
    )
    p.add_argument("--to", type=float, default=0.99, help="validation accuracy to time (default: 0.99)")
    p.add_argument("--at", type=float, help="training seconds to read the best at (default: the shortest study)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir")
    p.add_argument("--parallel", type=int, default=1, help="studies at once (CPU threads are shared out)")
    p.add_argument("--out", type=Path, help="also write the rows as JSON here")
    p.add_argument("--keep-studies", type=Path, help="keep the SQLite files here (default: a temporary folder)")
    args = p.parse_args()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    threads = max(1, (os.cpu_count() or 1) // args.parallel)
    runs = [(arm, s) for s in args.seeds for arm in args.arms]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.parallel) as pool:
        folder = Path(tmp)
        if args.keep_studies:
            args.keep_studies.mkdir(parents=True, exist_ok=True)
            folder = args.keep_studies
        revisions = {parse_arm(arm)[0] for arm in args.arms} - {""}
        trees = {revision: Path(tmp) / f"tree-{revision_slug(revision)}" for revision in revisions}
        for revision, tree in trees.items():
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), revision], cwd=REPO, check=True)

        def run(arm_seed: tuple[str, int]) -> dict:
            arm, seed = arm_seed
            return run_study(args, arm, seed, folder, threads, trees.get(parse_arm(arm)[0], REPO))

        try:
            rows = list(pool.map(run, runs))
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=True)
    at = args.at or min(r["train_seconds"] for r in rows)
    print(f"| arm | seed | epochs | training s | pruned | best 3 val | s to {args.to} | best in {at:.0f} s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        to = seconds_to(r, args.to)
        cells = [r["arm"], r["seed"], r["epochs"], r["train_seconds"], r["pruned"]]
        cells += [", ".join(f"{v:.4f}" for v in r["best_val"]), "never" if to is None else f"{to:.0f}"]
        print("| " + " | ".join(map(str, cells)) + f" | {best_within(r, at):.4f} |")
    base = {r["seed"]: r for r in rows if r["arm"] == args.arms[0]}
    for arm in args.arms[1:]:
        mine = [r for r in rows if r["arm"] == arm]
        ratios = [base[r["seed"]]["train_seconds"] / r["train_seconds"] for r in mine]
        deltas = [r["best_val"][0] - base[r["seed"]]["best_val"][0] for r in mine]
        at_deltas = [best_within(r, at) - best_within(base[r["seed"]], at) for r in mine]
        print(
            f"{arm} vs {args.arms[0]}: {statistics.mean(ratios):.2f}x fewer training seconds "
            f"({min(ratios):.2f}-{max(ratios):.2f}); best val {statistics.mean(deltas) * 100:+.2f} pp on average "
            f"({min(deltas) * 100:+.2f} to {max(deltas) * 100:+.2f}); best in {at:.0f} s "
            f"{statistics.mean(at_deltas) * 100:+.2f} pp ({sum(d > 0 for d in at_deltas)} higher, "
            f"{sum(d < 0 for d in at_deltas)} lower), same seed"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
