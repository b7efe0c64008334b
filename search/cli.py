"""``mnist-search``: a thin argparse layer over ``search.run_search`` and the export commands.

mnist-search --space gap_cnn --trials 100      # search (the default command)
mnist-search export|retrain|report|dashboard|zoo|frontier   # see `mnist-search COMMAND --help`
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import warnings
from collections.abc import Callable, Sequence

import optuna

from search.cli_args import HelpFormatter, Parser, add_flags, options_from_args
from search.commands import (
    dashboard_command,
    export_command,
    export_model_command,
    predict_command,
    report_command,
    retrain_command,
    zoo_command,
)
from search.driver import run_search
from search.frontier import frontier_command
from search.interrupts import SearchInterrupted, signal_label, signal_number, terminate_as_interrupt
from search.jobs import WORKER_COMMAND, WORKER_OPTIONS_ENV
from search.options import SearchOptions
from search.results import format_summary
from search.startup import release
from spaces.errors import UserError, one_line

EXIT_USAGE = 2


def search_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mnist-search",
        description="Pruned Optuna search over an MNIST model family. Other commands: "
        "export, retrain, report, dashboard, predict, export-model, zoo, frontier (mnist-search COMMAND --help).",
        formatter_class=HelpFormatter,
    )
    add_flags(parser, SearchOptions)  # every flag from its SearchOptions field
    return parser


def _search(argv: Sequence[str]) -> int:
    return _run(options_from_args(SearchOptions, search_parser().parse_args(argv)))


def _worker(argv: Sequence[str]) -> int:
    """A --jobs worker: its options come whole from the parent, as JSON, never as rebuilt flags."""
    if argv or WORKER_OPTIONS_ENV not in os.environ:
        raise UserError(f"{WORKER_COMMAND} is started by mnist-search --jobs, not by hand")
    return _run(SearchOptions.from_json(os.environ[WORKER_OPTIONS_ENV]))


def _run(options: SearchOptions) -> int:
    try:
        study = run_search(options)
    except SearchInterrupted as stopped:
        if options.worker_index == 0:  # a --jobs parent speaks for its workers
            print(f"\n{stopped.message()}", file=sys.stderr)
        return stopped.exit_status
    except KeyboardInterrupt as stop:  # before the first trial: checking the options or loading data
        signum = signal_number(stop)
        if options.worker_index == 0:  # a --jobs parent speaks for its workers
            print(f"\ninterrupted ({signal_label(signum)}) before any trial started; rerun to start", file=sys.stderr)
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
    "zoo": zoo_command,
    "frontier": frontier_command,
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
    release()  # the start-up's one-line exit ends here: from now on each command handles its signals
    argv = list(sys.argv[1:] if argv is None else argv)
    # Our own progress lines replace Optuna's per-trial logs (its failed-trial warning carries a
    # traceback; we record and print the one-line reason). Heartbeats and grouped sampling are
    # marked experimental but are exactly what we mean to use.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if not argv or argv[0] in ("-V", "--version"):
        return _usage_or_version(bool(argv))
    commands = COMMANDS | {WORKER_COMMAND: _worker}
    command = argv[0] if argv and argv[0] in commands else "search"
    if argv and argv[0] in commands:
        argv = argv[1:]
    try:
        with terminate_as_interrupt():
            return commands[command](argv)
    except KeyboardInterrupt as stop:  # any other command: its temporary files are gone, no file half-written
        signum = signal_number(stop)
        what = "stopped" if command == "dashboard" else (
            "interrupted; every file it wrote is whole (temporary ones removed): run it again to finish"
        )  # fmt: skip
        print(f"\nmnist-search {command}: {what} ({signal_label(signum)})", file=sys.stderr)
        return 128 + signum
    except UserError as error:
        print(f"mnist-search: error: {one_line(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:  # a disk that filled or a folder that vanished while writing
        where = f" ({error.filename})" if error.filename else ""
        print(
            f"mnist-search: error: {one_line(f'{error.strerror or error}{where}')}; fix that and rerun", file=sys.stderr
        )
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
