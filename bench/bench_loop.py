"""Training-loop benchmark: the seed documents' DataLoader loop against mnist-search's loop.

In one run, on one device, it trains the same config (default: seed 004's GAP CNN) with
  1. the seed-style loop: Dataset + DataLoader + per-sample PIL ToTensor/Normalize, batch 128,
     with 1 and 4 loader workers (what seed 004 does, plus the usual speed-up);
  2. the project's loop (search.train.train): uint8 data resident on the device, indexed batches;
  3. the project's loop in N concurrent processes (what `mnist-search --jobs N` does),
and prints seconds per epoch, trials per hour and ratios against the seed-style loop.

    python bench/bench_loop.py --space gap_cnn --epochs 2 --jobs 2 4 8 --rounds 3 --out docs/bench.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from search.cpu import configure_process, cpu_has_native_bf16
from search.data import MEAN, STD, Tensors, load_mnist, resolve_data_dir
from search.mps import mps_daemon
from search.profile import DeviceProfile
from search.train import resolve_device, train
from spaces import get_space
from spaces.training import TrainSettings


class SeedStyleMnist(Dataset):
    """What torchvision's MNIST dataset does per sample: a PIL image, then the transforms."""

    def __init__(self, data: Tensors) -> None:
        self.images, self.labels = data.images.numpy(), data.labels.numpy()
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


