"""``mnist-search``: a thin argparse layer over ``search.run_search`` and the export commands.

mnist-search --space gap_cnn --trials 100      # search (the default command)
mnist-search export|retrain|report|dashboard   # see `mnist-search COMMAND --help`
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path

import optuna

from search.algorithms import PRUNE_FROM_EPOCH, PRUNERS, SAMPLERS
from search.dashboard import serve_dashboard
from search.data import DATA_ENV
from search.driver import OBJECTIVES, SearchOptions, run_search
from search.errors import UserError
from search.export import EXPORTS_DIR, export, load_record, select_trials, trial_record
from search.files import inside
from search.interrupts import SearchInterrupted
from search.results import format_summary
from search.retrain import attach_checkpoints, format_retrain, retrain
from search.storage import ARTIFACTS_DIR, Heartbeat, artifact_store, default_storage, open_storage, redact
from search.train import PRECISIONS
from spaces import SPACES, known_names

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show each option's default, except for switches, options without one, and helps that say it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.nargs == 0 or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse, but every usage error is one line with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help=f"folder holding MNIST/raw/ (default: ${DATA_ENV}, else ./data)")
    parser.add_argument("--no-download", dest="download", action="store_false", help="never try to download MNIST")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="training device")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto: bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16, AMX), else fp32",
    )


def search_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="mnist-search",
        description="Pruned Optuna search over an MNIST model family. Other commands: "
        "export, retrain, report, dashboard (mnist-search COMMAND --help).",
        formatter_class=_HelpFormatter,
    )
    p.add_argument(
        "--space",
        required=True,
        help=f"model family: {', '.join(known_names())}, or your own as package.module:NAME (docs/spaces.md)",
    )
    p.add_argument(
        "--trials", type=_positive_int, default=100, help="finished trials wanted in the study, across reruns"
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
        type=_positive_int,
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
    p.add_argument("--timeout", type=_positive_float, help="stop starting trials after this many seconds")
    p.add_argument(
        "--epochs",
        "--max-epochs",
        dest="max_epochs",
        type=_positive_int,
        help="cap on epochs per trial, within the family cap (gap_cnn: 20; others: 30)",
    )
    p.add_argument("--max-params", type=_positive_int, help="parameter budget, within the family cap (gap_cnn: 19,999)")
    p.add_argument("--train-subset", type=_positive_int, help="train on only this many images (quick runs, tests)")
    p.add_argument(
        "--val-size", type=_positive_int, default=10_000, help="validation images carved from the 60k training set"
    )
    p.add_argument("--jobs", type=_positive_int, default=1, help="worker processes on this machine (and GPU)")
    p.add_argument(
        "--no-mps", dest="mps", action="store_false", help="--jobs on a GPU: do not start CUDA MPS for the workers"
    )
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument(
        "--heartbeat",
        type=_positive_int,
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
    p.add_argument("--warm-start-top", type=_positive_int, default=5, help="configs taken from each study source")
    p.add_argument("--quiet", action="store_true", help="no progress output; only the final table")
    _add_data_flags(p)
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
    except KeyboardInterrupt:  # before the first trial: loading data or opening the study
        print("\ninterrupted before any trial started; nothing was changed", file=sys.stderr)
        return EXIT_INTERRUPTED
    if options.worker_index == 0:  # workers of --jobs leave the table to their parent
        print(format_summary(study))
    return 0


def _command_parser(command: str, description: str) -> argparse.ArgumentParser:
    return _Parser(prog=f"mnist-search {command}", description=description, formatter_class=_HelpFormatter)


def _add_study_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", default=default_storage(1), help="Optuna storage URL or journal file path")
    parser.add_argument("--study-name", help="study to read (default: the only study, or the one named after --space)")
    parser.add_argument("--space", help="pick the study named after this space")


def _load_study(args: argparse.Namespace) -> optuna.Study:
    storage = open_storage(args.storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    name = args.study_name or args.space or (names[0] if len(names) == 1 else None)
    if name is None:
        raise UserError(
            f"{redact(args.storage)} holds {len(names)} studies; pick one with --study-name: {', '.join(names)}"
        )
    if name not in names:
        raise UserError(f"no study {name!r} in {redact(args.storage)}; it holds: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=name, storage=storage)


def _export(argv: Sequence[str]) -> int:
    p = _command_parser("export", "Write the best configs of a study to JSON.")
    _add_study_flags(p)
    p.add_argument("--top", type=_positive_int, default=1, help="how many of the best trials")
    p.add_argument("--with-baseline", action="store_true", help="also export the seed baseline trial(s)")
    p.add_argument("--out", default=str(EXPORTS_DIR), help="output folder")
    args = p.parse_args(argv)
    for path in export(_load_study(args), args.top, Path(args.out), args.with_baseline):
        print(path)
    return 0


def _retrain(argv: Sequence[str]) -> int:
    p = _command_parser(
        "retrain",
        "Train exported configs (or a study's top trials plus its seed baseline) for their own "
        "fixed epochs, once per seed, on the full 60k training set; report test accuracy mean ± std.",
    )
    p.add_argument("configs", nargs="*", help="exported config JSON files")
    _add_study_flags(p)
    p.add_argument("--top", type=_positive_int, default=3, help="with a study: how many of its best trials")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds, one run each")
    p.add_argument(
        "--search-split",
        action="store_true",
        help="train on the study's search split and measure validation accuracy (reproduces a trial)",
    )
    p.add_argument("--out", default=str(EXPORTS_DIR), help="folder for checkpoints, metrics and reports")
    p.add_argument(
        "--artifacts", default=str(ARTIFACTS_DIR), help="with a study: artifact folder the checkpoints are uploaded to"
    )
    _add_data_flags(p)
    args = p.parse_args(argv)
    study = None
    if args.configs:
        records = [load_record(Path(c)) for c in args.configs]
    else:
        study = _load_study(args)
        records = [trial_record(study, t) for t in select_trials(study, args.top, with_baseline=True)]
    results = []
    for record in records:
        results.append(
            retrain(
                record,
                args.seeds,
                data_dir=args.data_dir,
                download=args.download,
                device=args.device,
                on_search_split=args.search_split,
                out_dir=Path(args.out),
                precision=args.precision,
                progress=True,
            )
        )
        if study is not None:  # the dashboard then offers each trial's checkpoints
            attach_checkpoints(study, results[-1], artifact_store(Path(args.artifacts)))
        print(format_retrain(results[-1:]).splitlines()[-1], flush=True)
    print(format_retrain(results))
    return 0


def _report(argv: Sequence[str]) -> int:
    p = _command_parser("report", "Write a self-contained HTML report and a CSV of a study.")
    _add_study_flags(p)
    p.add_argument("--top", type=_positive_int, default=10, help="rows in the top-trials table")
    p.add_argument("--out", help="HTML path (default: studies/exports/report-STUDY.html)")
    args = p.parse_args(argv)
    from search.report import write_report  # plotly only for this command

    study = _load_study(args)
    out = Path(args.out) if args.out else inside(EXPORTS_DIR, "report", study.study_name, suffix=".html")
    for path in write_report(study, args.storage, out, args.top):
        print(path)
    return 0


def _dashboard(argv: Sequence[str]) -> int:
    p = _command_parser("dashboard", "Serve optuna-dashboard on the study storage.")
    p.add_argument("--storage", default=default_storage(1), help="Optuna storage URL or journal file path")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; loopback unless you mean otherwise")
    p.add_argument("--port", type=_positive_int, default=8080, help="port to listen on")
    p.add_argument("--artifacts", default=str(ARTIFACTS_DIR), help="artifact folder (learning curves, checkpoints)")
    args = p.parse_args(argv)
    serve_dashboard(args.storage, args.host, args.port, Path(args.artifacts))
    return 0


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "search": _search,
    "export": _export,
    "retrain": _retrain,
    "report": _report,
    "dashboard": _dashboard,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Our own progress lines replace Optuna's per-trial logs (its failed-trial warning carries a
    # traceback; we record and print the one-line reason). Heartbeats and grouped sampling are
    # marked experimental but are exactly what we mean to use.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    command = argv[0] if argv and argv[0] in COMMANDS else "search"
    if argv and argv[0] in COMMANDS:
        argv = argv[1:]
    try:
        return COMMANDS[command](argv)
    except UserError as error:
        print(f"mnist-search: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:  # a disk that filled or a folder that vanished while writing
        where = f" ({error.filename})" if error.filename else ""
        print(f"mnist-search: error: {error.strerror or error}{where}; fix that and rerun", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
