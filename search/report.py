"""Reports: a self-contained HTML page of a study (optuna.visualization figures, a Pareto view of
every study in the storage, the top-trials table) and its table as CSV."""

from __future__ import annotations

import html
import warnings
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from optuna.trial import TrialState

from search.files import check_writable_dir, write_text
from search.frontier_view import frontier_html
from search.redact import redact
from search.results import format_target, is_feasible, state_counts, study_target, training_effort, trials_table
from spaces.errors import UserError


def pareto_frame(storage: optuna.storages.BaseStorage | str) -> pd.DataFrame:
    """Every completed feasible trial of every study in the storage: accuracy, parameters, front."""
    rows = []
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if is_feasible(t) and "params" in t.user_attrs:
                rows.append(
                    {
                        "study": study.study_name,
                        "trial": t.number,
                        "val_acc": t.values[0],
                        "params": t.user_attrs["params"],
                    }
                )
    frame = pd.DataFrame(rows, columns=["study", "trial", "val_acc", "params"])
    frame = frame.sort_values(["params", "val_acc"], ascending=[True, False])
    frame["pareto"] = frame.val_acc > frame.val_acc.cummax().shift(fill_value=-1.0)
    return frame


def pareto_figure(frame: pd.DataFrame, target: float) -> go.Figure:
    fig = px.scatter(
        frame, x="params", y="val_acc", color="study", log_x=True, hover_data=["trial"],
        title="Validation accuracy against parameters, every study in the storage",
    )  # fmt: skip
    front = frame[frame.pareto]
    fig.add_trace(go.Scatter(x=front.params, y=front.val_acc, mode="lines", line_shape="hv", name="Pareto front"))
    fig.add_hline(y=target, line_dash="dot", annotation_text=f"{format_target(target)} target (a test-set figure)")
    return fig


def study_figures(study: optuna.Study) -> list[tuple[str, go.Figure]]:
    """optuna.visualization's own figures; the ones a study cannot draw yet are skipped."""
    vis = optuna.visualization
    multi = len(study.directions) > 1
    target: dict[str, Any] = {"target": (lambda t: t.values[0]), "target_name": "val accuracy"} if multi else {}
    makers = [
        ("Optimization history", lambda: vis.plot_optimization_history(study, **target)),
        ("Intermediate values (pruning)", lambda: vis.plot_intermediate_values(study)),
        ("Parameter importances", lambda: vis.plot_param_importances(study, **target)),
        ("Parallel coordinates", lambda: vis.plot_parallel_coordinate(study, **target)),
    ]
    if multi:
        makers.append(("Pareto front of this study", lambda: vis.plot_pareto_front(study)))
    figures = []
    for title, make in makers:
        try:
            with warnings.catch_warnings():  # "too few trials to compute importances": the figure says so
                warnings.simplefilter("ignore", UserWarning)
                figures.append((title, make()))
        except (ValueError, RuntimeError, ZeroDivisionError) as error:  # too few trials for this view
            figures.append((f"{title}: not drawable yet ({error})", go.Figure()))
    return figures


def write_report(
    study: optuna.Study, storage_url: str, out: Path, top: int = 10, frontier: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """One self-contained HTML file (plotly.js embedded once) plus the top-trials table as CSV."""
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; pass an .html file path")
    check_writable_dir(out.parent, "--out")
    table = trials_table(study, top)
    csv_path = write_text(out.with_suffix(".csv"), table.to_csv(index=False))
    # study._storage: Optuna has no public accessor for a loaded study's storage, and the Pareto view
    # reads every study in it.
    pareto = pareto_figure(pareto_frame(study._storage), study_target(study))
    figures = [*study_figures(study), ("Pareto view", pareto)]
    counts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(state_counts(study).items()))
    effort = training_effort(study)
    parts = [
        f"<h1>mnist-search: {html.escape(study.study_name)}</h1>",
        f"<p>storage {html.escape(redact(storage_url))}; space {html.escape(str(study.user_attrs.get('space')))}; "
        f"trials: {html.escape(counts)}; {effort['epochs']} epochs trained in {effort['seconds']:.0f} s "
        f"({effort['pruned_seconds']:.0f} s in trials pruned later). Validation accuracy is measured on the "
        f"split carved from the training set; the {format_target(study_target(study))} target "
        f"({html.escape(study.user_attrs.get('target_reason', 'the space'))}) is a test-set figure, measured by "
        "<code>mnist-search retrain</code>.</p>",
        "<h2>Top trials</h2>",
        _table_html(table, study_target(study)),
        *_model_card_links(study),
    ]
    for i, (title, fig) in enumerate(figures):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=i == 0))
    if frontier is not None:
        parts.append(frontier_html(frontier, include_plotlyjs=False))
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>mnist-search report: {html.escape(study.study_name)}</title>"
        "<style>body{font-family:sans-serif;margin:2em} table{border-collapse:collapse}"
        "td,th{padding:4px 8px;border:1px solid #ccc;text-align:right}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )
    return write_text(out, page), csv_path


def _model_card_links(study: optuna.Study) -> list[str]:
    """Links to the model cards that `retrain --space/--study-name` wrote for this study."""
    cards = sorted((k.split(":", 1)[1], v) for k, v in study.user_attrs.items() if k.startswith("model_card:"))
    if not cards:
        return []
    items = "".join(
        f"<li><a href='{html.escape(Path(path).as_uri())}'>{html.escape(name)}</a></li>" for name, path in cards
    )
    return [f"<h2>Model cards</h2><ul>{items}</ul>"]


def _table_html(table: pd.DataFrame, target: float) -> str:
    target_row = pd.DataFrame(
        [{"rank": "", "trial": "", "val_acc": target, "vs_target": 0.0, "note": f"{format_target(target)} target"}]
    )
    shown = pd.concat([table, target_row], ignore_index=True).sort_values("val_acc", ascending=False, kind="stable")
    return shown.to_html(index=False, na_rep="", formatters={"val_acc": "{:.2%}".format, "vs_target": "{:+.2%}".format})
