"""Does a moving average of the weights pay? Live weights against their averages, on one run.

    python bench/ab_ema.py examples/warm-starts/gap_cnn-5k-c.json --decays 0.998 0.999 0.9995 --seeds 0 1 2

Each seed trains the config once, through ``search.train.train``, on a search's default split (the
test set is never read). The averages do not change the training, so every seed's run holds an
exact pair: the live weights and each decay's average of that same trajectory, all evaluated on
the validation split after every epoch. Prints validation accuracy per epoch and arm, and the
final-epoch mean over the seeds; ``--out`` writes every curve as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch

import search.train
from search.averaging import WeightAverage
from search.cpu import configure_process
from search.data import Split, load_mnist, resolve_data_dir, split_train_val
from search.export import load_record
from search.run import Run
from search.train import accuracy
from spaces import get_space


class Averages:
    """Stands in for the loop's one average: updates one per decay and remembers the live model."""

    def __init__(self, model: torch.nn.Module, decays: list[float]) -> None:
        self.averages = {decay: WeightAverage(model, decay) for decay in decays}
        self.module = self.averages[decays[0]].module  # what the loop evaluates and returns
        self.live: torch.nn.Module | None = None

    def update_parameters(self, model: torch.nn.Module) -> None:
        self.live = model
        for average in self.averages.values():
            average.update_parameters(model)


def run_seed(record: dict[str, Any], decays: list[float], seed: int, data: tuple) -> dict[str, list[float]]:
    train_set, val_set = data
    holder: dict[str, Averages] = {}

    def averages(model: torch.nn.Module, decay: float) -> Averages:
        holder["averages"] = Averages(model, decays)
        return holder["averages"]

    curves: dict[str, list[float]] = {"live": [], **{str(d): [] for d in decays}}
    search.train.WeightAverage = averages  # type: ignore[assignment,misc]  # the loop's average, swapped for the arms
    config = {**record["config"], "ema": decays[0]}
    run = Run.build(get_space(record["space"]), config, seed=seed, device=torch.device("cpu"), precision="auto")

    def on_epoch(epoch: int, _: float) -> None:
        held = holder["averages"]
        assert held.live is not None
        curves["live"].append(accuracy(held.live, val_set, run.profile))
        for decay, average in held.averages.items():
            curves[str(decay)].append(accuracy(average.module, val_set, run.profile))
        print(f"seed {seed} epoch {epoch}: " + "  ".join(f"{k} {v[-1]:.4f}" for k, v in curves.items()), flush=True)

    run.train(train_set, val_set, on_epoch)
    return curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="an exported config or warm start")
    parser.add_argument(
        "--decays", type=float, nargs="+", default=[0.998, 0.999, 0.9995], help="(default: %(default)s)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="(default: %(default)s)")
    parser.add_argument("--data-dir", default=None, help="MNIST folder (default: $MNIST_SEARCH_DATA or ./data)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for every curve (default: none)")
    args = parser.parse_args()
    record = load_record(args.config)
    configure_process(torch.device("cpu"))
    data = split_train_val(load_mnist(resolve_data_dir(args.data_dir)).train, Split())
    runs = {seed: run_seed(record, args.decays, seed, data) for seed in args.seeds}
    print("\nfinal epoch, validation, mean over seeds " + " ".join(map(str, args.seeds)))
    for arm in runs[args.seeds[0]]:
        finals = [runs[s][arm][-1] for s in args.seeds]
        gain = statistics.mean(f - runs[s]["live"][-1] for f, s in zip(finals, args.seeds, strict=True))
        each = ", ".join(f"{f:.2%}" for f in finals)
        print(f"  {arm:>7}: {statistics.mean(finals):.4%}  ({each})  vs live {gain:+.3%}")
    if args.out:
        args.out.write_text(json.dumps({"config": str(args.config), "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
