"""The training loop of this tree against another git revision's, family by family, interleaved.

    python bench/compare_revisions.py --base 8fa2c32 --rounds 3 --out docs/bench-cpu-revisions.json
    python bench/compare_revisions.py --base 2bc95fa --zoo gap_cnn-8k-cpu --configs exports/gap_cnn-trial5.json

For each family's seed config (or each named zoo entry's and exported config), each round trains it once with
each revision's ``search.train.train`` (in a fresh process, the other revision's tree checked out
in a temporary worktree), on the same training images for the same epochs, and records seconds per
epoch of the training steps. Rounds
alternate the revisions, so machine noise falls on both alike; the table gives each revision's
median and the ratio base / this tree (above 1: this tree is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from search.export import load_record
from search.zoo import zoo_entry

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ("gap_cnn", "cnn", "fcn", "ffn")

# Runs inside the revision under test: it adapts to both train() signatures (device= before the
# device profile, profile= after) and prints seconds per epoch of the training steps.
PROBE = """
import inspect, json, sys, torch
from search.data import Split, load_mnist, split_train_val
import search.train as T
from spaces import get_space
try:
    from spaces.training import TrainSettings
except ImportError:
    TrainSettings = T.TrainSettings
space_name, images, epochs, data_dir, given = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
train_set, val_set = split_train_val(load_mnist(data_dir, download=False).train, Split(1000, 0, images))
space = get_space(space_name)
config = (json.loads(given) if given else space.baselines[0]) | {"epochs": epochs}
torch.manual_seed(0)
model = space.build(config)
device = torch.device("cpu")
if "profile" in inspect.signature(T.train).parameters:
    from search.cpu import configure_process
    from search.profile import DeviceProfile
    configure_process(device)
    kwargs = {"profile": DeviceProfile.resolve(device, "auto", model)}
else:
    kwargs = {"device": device}
result = T.train(model, train_set, val_set, TrainSettings.from_config(config), seed=0, **kwargs)
print(json.dumps({"seconds_per_epoch": result.train_seconds / epochs}))
"""


def measure(tree: Path, space: str, config: dict[str, Any] | None, images: int, epochs: int, data_dir: str) -> float:
    """Seconds per epoch of ``config`` (the space's seed config where None) trained by ``tree``."""
    env = os.environ | {"PYTHONPATH": str(tree)}
    given = json.dumps(config) if config is not None else ""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, space, str(images), str(epochs), data_dir, given],
        cwd=tree, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds_per_epoch"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the git revision to compare against")
    p.add_argument("--spaces", nargs="+", default=list(FAMILIES))
    p.add_argument("--zoo", nargs="+", default=[], metavar="NAME", help="time these zoo entries instead of --spaces")
    p.add_argument("--configs", nargs="+", default=[], type=Path, metavar="FILE", help="and these exported configs")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--train-images", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--data-dir", default=os.environ.get("MNIST_SEARCH_DATA", str(REPO.parent / "shared" / "data")))
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), args.base], cwd=REPO, check=True)
        try:
            results = {}
            for name, space, config in _subjects(args.spaces, args.zoo, args.configs):
                runs: dict[str, list[float]] = {"base": [], "this": []}
                trees = [("base", base_tree), ("this", REPO)]
                for round_number in range(args.rounds):
                    for label, tree in trees[:: -1 if round_number % 2 else 1]:  # each goes first in turn
                        runs[label].append(measure(tree, space, config, args.train_images, args.epochs, args.data_dir))
                base, this = statistics.median(runs["base"]), statistics.median(runs["this"])
                results[name] = {"runs": runs, "base_median": base, "this_median": this, "ratio": base / this}
                print(f"{name:>8}: base {base:.3f} s/epoch, this {this:.3f} s/epoch, base/this {base / this:.2f}x")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=REPO, check=True)
    if args.out:
        meta = vars(args) | {"out": str(args.out), "configs": [str(path) for path in args.configs], "cpu": _cpu_name()}
        args.out.write_text(json.dumps({"args": meta, "results": results}, indent=2) + "\n")


def _subjects(spaces: list[str], zoo: list[str], configs: list[Path]) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(name, space, config) to time: the named zoo entries and exported configs, or else each
    space's seed config."""
    chosen: list[tuple[str, str, dict[str, Any] | None]]
    chosen = [(name, (entry := zoo_entry(name)).space, dict(entry.config)) for name in zoo]
    chosen += [(path.stem, (record := load_record(path))["space"], record["config"]) for path in configs]
    return chosen or [(space, space, None) for space in spaces]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
