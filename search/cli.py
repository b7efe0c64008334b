"""``mnist-search``: a thin argparse layer over ``search.run_search`` and the export commands.

mnist-search --space gap_cnn --trials 100      # search (the default command)
mnist-search export|retrain|report|dashboard   # see `mnist-search COMMAND --help`
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import fields

import optuna

from search.algorithms import PRUNE_FROM_EPOCH, PRUNERS, SAMPLERS
from search.cli_args import HelpFormatter, Parser, add_data_flags, positive_float, positive_int
from search.commands import (
    dashboard_command,
    export_command,
    export_model_command,
    predict_command,
    report_command,
    retrain_command,
)
from search.driver import run_search
from search.interrupts import SearchInterrupted, signal_label, signal_number, terminate_as_interrupt
from search.options import OBJECTIVES, SearchOptions
from search.results import format_summary
from search.storage import ARTIFACTS_DIR, Heartbeat
from spaces import SPACES, known_names
from spaces.errors import UserError

EXIT_USAGE = 2


def search_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="mnist-search",
        description="Pruned Optuna search over an MNIST model family. Other commands: "
        "export, retrain, report, dashboard, predict, export-model (mnist-search COMMAND --help).",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--space",
        required=True,
        help=f"model family: {', '.join(known_names())}, or your own as package.module:NAME (docs/spaces.md)",
    )
    p.add_argument(
        "--trials", type=positive_int, default=100, help="finished trials wanted in the study, across reruns"
    )
    p.add_argument(
        "--storage",
        help="Optuna storage: an RDB URL or a journal file path "
        "(default: sqlite:///studies/mnist-search.db; studies/mnist-search.journal with --jobs > 1)",
    )
    p.add_argument("--study-name", help="study name (default: the space, plus any budget flags)")
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS, help="Optuna sampler")
    p.add_argument("--pruner", default="median", choices=PRUNERS, help="Optuna pruner")
    p.add_argument(
        "--prune-from-epoch",
        type=positive_int,
        help=f"median pruner: the first epoch at which a trial may be stopped (default: {PRUNE_FROM_EPOCH})",
    )
    p.add_argument(
        "--objectives",
        nargs="+",
        default=["accuracy"],
        choices=OBJECTIVES,
        help="'accuracy', or 'accuracy params' for the Pareto front (no pruning)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampler seed (0 to 2**32-1); trial k trains with seed + k")
    p.add_argument("--timeout", type=positive_float, help="stop starting trials after this many seconds")
    p.add_argument(
        "--epochs",
        "--max-epochs",
        dest="max_epochs",
        type=positive_int,
        help="cap on epochs per trial, within the family cap (gap_cnn: 20; others: 30)",
    )
    p.add_argument("--max-params", type=positive_int, help="parameter budget, within the family cap (gap_cnn: 19,999)")
    p.add_argument("--train-subset", type=positive_int, help="train on only this many images (quick runs, tests)")
    p.add_argument(
        "--val-size", type=positive_int, default=10_000, help="validation images carved from the 60k training set"
    )
    p.add_argument("--jobs", type=positive_int, default=1, help="worker processes on this machine (and GPU)")
    p.add_argument(
        "--no-mps", dest="mps", action="store_false", help="--jobs on a GPU: do not start CUDA MPS for the workers"
    )
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument(
        "--heartbeat",
        type=positive_int,
        default=Heartbeat.interval,
        help="seconds between heartbeats of a running trial (RDB storages); stale after 3 missed",
    )
    p.add_argument(
        "--artifacts", default=str(ARTIFACTS_DIR), help="artifact folder for per-trial learning curves ('' for none)"
    )
    p.add_argument(
        "--target",
        type=float,
        help="test accuracy the study must beat, as a fraction (default: the space's own: "
        + ", ".join(f"{name} {space.target * 100:g}%%" for name, space in SPACES.items())
        + ")",
    )
    p.add_argument(
        "--warm-start",
        nargs="+",
        default=(),
        metavar="SOURCE",
        help="start from known configs: STORAGE#STUDY (its best --warm-start-top) or exported .json files; "
        "each is checked against this study's space and budget",
    )
    p.add_argument("--warm-start-top", type=positive_int, default=5, help="configs taken from each study source")
    p.add_argument("--quiet", action="store_true", help="no progress output; only the final table")
    add_data_flags(p)
    return p


def options_from_args(args: argparse.Namespace) -> SearchOptions:
    # Every flag is named after its SearchOptions field; four need converting.
    passed = {f.name for f in fields(SearchOptions)} - {"objectives", "heartbeat", "artifacts", "warm_start"}
    return SearchOptions(
        **{name: getattr(args, name) for name in passed},
        objectives=tuple(args.objectives),
        warm_start=tuple(args.warm_start),
        heartbeat=Heartbeat(args.heartbeat, 3 * args.heartbeat),
        artifacts=args.artifacts or None,
    )


def _search(argv: Sequence[str]) -> int:
    options = options_from_args(search_parser().parse_args(argv))
    try:
        study = run_search(options)
    except SearchInterrupted as stopped:
        if options.worker_index == 0:  # a --jobs parent speaks for its workers
            print(f"\n{stopped.message()}", file=sys.stderr)
        return stopped.exit_status
    except KeyboardInterrupt as stop:  # before the first trial: checking the options or loading data
        signum = signal_number(stop)
        print(
            f"\ninterrupted ({signal_label(signum)}) before the study was opened; nothing was changed", file=sys.stderr
        )
        return 128 + signum
    if options.worker_index == 0:  # workers of --jobs leave the table to their parent
        print(format_summary(study))
    return 0


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "search": _search,
    "export": export_command,
    "retrain": retrain_command,
    "report": report_command,
    "dashboard": dashboard_command,
    "predict": predict_command,
    "export-model": export_model_command,
}


def _usage_or_version(version: bool) -> int:
    if version:
        try:
            print(f"mnist-search {importlib.metadata.version('mnist-search')}")
        except importlib.metadata.PackageNotFoundError:
            print("mnist-search (not installed: run from a source tree)")
        return 0
    print(
        "usage: mnist-search [search] --space SPACE [options]  |  mnist-search COMMAND [options]\n"
        f"commands: {', '.join(COMMANDS)} (search is the default); mnist-search COMMAND --help lists its flags",
        file=sys.stderr,
    )
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Our own progress lines replace Optuna's per-trial logs (its failed-trial warning carries a
    # traceback; we record and print the one-line reason). Heartbeats and grouped sampling are
    # marked experimental but are exactly what we mean to use.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if not argv or argv[0] in ("-V", "--version"):
        return _usage_or_version(bool(argv))
    command = argv[0] if argv and argv[0] in COMMANDS else "search"
    if argv and argv[0] in COMMANDS:
        argv = argv[1:]
    try:
        with terminate_as_interrupt():
            return COMMANDS[command](argv)
    except KeyboardInterrupt as stop:  # any other command: its temporary files are gone, no file half-written
        signum = signal_number(stop)
        print(
            f"\nmnist-search {command}: interrupted ({signal_label(signum)}); every file it wrote is whole "
            "(temporary ones removed): run it again to finish",
            file=sys.stderr,
        )
        return 128 + signum
    except UserError as error:
        print(f"mnist-search: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:  # a disk that filled or a folder that vanished while writing
        where = f" ({error.filename})" if error.filename else ""
        print(f"mnist-search: error: {error.strerror or error}{where}; fix that and rerun", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