def seed_style_epoch_seconds(config: dict, data: Tensors, device: torch.device, workers: int, epochs: int) -> float:
    """The seeds' loop: an optimizer step per DataLoader batch, loss.item() for the progress bar."""
    space = get_space(config["space"])
    model = space.build(config).to(device)
    if config["optimizer"] == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"], weight_decay=config.get("weight_decay", 0))
    loader = DataLoader(
        SeedStyleMnist(data),
        batch_size=config["batch_size"],
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    times = []
    for _ in range(epochs + 1):  # the first epoch warms up (worker start, cuDNN autotune)
        start = time.perf_counter()
        model.train()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            loss.item()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def project_epoch_seconds(
    config: dict, data: Tensors, val: Tensors, device: torch.device, epochs: int, **loop: bool
) -> float:
    """Seconds per epoch of search.train.train's training steps (the validation pass excluded);
    ``loop``: the profile's switches (precision, cuda_graph, channels_last)."""
    space = get_space(config["space"])
    warm = TrainSettings.from_config(config | {"epochs": 1})
    model = space.build(config)
    train(model, data, val, warm, profile=DeviceProfile.resolve(device, model=model, **loop))
    settings = TrainSettings.from_config(config | {"epochs": epochs})
    model = space.build(config)
    result = train(model, data, val, settings, profile=DeviceProfile.resolve(device, model=model, **loop))
    return result.train_seconds / epochs


# The loop's CUDA switches, each measured against the default (graph, bf16, channels-last).
CUDA_VARIANTS = {
    "CUDA graph, bf16, channels-last": {},
    "eager, bf16, channels-last": {"cuda_graph": False},
    "CUDA graph, fp32/TF32, channels-last": {"precision": "fp32"},
    "CUDA graph, bf16, NCHW": {"channels_last": False},
    "CUDA graph, fp32/TF32, NCHW": {"precision": "fp32", "channels_last": False},
}
# On the CPU: fp32, and (where the CPU has native bf16, what --precision auto then picks) bf16.
CPU_FP32 = {"fp32": {"precision": "fp32"}}
CPU_VARIANTS = {**CPU_FP32, "bf16 autocast, channels-last": {"precision": "bf16"}}


def _job(args: tuple) -> float:
    config, data_dir, n_train, device_name, epochs, barrier, threads = args
    device = resolve_device(device_name)
    configure_process(device)  # as each --jobs worker does
    torch.set_num_threads(threads)  # as --jobs does: the cores shared out, never oversubscribed
    data, val = _data(data_dir, n_train)
    space = get_space(config["space"])

    def trial(epochs_now: int) -> None:
        model = space.build(config)
        settings = TrainSettings.from_config(config | {"epochs": epochs_now})
        train(model, data, val, settings, profile=DeviceProfile.resolve(device, model=model))

    trial(1)
    barrier.wait()
    start = time.perf_counter()
    trial(epochs)
    return time.perf_counter() - start


def _job_entry(args: tuple, queue: mp.Queue) -> None:
    queue.put(_job(args))


def jobs_seconds_per_trial(config: dict, data_dir: str | None, n_train: int, device: str, epochs: int, jobs: int):
    """Wall seconds for ``jobs`` concurrent processes to each train one trial of ``epochs``."""
    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    barrier, queue = ctx.Barrier(jobs + 1), ctx.Queue()
    procs = [
        ctx.Process(target=_job_entry, args=((config, data_dir, n_train, device, epochs, barrier, threads), queue))
        for _ in range(jobs)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    start = time.perf_counter()
    for _ in procs:
        queue.get()
    wall = time.perf_counter() - start
    for p in procs:
        p.join()
    return wall


@contextmanager
def _environ(extra: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _data(data_dir: str | None, n_train: int) -> tuple[Tensors, Tensors]:
    mnist = load_mnist(resolve_data_dir(data_dir), download=False)
    index = torch.arange(n_train)
    # A small validation set keeps the per-epoch evaluation out of the way of the training timings.
    return mnist.train.select(index), mnist.train.select(torch.arange(58_000, 60_000))


def _ratio_range(seed_seconds: list[float], row_seconds: list[float]) -> list[float]:
    """The median, lowest and highest of the per-round ratios seed loop / row."""
    ratios = [a / b for a, b in zip(seed_seconds, row_seconds, strict=True)]
    return [statistics.median(ratios), min(ratios), max(ratios)]


def _cpu_model() -> str:
    try:
        lines = open("/proc/cpuinfo").read().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--space", default="gap_cnn")
    p.add_argument("--batch-sizes", type=int, nargs="*", default=[], help="more batch sizes for the project loop")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per measurement")
    p.add_argument("--rounds", type=int, default=1, help="interleaved repeats of every measurement")
    p.add_argument("--train-images", type=int, default=58_000)
    p.add_argument("--jobs", type=int, nargs="+", default=[4], help="concurrent processes to measure (and 1)")
    p.add_argument("--loader-workers", type=int, nargs="+", default=[1, 4])
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir")
    p.add_argument("--out", help="write the measurements as JSON here")
    args = p.parse_args()

    device = resolve_device(args.device)
    configure_process(device)  # as the CLI's search and retrain do: the loop measured is theirs
    config = get_space(args.space).baselines[0] | {"space": args.space}
    data, val = _data(args.data_dir, args.train_images)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    variants = CUDA_VARIANTS if device.type == "cuda" else CPU_VARIANTS if cpu_has_native_bf16() else CPU_FP32
    seed_labels = {w: f"seed-style DataLoader, batch {config['batch_size']}, {w} workers" for w in args.loader_workers}
    measures = {
        label: lambda w=w: seed_style_epoch_seconds(config, data, device, w, args.epochs)
        for w, label in seed_labels.items()
    }
    for bs in [config["batch_size"], *args.batch_sizes]:
        for label, loop in variants.items():
            measures[f"mnist-search loop, {label}, batch {bs}"] = lambda bs=bs, loop=loop: project_epoch_seconds(
                config | {"batch_size": bs}, data, val, device, args.epochs, **loop
            )
    # Rounds interleave every measurement, so a slow spell of a shared machine hits all rows alike;
    # each ratio is taken within a round, then the median and range over the rounds are reported.
    rounds = {label: [] for label in measures}
    for _ in range(args.rounds):
        for label, measure in measures.items():
            rounds[label].append(measure())
    rows = [{"loop": label, "s_per_epoch": statistics.median(s), "rounds_s": s} for label, s in rounds.items()]
    seed_loop_seconds = {w: statistics.median(rounds[label]) for w, label in seed_labels.items()}
    epochs_per_trial = config["epochs"]
    for row in rows:
        row["trials_per_hour"] = 3600 / (row["s_per_epoch"] * epochs_per_trial)

    def jobs_row(jobs: int, label: str) -> dict:
        wall = jobs_seconds_per_trial(config, args.data_dir, args.train_images, args.device, args.epochs, jobs)
        return {
            "loop": f"mnist-search loop, {jobs} process(es) at once{label}, batch {config['batch_size']}",
            "s_per_epoch": wall / args.epochs / jobs,
            "trials_per_hour": 3600 * jobs / (wall / args.epochs * epochs_per_trial),
        }

    many = [j for j in args.jobs if j > 1]
    if many:
        rows += [jobs_row(jobs, "") for jobs in [1, *many]]
    if many and device.type == "cuda":
        # The workers inherit the environment: MPS applies to processes started inside the block.
        with mps_daemon() as mps_env, _environ(mps_env):
            if mps_env:
                rows += [jobs_row(jobs, " under CUDA MPS") for jobs in [1, *many]]
            else:
                print("no CUDA MPS on this machine: skipping the MPS rows")
    # A ratio against each seed-style row: issue 3's targets are against the 4-worker loop.
    for row in rows:
        row["speedup_vs_seed_loop"] = {w: seed_s / row["s_per_epoch"] for w, seed_s in seed_loop_seconds.items()}
        if "rounds_s" in row and args.rounds > 1:
            row["speedup_range_vs_seed_loop"] = {
                w: _ratio_range(rounds[label], row["rounds_s"]) for w, label in seed_labels.items()
            }
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({_cpu_model()}, {os.cpu_count()} cores)"
    print(f"# {args.space} seed config, {len(data):,} training images/epoch, {name}, torch {torch.__version__}")
    ratio_headers = [f"× seed loop ({w} workers)" for w in seed_loop_seconds]
    print(f"| loop | s/epoch | trials/hour ({epochs_per_trial} epochs) | " + " | ".join(ratio_headers) + " |")
    print("|" + " --- |" * (3 + len(ratio_headers)))
    for row in rows:
        cells = [row["loop"], f"{row['s_per_epoch']:.3f}", f"{row['trials_per_hour']:.0f}"]
        ranges = row.get("speedup_range_vs_seed_loop")
        ratios = (
            [f"{mid:.2f} ({low:.2f}-{high:.2f})" for mid, low, high in ranges.values()]
            if ranges
            else [f"{x:.1f}" for x in row["speedup_vs_seed_loop"].values()]
        )
        print("| " + " | ".join(cells + ratios) + " |")
    if args.out:
        meta = {"device": name, "torch": torch.__version__, "date": date.today().isoformat(), "args": vars(args)}
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
