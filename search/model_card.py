"""The model card a retrain writes beside its checkpoints: what the model is, how well it does
against its target, and how to use it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.export import to_json, versions
from search.files import write_text
from search.results import format_target
from spaces import known_names

if TYPE_CHECKING:
    from search.retrain import RetrainResult


def write_model_card(path: Path, result: RetrainResult, record: Mapping[str, Any], config: Mapping[str, Any]) -> Path:
    """A short Markdown card: what the model is, how well it does against its target, how to use it."""
    first = result.checkpoints[0]
    per_class = first.with_suffix(".report.txt").read_text()
    accuracies = ", ".join(f"{a:.2%}" for a in result.accuracies)
    verdict = "reaches" if result.mean >= result.target else "falls short of"
    # A plugin space is used from a checkpoint only when named again by the user.
    trust, plugin = (
        ("", "")
        if record["space"] in known_names()
        else (f" --space {record['space']}", f", space={record['space']!r}")
    )
    lines = [
        f"# Model card: {result.name}",
        "",
        f"- **Family**: `{record['space']}` ({record.get('space_source', 'built in')})"
        + (" — the seed document's own config" if result.baseline else ""),
        f"- **Parameters**: {result.params:,}; **epochs**: {result.epochs}; trained on "
        + ("all 60,000 training images" if result.evaluated_on == "test" else "the study's training split"),
        f"- **{result.evaluated_on.capitalize()} accuracy**: {result.mean:.2%} ± {result.std:.2%} over seeds "
        f"{', '.join(map(str, result.seeds))} ({accuracies}); it {verdict} the {format_target(result.target)} target",
        f"- **Precision**: {result.precision}; **device**: {result.device}; "
        + ", ".join(f"{k} {v}" for k, v in versions().items()),
        "",
        "## Config",
        "",
        "```json",
        to_json(dict(config)),
        "```",
        "",
        f"## Per class ({result.evaluated_on} set, seed {result.seeds[0]})",
        "",
        "```",
        per_class.rstrip(),
        "```",
        "",
        "## Use it",
        "",
        "```bash",
        f"mnist-search predict {first}{trust} digit.png more.png         # or an IDX file, or a .npy batch; --csv",
        f"mnist-search export-model {first}{trust} --format onnx       # or torchscript",
        "```",
        "",
        "```python",
        "from search.model import load_checkpoint",
        f'model = load_checkpoint("{first}"{plugin})   # uint8 0-255 or float 0-1, N×28×28 or N×1×28×28',
        "probabilities = model(images)       # N×10, MNIST's normalisation inside",
        "```",
        "",
    ]
    return write_text(path, "\n".join(lines))
