"""Per-trial fixed cost: what a new architecture's first epoch costs beyond its later ones.

A search trains a different network every trial, so each trial pays set-up once: moving the model,
building the optimizer, the eager warm-up steps, capturing the CUDA graph, and the first use of
every new layer shape (cuDNN / cuBLAS plans). On the H100, trial seconds fitted 0.29 s per epoch
plus 0.28 s per trial (docs/benchmarks.md), and that fit times only ``train()``: the sampler, the
storage and gc come on top. This script measures the intercept directly, on the study's own data
split: for configs drawn at random from a space, the first epoch's seconds minus the median later
epoch, and with ``--profile N`` the N costliest operators of one more config's first epoch.

    python bench/trial_overhead.py --space gap_cnn --configs 8 --epochs 3 --profile 20
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import optuna
import torch

from search.cpu import configure_process
from search.data import Split, load_mnist, resolve_data_dir, split_train_val
from search.profile import DeviceProfile
from search.train import count_params, resolve_device, train
from spaces import InvalidArchitecture, get_space
from spaces.training import TrainSettings


def sample_configs(space_name: str, count: int, epochs: int) -> list[dict]:
    """``count`` random configs of the space that fit its budget, each trained for ``epochs``."""
    space = get_space(space_name)
    budget = space.budget(None, epochs)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    configs: list[dict] = []
    while len(configs) < count:
        config = space.suggest(study.ask(), budget)
        try:
            params = count_params(space.build(config))
        except InvalidArchitecture:
            continue
        if budget.max_params is None or params <= budget.max_params:
            configs.append(config | {"epochs": epochs, "params": params})
    return configs


def epoch_seconds(space_name: str, config: dict, data: tuple, device: torch.device) -> list[float]:
    """Wall seconds of each epoch, evaluation included (it syncs with the device every epoch),
    timed from the call to ``train()`` as the driver times a trial."""
    model = get_space(space_name).build(config)
    stamps = [time.perf_counter()]
    train(
        model,
        *data,
        TrainSettings.from_config(config),
        profile=DeviceProfile.resolve(device, model=model),  # as a trial resolves it: timed too
        on_epoch=lambda *_: stamps.append(time.perf_counter()),
    )
    return [b - a for a, b in itertools.pairwise(stamps)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="gap_cnn")
    p.add_argument("--configs", type=int, default=8, help="random configs to time")
    p.add_argument("--epochs", type=int, default=3, help="epochs per config (at least 2)")
    p.add_argument("--train-subset", type=int, help="train on this many images (default: the whole split)")
    p.add_argument("--val-size", type=int, default=10_000, help="as mnist-search's --val-size")
    p.add_argument(
        "--profile", type=int, default=0, metavar="N", help="print the N costliest operators of a first epoch"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir")
    p.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = p.parse_args()
    if args.epochs < 2:
        p.error("--epochs must be at least 2: the later epochs are the baseline")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    device = resolve_device(args.device)
    configure_process(device)  # as a search's worker does
    mnist = load_mnist(resolve_data_dir(args.data_dir), download=False)
    data = split_train_val(mnist.train, Split(args.val_size, 0, args.train_subset))
    data = tuple(part.to(device) for part in data)
    # The first config warms the process up (CUDA context, libraries); the last one is profiled.
    warm_up, *timed, profiled = sample_configs(args.space, args.configs + 2, args.epochs)
    epoch_seconds(args.space, warm_up, data, device)
    rows = []
    for config in timed:
        seconds = epoch_seconds(args.space, config, data, device)
        later = statistics.median(seconds[1:])
        rows.append({"params": config["params"], "batch_size": config["batch_size"], "first_epoch_s": seconds[0],
                     "later_epoch_s": later, "fixed_s": seconds[0] - later})  # fmt: skip
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"# {args.space}: {len(data[0]):,} training images/epoch, {name}, torch {torch.__version__}")
    print("| params | batch | first epoch s | later epoch s | fixed s |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        cells = [
            f"{r['params']:,}",
            r["batch_size"],
            *(f"{r[k]:.3f}" for k in ("first_epoch_s", "later_epoch_s", "fixed_s")),
        ]
        print("| " + " | ".join(map(str, cells)) + " |")
    print(f"per-trial fixed cost: median {statistics.median(r['fixed_s'] for r in rows):.3f} s")
    if args.profile:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as profile:
            epoch_seconds(args.space, profiled | {"epochs": 1}, data, device)  # a new architecture
        print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
