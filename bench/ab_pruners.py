"""Pruner A/B: the same search run for real under several --prune-from-epoch values.

Where bench/replay_pruners.py replays recorded curves (cheap, but blind to how pruning changes what
the sampler proposes next), this runs whole studies through the real CLI, one per (epoch, seed),
and compares the epochs and seconds they trained and the best validation accuracy they found.
Studies with the same seed start from the same trials; they part ways once pruning differs.

    python bench/ab_pruners.py --space ffn --trials 40 --epochs 10 --train-subset 10000 \\
        --prune-from 4 2 --seeds 0 1 2 3 4 5 --device cpu --parallel 2
"""

from __future__ import annotations

import argparse
import json
import os
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


def run_study(args: argparse.Namespace, prune_from: int, seed: int, folder: Path, threads: int) -> dict:
    storage = f"sqlite:///{folder}/p{prune_from}-s{seed}.db"
    command = [
        sys.executable, "-m", "search.cli", "--space", args.space, "--trials", str(args.trials),
        "--epochs", str(args.epochs), "--train-subset", str(args.train_subset), "--val-size", str(args.val_size),
        "--seed", str(seed),
        "--prune-from-epoch", str(prune_from), "--storage", storage, "--study-name", "ab",
        "--device", args.device, "--artifacts", "", "--quiet",
    ]  # fmt: skip
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MNIST_SEARCH_THREADS": str(threads)}
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
    study = optuna.load_study(study_name="ab", storage=storage)
    effort = training_effort(study)
    return {
        "prune_from_epoch": prune_from,
        "seed": seed,
        "epochs": effort["epochs"],
        "train_seconds": round(effort["seconds"], 1),
        "pruned": sum(t.state.name == "PRUNED" for t in study.trials),
        "best_val": [round(t.values[0], 4) for t in ranked_trials(study)[:3]],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="ffn")
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--epochs", type=int, default=10, help="epoch cap per trial")
    p.add_argument("--train-subset", type=int, default=10_000)
    p.add_argument("--val-size", type=int, default=10_000)
    p.add_argument("--prune-from", type=int, nargs="+", default=[4, 2], help="first value is the baseline")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir")
    p.add_argument("--parallel", type=int, default=1, help="studies at once (CPU threads are shared out)")
    p.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = p.parse_args()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    threads = max(1, (os.cpu_count() or 1) // args.parallel)
    runs = [(w, s) for s in args.seeds for w in args.prune_from]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.parallel) as pool:
        rows = list(pool.map(lambda run: run_study(args, *run, Path(tmp), threads), runs))
    print("| prune from epoch | seed | epochs | training s | pruned | best 3 val |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cells = [r["prune_from_epoch"], r["seed"], r["epochs"], r["train_seconds"], r["pruned"]]
        print("| " + " | ".join(map(str, cells)) + " | " + ", ".join(f"{v:.4f}" for v in r["best_val"]) + " |")
    base = {r["seed"]: r for r in rows if r["prune_from_epoch"] == args.prune_from[0]}
    for w in args.prune_from[1:]:
        mine = [r for r in rows if r["prune_from_epoch"] == w]
        ratios = [base[r["seed"]]["epochs"] / r["epochs"] for r in mine]
        deltas = [r["best_val"][0] - base[r["seed"]]["best_val"][0] for r in mine]
        print(
            f"from epoch {w} vs {args.prune_from[0]}: {statistics.mean(ratios):.2f}x fewer epochs "
            f"({min(ratios):.2f}-{max(ratios):.2f}); best val {statistics.mean(deltas) * 100:+.2f} pp on average "
            f"({min(deltas) * 100:+.2f} to {max(deltas) * 100:+.2f}), same seed"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
