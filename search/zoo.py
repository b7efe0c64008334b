"""The model zoo: retrained configs that ship inside the package, each with the figures its
retrain measured (parameters, epochs, test mean ± std over its seeds, device, precision, commit).

``mnist-search zoo`` lists them, ``retrain --zoo NAME`` trains one again, and ``--warm-start zoo``
enqueues those of a study's space that fit its budget. The entries are data: each names a
built-in space only, and its config passes that space's own gate before it is used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from spaces import BUILT_IN
from spaces.errors import UserError

ZOO_FILE = Path(__file__).with_name("zoo.json")
LISTED_KEYS = ("name", "space", "budget", "params", "epochs", "test_mean", "test_std", "seeds")


@dataclass(frozen=True)
class ZooEntry:
    name: str
    space: str
    budget: int  # the --max-params its search ran under (inclusive)
    params: int
    epochs: int
    test_mean: float  # final epoch, test set, over ``seeds``
    test_std: float
    seeds: tuple[int, ...]
    accuracies: tuple[float, ...]  # per seed; empty where the run's log kept only mean and std
    device: str
    precision: str
    commit: str
    measured: str  # the date of the retrain
    found_by: str  # the search and retrain commands
    config: Mapping[str, Any]

    def listing(self) -> dict[str, Any]:
        """``zoo --json``: the listed keys, then where the figures come from."""
        entry = asdict(self)
        entry["seeds"] = list(self.seeds)
        return {key: entry[key] for key in (*LISTED_KEYS, "device", "precision", "commit", "measured")}

    def record(self) -> dict[str, Any]:
        """The entry as retrain reads an exported config."""
        return {"space": self.space, "name": f"zoo-{self.name}", "config": dict(self.config)}


def load_zoo(path: Path | None = None) -> list[ZooEntry]:
    path = path or ZOO_FILE
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"the zoo file {path} cannot be read ({error}); reinstall mnist-search") from None
    if not isinstance(raw, list):
        raise UserError(f"the zoo file {path} is not a list of entries; reinstall mnist-search")
    return [_entry(item, path) for item in raw]


def zoo_entry(name: str) -> ZooEntry:
    entries = {entry.name: entry for entry in load_zoo()}
    if name not in entries:
        raise UserError(f"no zoo entry {name[:80]!r}; choose one of: {', '.join(entries)} (mnist-search zoo)")
    return entries[name]


def _entry(item: object, path: Path) -> ZooEntry:
    where = f"the zoo file {path}"
    if not isinstance(item, dict):
        raise UserError(f"{where} holds a {type(item).__name__}, not an entry; reinstall mnist-search")
    try:
        entry = ZooEntry(
            **{key: item[key] for key in ZooEntry.__dataclass_fields__ if key not in ("seeds", "accuracies")},
            seeds=tuple(item["seeds"]),
            accuracies=tuple(item["accuracies"]),
        )
    except (KeyError, TypeError) as error:
        raise UserError(f"{where} has an entry without {error}; reinstall mnist-search") from None
    space = BUILT_IN.get(entry.space)  # shipped data names a built-in space, never a module
    if space is None:
        raise UserError(f"{where}: entry {entry.name!r} names space {entry.space!r}, which is not built in")
    for key in ("budget", "params", "epochs"):
        if not isinstance(getattr(entry, key), int):
            raise UserError(f"{where}: entry {entry.name!r} has a {key} that is not a whole number")
    numbers = (entry.test_mean, entry.test_std, *entry.accuracies)
    per_seed = len(entry.accuracies) in (0, len(entry.seeds))
    if not all(isinstance(x, float) and math.isfinite(x) for x in numbers) or not per_seed:
        raise UserError(f"{where}: entry {entry.name!r} has figures that are not one finite accuracy per seed")
    params = space.check_config(dict(entry.config))
    if params != entry.params or params > entry.budget or entry.config.get("epochs") != entry.epochs:
        raise UserError(f"{where}: entry {entry.name!r} builds {params} parameters, not the {entry.params} it lists")
    return entry


def format_zoo(entries: list[ZooEntry]) -> str:
    lines = [
        "| name | space | budget | params | epochs | test mean ± std | seeds | device | precision | commit |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in entries:
        lines.append(
            f"| {e.name} | {e.space} | ≤ {e.budget:,} | {e.params:,} | {e.epochs} | {e.test_mean:.2%} ± "
            f"{e.test_std:.2%} | {' '.join(map(str, e.seeds))} | {e.device} | {e.precision} | {e.commit} |"
        )
    return "\n".join(lines)
