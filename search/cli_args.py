"""The argparse pieces every command shares: one-line usage errors with exit 2, defaults in --help,
flags built from the options' own declarations, and the data and study flags."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import MISSING, fields
from typing import Any, TypeVar

import optuna

from search.flags import Flag
from search.redact import redact
from search.storage import default_storage, open_storage
from spaces.errors import UserError

T = TypeVar("T")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show each option's default, except for switches, options without one, and helps that say it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.nargs == 0 or "default" in (action.help or ""):
            return action.help
        if isinstance(action.default, list | tuple):  # as typed on the command line, not a Python repr
            shown = " ".join(map(str, action.default)) or "none"
            return f"{action.help} (default: {shown.replace('%', '%%')})"
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


def add_flags(parser: argparse.ArgumentParser, options: type, names: Iterable[str] | None = None) -> None:
    """The flags of an options dataclass's fields (all that declare one, or just ``names``), each from
    its field's own declaration; the parsed values are named after the fields."""
    chosen = None if names is None else set(names)
    for f in fields(options):
        declared: Flag | None = f.metadata.get("flag")
        if declared is None or (chosen is not None and f.name not in chosen):
            continue
        default = f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default
        default = None if default is MISSING else default
        kwargs: dict[str, Any] = {"dest": f.name, "help": declared.help}
        if declared.action:
            kwargs["action"] = declared.action
        else:
            kwargs |= {"type": declared.type, "choices": declared.choices, "nargs": declared.nargs}
            kwargs |= {"metavar": declared.metavar, "required": declared.required}
            kwargs["default"] = declared.to_flag(default) if declared.to_flag and default is not None else default
        parser.add_argument(*declared.names, **{k: v for k, v in kwargs.items() if v is not None})


def options_from_args(options: type[T], args: argparse.Namespace, **rest: Any) -> T:
    """The dataclass from parsed flags: each value converted by its field's ``to_option``."""
    values = dict(rest)
    for f in fields(options):  # type: ignore[arg-type]
        declared: Flag | None = f.metadata.get("flag")
        if declared is not None and hasattr(args, f.name):
            value = getattr(args, f.name)
            values[f.name] = declared.to_option(value) if declared.to_option else value
    return options(**values)


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    """--data-dir, --no-download, --device, --precision: declared once, on SearchOptions."""
    from search.options import SearchOptions

    add_flags(parser, SearchOptions, ("data_dir", "download", "device", "precision"))


def command_parser(command: str, description: str) -> argparse.ArgumentParser:
    return Parser(prog=f"mnist-search {command}", description=description, formatter_class=HelpFormatter)


def add_storage_flag(parser: argparse.ArgumentParser) -> None:
    """--storage of the commands that read studies (a search's is a SearchOptions field)."""
    parser.add_argument("--storage", default=default_storage(1), help="Optuna storage URL or journal file path")


def add_study_flags(parser: argparse.ArgumentParser) -> None:
    add_storage_flag(parser)
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
