"""The frontier file and its views: the best retrain of each budget as a table, and test accuracy
against parameters (log x) beside the public claims at those sizes, each labelled with how it was
measured. ``mnist-search frontier`` writes the file; the report adds the table and plot."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from search.files import inside
from search.storage import STUDIES_DIR
from spaces.errors import UserError

FRONTIER_DIR = STUDIES_DIR / "frontier"
# Public single-model claims (issue 23): parameters, test accuracy, how it was measured.
REFERENCES = (
    (15_794, 0.9959, "final epoch 20, one run"),
    (7_918, 0.9952, "best epoch, one run"),
    (4_838, 0.9942, "best epoch 8 (99.41% final), one run"),
    (1_936, 0.9910, "checkpoint near epoch 75 picked on a 10% split, one run"),
    (697, 0.9903, "best of ~230 runs, early stopping on the test set"),
)


ROW_KEYS = ("key", "budget", "study", "trial", "params", "epochs", "seeds", "test_mean", "test_std", "device",
            "precision", "search_seconds", "retrain_seconds")  # fmt: skip


def load_frontier(path: Path, space: str | None = None) -> dict[str, Any]:
    """The frontier file at ``path`` (a new one if there is none), of ``space`` when one is given."""
    if not path.exists():
        return {"space": space, "rows": []}
    try:
        frontier = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        reason = f"{path} cannot be read as a frontier file ({error})"
        raise UserError(f"{reason}; move it away or pass another --out") from None
    rows = frontier.get("rows") if isinstance(frontier, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and all(k in r for k in ROW_KEYS) for r in rows):
        raise UserError(f"{path} is not a frontier file written by mnist-search frontier; pass another file")
    if space is not None and frontier.get("space") != space:
        raise UserError(f"{path} holds the frontier of space {frontier.get('space')!r}, not {space!r}")
    return frontier


def best_rows(frontier: dict[str, Any]) -> list[dict[str, Any]]:
    """The best retrain of each budget by test mean (fewer parameters break ties), smallest budget first."""
    best: dict[int, dict[str, Any]] = {}
    for row in frontier["rows"]:
        held = best.get(row["budget"])
        if held is None or (row["test_mean"], -row["params"]) > (held["test_mean"], -held["params"]):
            best[row["budget"]] = row
    return [best[b] for b in sorted(best)]


def frontier_table(frontier: dict[str, Any]) -> str:
    lines = [
        "| budget | parameters | epochs | test mean ± std | seeds | device, precision | time spent (search + retrain) "
        "| config |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in best_rows(frontier):
        spent = (row["search_seconds"] + row["retrain_seconds"]) / 3600
        lines.append(
            f"| < {row['budget']:,} | {row['params']:,} | {row['epochs']} | {row['test_mean']:.2%} ± "
            f"{row['test_std']:.2%} | {' '.join(map(str, row['seeds']))} | {row['device']}, {row['precision']} | "
            f"{spent:.2f} h | {_origin(row).replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"


def _origin(row: dict[str, Any]) -> str:
    """The trial a row retrained, and where its config came from when it was a warm start, not the
    sampler's (older frontier files do not say)."""
    warm = row.get("warm_start_of")
    return f"{row['study']} trial {row['trial']}" + (f" (warm start: {warm})" if warm else "")


def frontier_figure(frontier: dict[str, Any]) -> Any:
    """Test accuracy against parameters (log x): the frontier with its seed spread, and the public claims."""
    import plotly.graph_objects as go  # plotly only where a plot is drawn

    rows = best_rows(frontier)
    figure = go.Figure()
    figure.add_trace(go.Scatter(
        x=[r["params"] for r in rows], y=[100 * r["test_mean"] for r in rows], mode="lines+markers",
        error_y={"type": "data", "array": [100 * r["test_std"] for r in rows]},
        name=f"mnist-search {frontier['space']}: final epoch, test mean ± std over seeds",
        text=[f"budget < {r['budget']:,}, {r['epochs']} epochs, {r['device']} {r['precision']}" for r in rows],
    ))  # fmt: skip
    # Each claim's label sits above it, clear of the frontier's error bars just below the claims.
    figure.add_trace(go.Scatter(
        x=[p for p, _, _ in REFERENCES], y=[100 * a for _, a, _ in REFERENCES], mode="markers+text",
        marker={"symbol": "x", "size": 9}, text=[f"{p:,}: {how}" for p, _, how in REFERENCES],
        textposition="top center", textfont={"size": 10}, name="public claims (how each was measured)",
    ))  # fmt: skip
    sizes = [p for p, _, _ in REFERENCES] + [r["params"] for r in rows]
    claimed = [100 * a for _, a, _ in REFERENCES]
    lows = claimed + [100 * (r["test_mean"] - r["test_std"]) for r in rows]
    highs = claimed + [100 * (r["test_mean"] + r["test_std"]) for r in rows]
    # Plotly's autorange leaves out text: room for the labels, half a decade either side and a
    # tenth of a point above.
    x_range = [math.log10(min(sizes)) - 0.5, math.log10(max(sizes)) + 0.5]
    y_range = [min(lows) - 0.05, max(highs) + 0.1]
    figure.update_layout(
        xaxis={"type": "log", "title": "parameters", "range": x_range},
        yaxis={"title": "test accuracy (%)", "range": y_range},
        title="Accuracy against size", legend={"orientation": "h", "y": -0.2},
    )  # fmt: skip
    return figure


def frontier_html(frontier: dict[str, Any], include_plotlyjs: bool) -> str:
    """The table and plot as an HTML fragment (the report adds it to its page)."""
    rows = best_rows(frontier)
    cells = "".join(
        f"<tr><td>&lt; {r['budget']:,}</td><td>{r['params']:,}</td><td>{r['epochs']}</td>"
        f"<td>{r['test_mean']:.2%} ± {r['test_std']:.2%}</td><td>{html.escape(' '.join(map(str, r['seeds'])))}</td>"
        f"<td>{html.escape(str(r['device']))}, {html.escape(str(r['precision']))}</td>"
        f"<td>{(r['search_seconds'] + r['retrain_seconds']) / 3600:.2f} h</td><td>{html.escape(_origin(r))}</td></tr>"
        for r in rows
    )
    table = (
        "<table><tr><th>budget</th><th>parameters</th><th>epochs</th><th>test mean ± std</th><th>seeds</th>"
        f"<th>device, precision</th><th>time spent</th><th>config</th></tr>{cells}</table>"
    )
    figure = frontier_figure(frontier).to_html(full_html=False, include_plotlyjs=include_plotlyjs)
    return f"<h2>Frontier: {html.escape(str(frontier['space']))}</h2>{table}{figure}"


def frontier_page(frontier: dict[str, Any]) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>mnist-search frontier</title></head><body>"
        + frontier_html(frontier, include_plotlyjs=True)
        + "</body></html>"
    )


def report_frontier(space: object, named: str | None) -> dict[str, Any] | None:
    """The frontier a study's report shows: the file named by --frontier, else its space's default one."""
    if named is not None:
        if not Path(named).is_file():
            raise UserError(f"--frontier {named} is not a file; pass the .json that mnist-search frontier wrote")
        return load_frontier(Path(named))
    if not isinstance(space, str):
        return None
    default = frontier_path(FRONTIER_DIR, space)
    return load_frontier(default, space) if default.is_file() else None


def frontier_path(folder: Path, space: str) -> Path:
    return inside(folder, space, suffix=".json")
