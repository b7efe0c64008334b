"""``mnist-search frontier``: a space's accuracy against its size, one search per parameter budget.

For each budget it runs (or resumes) the study of that budget (the default study name carries the
budget, so budgets never mix), retrains the study's best ``--top`` configs with ``--seeds`` on all
60k training images, and records each retrain in the frontier file as soon as it ends. Interrupted,
it resumes where it stopped: a study with its trials finished is not searched again, and a config
already retrained with the same seeds on the same device is not retrained.

The frontier file (JSON) holds every retrain; ``search.frontier_view`` draws its table and plot.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from search.cli_args import add_flags, command_parser, options_from_args
from search.driver import run_search
from search.export import config_digest, trial_record
from search.files import check_writable_dir, write_text
from search.flags import positive_int, seed
from search.frontier_view import FRONTIER_DIR, frontier_page, frontier_path, frontier_table, load_frontier
from search.options import SearchOptions
from search.results import ranked_trials, training_effort
from search.retrain import retrain
from search.train import resolve_device
from spaces.errors import UserError

SEARCH_FLAGS = (
    "space", "trials", "storage", "sampler", "pruner", "prune_from_epoch", "prune_keep", "seed", "timeout",
    "max_epochs", "data_dir", "download", "device", "precision", "train_subset", "val_size", "jobs", "quiet",
    "warm_start", "warm_start_top",
)  # fmt: skip


def frontier_command(argv: Sequence[str]) -> int:
    p = command_parser(
        "frontier",
        "Search each parameter budget, retrain the best configs of each with the seeds, and write the "
        "frontier table and plot (test accuracy against parameters).",
    )
    add_flags(p, SearchOptions, SEARCH_FLAGS)
    p.add_argument(
        "--budgets", type=positive_int, nargs="+", required=True,
        help="parameter budgets: each search's models have fewer than N parameters (--max-params N-1)",
    )  # fmt: skip
    p.add_argument("--seeds", type=seed, nargs="+", default=[0, 1, 2], help="retrain seeds, one run each")
    p.add_argument("--top", type=positive_int, default=2, help="configs of each budget to retrain")
    p.add_argument("--out", default=str(FRONTIER_DIR), help="folder for the frontier file, table, plot and retrains")
    args = p.parse_args(argv)
    options = options_from_args(SearchOptions, args)
    for path in run_frontier(options, args.budgets, args.seeds, args.top, Path(args.out)):
        print(path)
    return 0


def run_frontier(
    options: SearchOptions, budgets: Sequence[int], seeds: Sequence[int], top: int, out: Path
) -> tuple[Path, Path, Path]:
    """The searches, the retrains and the files; returns the frontier file, table and plot."""
    if min(budgets) < 2:
        raise UserError(f"--budgets {min(budgets)}: a budget N means fewer than N parameters; use 2 or more")
    # "Under 20,000", as the public claims and the family caps put it: --max-params is inclusive.
    searches = {b: dataclasses.replace(options, max_params=b - 1, study_name=None) for b in sorted(set(budgets))}
    for search in searches.values():  # every budget checked before the first search starts
        search.validate()
    check_writable_dir(out, "--out")
    record_path = frontier_path(out, options.space)
    device = str(resolve_device(options.device))  # the resume key names the device used, not "auto"
    frontier = load_frontier(record_path, options.space)
    for budget, search in searches.items():
        study = run_search(search)
        for trial in ranked_trials(study)[:top]:
            record = trial_record(study, trial, trusted=options.space)
            row_key = _key(study.study_name, trial.number, record["config"], seeds, device)
            if any(row["key"] == row_key for row in frontier["rows"]):
                continue  # retrained before this run was interrupted
            result = retrain(
                record, seeds, data_dir=options.data_dir, download=options.download, device=options.device,
                out_dir=out, precision=options.precision, progress=not options.quiet, trusted=options.space,
            )  # fmt: skip
            frontier["rows"].append({
                "key": row_key, "budget": budget, "study": study.study_name, "trial": trial.number,
                "params": result.params, "epochs": result.epochs, "seeds": list(seeds),
                "accuracies": result.accuracies, "test_mean": result.mean, "test_std": result.std,
                "device": result.device, "precision": result.precision,
                "search_seconds": round(training_effort(study)["seconds"], 1),
                "retrain_seconds": round(result.seconds, 1), "config": record["config"],
                "warm_start_of": trial.user_attrs.get("warm_start_of"),
            })  # fmt: skip
            write_text(record_path, json.dumps(frontier, indent=1) + "\n")  # each retrain kept at once
    write_text(record_path, json.dumps(frontier, indent=1) + "\n")
    table = write_text(record_path.with_suffix(".md"), frontier_table(frontier))
    page = write_text(record_path.with_suffix(".html"), frontier_page(frontier))
    return record_path, table, page


def _key(study: str, trial: int, config: dict[str, Any], seeds: Sequence[int], device: str) -> str:
    return f"{study}#{trial}#{config_digest(config)[:16]}#{','.join(map(str, seeds))}#{device}"
