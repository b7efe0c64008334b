"""The layers run one way: ``spaces`` (with the errors and training settings every layer shares)
imports nothing of the engine, and heavy optional libraries load only in the commands that use them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


def _modules_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint('MODULES', *sorted(sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    return set(result.stdout.rpartition("MODULES")[2].split())


def test_spaces_load_no_module_of_the_engine():
    loaded = _modules_after(
        "import spaces; spaces.get_space('gap_cnn').build(spaces.get_space('gap_cnn').baselines[0])\n"
        "from spaces.states import FINISHED; from spaces.training import TRAIN_KEYS; from spaces.base import Budget"
    )
    assert not {m for m in loaded if m == "search" or m.startswith("search.")}
    assert "plotly" not in loaded and "pandas" not in loaded


HEAVY = {"plotly", "onnx", "onnxscript", "onnxruntime", "optuna_dashboard"}


@pytest.mark.parametrize(
    "command",
    ["--help", "search --help", "predict --help", "export --help", "retrain --help", "report --help",
     "frontier --help", "export-model --help", "zoo --help", "dashboard --help"],
)  # fmt: skip
def test_heavy_imports_load_only_in_the_commands_that_use_them(command):
    absent = HEAVY
    code = f"from search.cli import main\ntry:\n    main({command.split()!r})\nexcept SystemExit:\n    pass"
    loaded = _modules_after(code)
    assert not absent & loaded, absent & loaded
