"""The commands after a search: export, retrain, report, dashboard, predict, export-model and zoo."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from search.artifacts import attach_checkpoints
from search.cli_args import add_data_flags, add_storage_flag, add_study_flags, command_parser, load_study
from search.dashboard import serve_dashboard
from search.export import EXPORTS_DIR, export, load_record, select_trials, trial_record
from search.files import inside
from search.flags import port, positive_int, seed
from search.retrain import format_retrain, retrain
from search.storage import ARTIFACTS_DIR, artifact_store
from search.zoo import format_zoo, load_zoo, zoo_entry
from spaces.errors import UserError, one_line


def export_command(argv: Sequence[str]) -> int:
    p = command_parser("export", "Write the best configs of a study to JSON.")
    add_study_flags(p)
    p.add_argument("--top", type=positive_int, default=1, help="how many of the best trials")
    p.add_argument("--with-baseline", action="store_true", help="also export the seed baseline trial(s)")
    p.add_argument("--out", default=str(EXPORTS_DIR), help="output folder")
    args = p.parse_args(argv)
    for path in export(load_study(args), args.top, Path(args.out), args.with_baseline, trusted=args.space):
        print(path)
    return 0


def retrain_command(argv: Sequence[str]) -> int:
    p = command_parser(
        "retrain",
        "Train exported configs (or a study's top trials plus its seed baseline) for their own "
        "fixed epochs, once per seed, on the full 60k training set; report test accuracy mean ± std.",
    )
    p.add_argument("configs", nargs="*", help="exported config JSON files")
    p.add_argument(
        "--zoo", action="append", default=[], metavar="NAME", help="a zoo entry (see mnist-search zoo); repeatable"
    )
    add_study_flags(p)
    p.add_argument("--top", type=positive_int, default=3, help="with a study: how many of its best trials")
    p.add_argument("--seeds", type=seed, nargs="+", default=[0, 1, 2], help="training seeds, one run each")
    p.add_argument(
        "--search-split",
        action="store_true",
        help="train on the study's search split and measure validation accuracy (reproduces a trial); "
        "a config with no split recorded, such as a warm start, gets a search's default split",
    )
    p.add_argument("--out", default=str(EXPORTS_DIR), help="folder for checkpoints, metrics and reports")
    p.add_argument(
        "--artifacts", default=str(ARTIFACTS_DIR), help="with a study: artifact folder the checkpoints are uploaded to"
    )
    add_data_flags(p)
    args = p.parse_args(argv)
    study = None
    if args.zoo and args.search_split:
        raise UserError("a zoo entry has no search split to train on; drop --search-split to measure the test set")
    if args.configs or args.zoo:
        records = [load_record(Path(c), trusted=args.space) for c in args.configs]
        records += [zoo_entry(name).record() for name in args.zoo]
    else:
        study = load_study(args, writable=True)
        records = [trial_record(study, t, args.space) for t in select_trials(study, args.top, with_baseline=True)]
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
                trusted=args.space,
            )
        )
        if study is not None:  # the dashboard then offers each trial's checkpoints; the report links the card
            attach_checkpoints(study, results[-1], artifact_store(Path(args.artifacts)))
    print(format_retrain(results))
    for result in results:
        print(f"model card: {result.model_card}")
    return 0


def zoo_command(argv: Sequence[str]) -> int:
    p = command_parser("zoo", "List the retrained models that ship with mnist-search, with their measured figures.")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    args = p.parse_args(argv)
    entries = load_zoo()
    print(json.dumps([e.listing() for e in entries], indent=1) if args.json else format_zoo(entries))
    return 0


def report_command(argv: Sequence[str]) -> int:
    p = command_parser("report", "Write a self-contained HTML report and a CSV of a study.")
    add_study_flags(p)
    p.add_argument("--top", type=positive_int, default=10, help="rows in the top-trials table")
    p.add_argument("--out", help="HTML path (default: studies/exports/report-STUDY.html)")
    p.add_argument("--frontier", help="frontier file to add (default: studies/frontier/SPACE.json, if there is one)")
    args = p.parse_args(argv)
    from search.frontier_view import report_frontier
    from search.report import write_report  # plotly only for this command

    study = load_study(args)
    frontier = report_frontier(study.user_attrs.get("space"), args.frontier)
    out = Path(args.out) if args.out else inside(EXPORTS_DIR, "report", study.study_name, suffix=".html")
    for path in write_report(study, args.storage, out, args.top, frontier):
        print(path)
    return 0


def dashboard_command(argv: Sequence[str]) -> int:
    p = command_parser("dashboard", "Serve optuna-dashboard on the study storage.")
    add_storage_flag(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; loopback unless you mean otherwise")
    p.add_argument("--port", type=port, default=8080, help="port to listen on")
    p.add_argument("--artifacts", default=str(ARTIFACTS_DIR), help="artifact folder (learning curves, checkpoints)")
    args = p.parse_args(argv)
    serve_dashboard(args.storage, args.host, args.port, Path(args.artifacts))
    return 0


class _Once(argparse.Action):
    """An option that may be given once: a second value is more likely a slip than a choice."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None):
        if getattr(namespace, self.dest) is not None:
            raise argparse.ArgumentError(self, "given twice; pass it once")
        setattr(namespace, self.dest, values)


def _add_trust_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--space",
        action=_Once,
        help="trust this plugin space (package.module:NAME) for the checkpoint; it must be the one the file records",
    )


def predict_command(argv: Sequence[str]) -> int:
    p = command_parser("predict", "Classify images with a retrained checkpoint (MODEL: a .pt from retrain).")
    p.add_argument("model", help="checkpoint written by mnist-search retrain")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="PNG/JPEG files, IDX files (.gz or not), .npy arrays; told by content",
    )
    p.add_argument("--csv", action="store_true", help="print CSV: input,index,digit,probability")
    _add_trust_flag(p)
    args = p.parse_args(argv)
    from search.model import load_checkpoint
    from search.predict import predict_images, read_inputs

    model = load_checkpoint(Path(args.model), args.space)
    inputs = read_inputs([Path(i) for i in args.inputs])  # every input checked before the first line prints
    writer = csv.writer(sys.stdout, lineterminator="\n") if args.csv else None
    if writer:
        writer.writerow(["input", "index", "digit", "probability"])
    for row in predict_images(model, inputs):
        if writer:
            writer.writerow([row.source, row.index, row.digit, f"{row.probability:.6f}"])
        else:
            where = one_line(row.source if row.picture else f"{row.source}[{row.index}]")  # a name may hold a newline
            print(f"{where}: {row.digit} ({row.probability:.2%})")
    return 0


def export_model_command(argv: Sequence[str]) -> int:
    from search.export_model import FORMATS, export_model

    p = command_parser(
        "export-model", "Write a retrained checkpoint as TorchScript or ONNX, normalisation inside, probabilities out."
    )
    p.add_argument("checkpoint", help="checkpoint written by mnist-search retrain")
    p.add_argument("--format", required=True, choices=list(FORMATS), action=_Once, help="torchscript or onnx")
    p.add_argument("--out", action=_Once, help="output file or folder (default: beside the checkpoint)")
    _add_trust_flag(p)
    args = p.parse_args(argv)
    print(export_model(Path(args.checkpoint), args.format, args.out, args.space))
    return 0
