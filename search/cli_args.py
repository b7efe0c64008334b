"""The argparse pieces every command shares: one-line usage errors with exit 2, defaults in --help,
range-checked numbers, and the data and study flags."""

from __future__ import annotations

import argparse
import math

import optuna

from search.data import DATA_ENV
from search.redact import redact
from search.storage import default_storage, open_storage
from search.train import PRECISIONS
from spaces.errors import UserError

MAX_PORT = 65535


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show each option's default, except for switches, options without one, and helps that say it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.nargs == 0 or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse, but every usage error is one line with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> object:
        # argparse drops a "--" given as a flag's own value (--trials=--) and hands the type no value at all
        if action.option_strings and action.nargs is None and arg_strings == ["--"]:
            self.error(f"argument {'/'.join(action.option_strings)}: expected a value, got '--'")
        return super()._get_values(action, arg_strings)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive, finite number, got {text}")
    return value


def port(text: str) -> int:
    value = positive_int(text)
    if value > MAX_PORT:
        raise argparse.ArgumentTypeError(f"ports run from 1 to {MAX_PORT}, got {value}")
    return value


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help=f"folder holding MNIST/raw/ (default: ${DATA_ENV}, else ./data)")
    parser.add_argument("--no-download", dest="download", action="store_false", help="never try to download MNIST")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="training device")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto: bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16, AMX), else fp32",
    )


def command_parser(command: str, description: str) -> argparse.ArgumentParser:
    return Parser(prog=f"mnist-search {command}", description=description, formatter_class=HelpFormatter)


def add_study_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", default=default_storage(1), help="Optuna storage URL or journal file path")
    parser.add_argument("--study-name", help="study to read (default: the only study, or the one named after --space)")
    parser.add_argument("--space", help="pick the study named after this space")


def load_study(args: argparse.Namespace, *, writable: bool = False) -> optuna.Study:
    """The study the flags pick; read-only unless ``writable`` (retrain uploads its checkpoints)."""
    storage = open_storage(args.storage, writable=writable)
    summaries = optuna.get_all_study_summaries(storage)
    names = [s.study_name for s in summaries]
    name = args.study_name or args.space or (names[0] if len(names) == 1 else None)
    if not args.study_name and args.space and args.space not in names:
        # --space of a study named after its budget too (gap_cnn-p8000): the only one made with that space
        made_with = [s.study_name for s in summaries if s.user_attrs.get("space") == args.space]
        name = made_with[0] if len(made_with) == 1 else name
    if name is None:
        raise UserError(
            f"{redact(args.storage)} holds {len(names)} studies; pick one with --study-name: {', '.join(names)}"
        )
    if name not in names:
        raise UserError(f"no study {name!r} in {redact(args.storage)}; it holds: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=name, storage=storage)
