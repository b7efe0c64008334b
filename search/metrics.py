"""How a trained model does per class: the confusion matrix, seed 000's per-class report, and the
matrix as a plot (plotly, imported only when one is drawn)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from spaces.base import N_CLASSES

if TYPE_CHECKING:
    import plotly.graph_objects as go


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Rows: true class; columns: predicted class."""
    return torch.bincount(labels * N_CLASSES + predicted, minlength=N_CLASSES * N_CLASSES).reshape(N_CLASSES, -1)


def classification_report(matrix: torch.Tensor) -> str:
    """Per-class precision, recall, F1 and support, laid out as seed 000 shows them."""
    m = matrix.double()
    support = m.sum(1)
    precision = m.diag() / m.sum(0).clamp(min=1)
    recall = m.diag() / support.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    lines = [f"{'':>12}{'precision':>10}{'recall':>10}{'f1-score':>10}{'support':>10}", ""]
    for c in range(N_CLASSES):
        lines.append(f"{c:>12}{precision[c]:>10.4f}{recall[c]:>10.4f}{f1[c]:>10.4f}{int(support[c]):>10}")
    total = int(support.sum())
    lines += ["", f"{'accuracy':>12}{'':>20}{(m.diag().sum() / total).item():>10.4f}{total:>10}"]
    lines.append(f"{'macro avg':>12}{precision.mean():>10.4f}{recall.mean():>10.4f}{f1.mean():>10.4f}{total:>10}")
    return "\n".join(lines) + "\n"


def confusion_figure(matrix: torch.Tensor, title: str) -> go.Figure:
    import plotly.express as px  # only when a retrain writes its plot: every other command starts without it

    return px.imshow(
        matrix.numpy(), text_auto=True, color_continuous_scale="Blues", title=f"Confusion matrix: {title}",
        labels={"x": "predicted", "y": "true", "color": "images"}, x=list(range(10)), y=list(range(10)),
    )  # fmt: skip
