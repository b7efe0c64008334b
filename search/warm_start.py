"""``--warm-start``: begin a study from what is known, the best configs of another study,
exported JSON files, or ``zoo`` (the shipped entries of the study's space), enqueued as its first
trials (after the seed baseline).

Each config is checked against this study's space and budget (``Space.check_config``); one that
does not fit is skipped with a note. Each enqueued trial records ``warm_start_of`` (where it came
from) and trains with the source trial's seed, so on the same split and device it reproduces the
source's validation accuracy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna

from search.flags import MAX_SEED
from search.redact import redact
from search.results import ranked_trials
from search.storage import open_storage
from search.zoo import load_zoo
from spaces import Budget, Space
from spaces.errors import UserError

ZOO_SOURCE = "zoo"
STUDY_SEPARATOR = "#"  # STORAGE#STUDY: "#" never carries meaning in a storage URL or journal path


def enqueue_warm_starts(
    study: optuna.Study, space: Space, budget: Budget, sources: Sequence[str], top: int
) -> list[str]:
    """Enqueue the configs of ``sources`` that fit; returns one note per config (enqueued or skipped)."""
    done = {t.user_attrs.get("warm_start_of") for t in study.get_trials(deepcopy=False)}
    notes = []
    for origin, config, train_seed in _configs(sources, top, space.name):
        if origin in done:
            continue  # a rerun with the same --warm-start: already in the study
        try:
            space.check_config(config, budget)
            _check_seed(train_seed)
        except UserError as error:
            notes.append(f"warm start: skipped {origin}: {error}")
            continue
        attrs = {"warm_start_of": origin} | ({"warm_start_seed": train_seed} if train_seed is not None else {})
        # A config from before a key existed means the key's default, not whatever the sampler picks.
        study.enqueue_trial({**space.defaults, **config}, user_attrs=attrs, skip_if_exists=True)
        notes.append(f"warm start: enqueued {origin}")
    return notes


def _check_seed(train_seed: object) -> None:
    """A source's training seed obeys --seed's range (None: train with this study's own seed)."""
    if train_seed is None:
        return
    if not isinstance(train_seed, int) or isinstance(train_seed, bool) or not 0 <= train_seed <= MAX_SEED:
        raise UserError(f"its train_seed {str(train_seed)[:40]!r} is not a whole number from 0 to {MAX_SEED}")


def _configs(sources: Sequence[str], top: int, space: str) -> Iterator[tuple[str, dict[str, Any], int | None]]:
    for source in sources:
        if source == ZOO_SOURCE:  # the shipped entries of this space; the budget check picks those that fit
            entries = [e for e in load_zoo() if e.space == space]
            if not entries:
                raise UserError(f"--warm-start zoo: the zoo has no {space} models (mnist-search zoo lists them)")
            yield from ((f"zoo {e.name}", dict(e.config), None) for e in entries)
        elif source.endswith(".json"):
            yield _from_export(Path(source))
        else:
            yield from _from_study(source, top)


def _from_export(path: Path) -> tuple[str, dict[str, Any], int | None]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"--warm-start {path}: cannot read it ({error})") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise UserError(f"--warm-start {path} is not an exported mnist-search config (no 'config' object)")
    return str(path), record["config"], record.get("train_seed")


def _from_study(source: str, top: int) -> Iterator[tuple[str, dict[str, Any], int | None]]:
    url, separator, name = source.rpartition(STUDY_SEPARATOR)
    if not separator or not url or not name:
        raise UserError(
            f"--warm-start {redact(source)}: give a study as STORAGE{STUDY_SEPARATOR}STUDY, or a .json export"
        )
    storage = open_storage(url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise UserError(f"--warm-start: no study {name!r} in {redact(url)}") from None
    for trial in ranked_trials(study)[:top]:
        origin = f"{redact(url)}{STUDY_SEPARATOR}{name} trial {trial.number}"
        yield origin, trial.user_attrs["config"], trial.user_attrs.get("train_seed")
