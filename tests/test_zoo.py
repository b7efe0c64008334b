"""The model zoo and the frontier command (CPU, real MNIST, tiny budgets)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from search import run_search
from search import zoo as zoo_module
from search.frontier import run_frontier
from search.zoo import LISTED_KEYS, load_zoo
from spaces import get_space
from spaces.errors import UserError
from tests.conftest import run_cli, small_search


def test_zoo_lists_the_shipped_entries_as_a_table_and_as_json(tmp_path):
    listed = run_cli("zoo", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert entries and all(set(LISTED_KEYS) <= set(e) for e in entries)
    shipped = {e.name: e for e in load_zoo()}
    for entry in entries:  # every figure as the file gives it, and each config builds what it lists
        assert entry["params"] == get_space(entry["space"]).check_config(dict(shipped[entry["name"]].config))
        assert entry["params"] <= entry["budget"] and entry["epochs"] <= 20
        assert 0.9 < entry["test_mean"] < 1 and entry["test_std"] >= 0 and entry["seeds"]
    table = run_cli("zoo", cwd=tmp_path)
    assert table.returncode == 0 and all(e["name"] in table.stdout for e in entries)
    assert not list(tmp_path.iterdir())  # read-only: nothing written


def _zoo_file(tmp_path: Path, **change) -> Path:
    config = get_space("ffn").baselines[0] | {"epochs": 1, "lr": 0.002}  # not the seed baseline itself
    entry = {
        "name": "ffn-tiny", "space": "ffn", "budget": 60000, "params": 53962, "epochs": 1, "test_mean": 0.95,
        "test_std": 0.001, "seeds": [0], "accuracies": [0.95], "device": "cpu", "precision": "fp32",
        "commit": "test", "measured": "today", "found_by": "a test", "config": config,
    } | change  # fmt: skip
    path = tmp_path / "zoo.json"
    path.write_text(json.dumps([entry]))
    return path


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"space": "tests.evil:SPACE"}, "not built in"),
        ({"params": 1}, "builds 53962 parameters"),
        ({"accuracies": [0.9, 0.8]}, "one finite accuracy per seed"),
        ({"test_mean": float("nan")}, "one finite accuracy per seed"),
        ({"config": {"epochs": 1}}, "config"),
    ],
)
def test_a_zoo_entry_passes_the_spaces_gate_and_names_no_module(tmp_path, change, problem):
    with pytest.raises(UserError, match=problem):
        load_zoo(_zoo_file(tmp_path, **change))


def test_retrain_zoo_trains_the_entry(tmp_path, data_dir, monkeypatch, capsys):
    from search.commands import retrain_command

    monkeypatch.setattr(zoo_module, "ZOO_FILE", _zoo_file(tmp_path))
    out = tmp_path / "out"
    assert retrain_command(["--zoo", "ffn-tiny", "--seeds", "0", "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "zoo-ffn-tiny" in printed and "53,962" in printed
    assert (out / "zoo-ffn-tiny-seed0.pt").is_file()
    with pytest.raises(UserError, match="no zoo entry 'nope'; choose one of: ffn-tiny"):
        retrain_command(["--zoo", "nope"])
    with pytest.raises(UserError, match="no search split"):
        retrain_command(["--zoo", "ffn-tiny", "--search-split"])


def test_warm_start_zoo_enqueues_the_entries_that_fit(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setattr(zoo_module, "ZOO_FILE", _zoo_file(tmp_path))
    fits = run_search(small_search(tmp_path, data_dir, trials=2, warm_start=("zoo",), quiet=False))
    assert [t.user_attrs.get("warm_start_of") for t in fits.trials] == [None, "zoo ffn-tiny"]
    storage = f"sqlite:///{tmp_path}/t.db"
    run_search(small_search(tmp_path, data_dir, trials=1, max_params=1000, warm_start=("zoo",), quiet=False,
                            storage=storage))  # fmt: skip
    assert "warm start: skipped zoo ffn-tiny" in capsys.readouterr().out
    with pytest.raises(UserError, match="the zoo has no fcn models"):
        run_search(small_search(tmp_path, data_dir, space="fcn", warm_start=("zoo",), storage=f"{storage}x"))


def test_frontier_searches_retrains_and_resumes(tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.setattr(zoo_module, "ZOO_FILE", _zoo_file(tmp_path))  # 53,962 parameters
    options = small_search(
        tmp_path, data_dir, trials=2, train_subset=512, val_size=256, warm_start=("zoo",), quiet=False
    )
    out = tmp_path / "frontier"
    record, table, page = run_frontier(options, [60000, 2000], [0], 1, out)
    # Each budget's search takes the warm starts that fit it: under 60,000 the entry, under 2,000 none.
    started = capsys.readouterr().out
    assert "warm start: enqueued zoo ffn-tiny" in started and "warm start: skipped zoo ffn-tiny" in started
    assert "--warm-start" in run_cli("frontier", "--help", cwd=tmp_path).stdout
    frontier = json.loads(record.read_text())
    assert {row["budget"] for row in frontier["rows"]} == {60000}  # under 2,000 nothing fits: no row
    row = frontier["rows"][0]
    assert row["params"] < 60000 and row["seeds"] == [0] and row["device"] == "cpu"
    assert "< 60,000" in table.read_text() and "public claims" in page.read_text()
    # Run again: both searches are finished and the retrain is on record, so nothing trains.
    before = record.read_text()
    run_frontier(options, [2000, 60000], [0], 1, out)
    assert record.read_text() == before
    report = run_cli("report", "--storage", options.storage, "--study-name", "ffn-p59999-e1-n512",
                     "--frontier", str(record), "--out", str(tmp_path / "r.html"), cwd=tmp_path)  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert "Frontier: ffn" in (tmp_path / "r.html").read_text()
    broken = tmp_path / "broken.json"
    for text in ("{not json", json.dumps({"space": "ffn", "rows": [{"budget": 1}]})):
        broken.write_text(text)
        refused = run_cli("report", "--storage", options.storage, "--study-name", "ffn-p59999-e1-n512",
                          "--frontier", str(broken), "--out", str(tmp_path / "r2.html"), cwd=tmp_path)  # fmt: skip
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "frontier" in refused.stderr


def test_frontier_checks_every_budget_before_the_first_search(tmp_path, data_dir):
    """A budget N means fewer than N parameters: 20000 is gap_cnn's own cap (checked first, and
    accepted), 30001 is over it."""
    options = small_search(tmp_path, data_dir, space="gap_cnn")
    with pytest.raises(UserError, match="max_params 30000 is over the cap of space 'gap_cnn'"):
        run_frontier(options, [1000, 20000, 30001], [0], 1, tmp_path / "frontier")
    with pytest.raises(UserError, match="a budget N means fewer than N parameters"):
        run_frontier(options, [1, 20000], [0], 1, tmp_path / "frontier")
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "frontier").exists()


def test_a_warm_start_from_before_the_conv_and_kernel_keys_trains_the_same_model():
    """The shipped H100 entry has no ``conv``/``kernel``: its trial must be the full 3×3 net it was,
    not whatever the sampler picks for the keys it lacks."""
    import optuna

    from search.warm_start import enqueue_warm_starts

    space = get_space("gap_cnn")
    study = optuna.create_study(direction="maximize")
    notes = enqueue_warm_starts(study, space, space.budget(), ["zoo"], 1)
    assert notes[0] == "warm start: enqueued zoo gap_cnn-20k-h100"  # the first entry, the first enqueued
    trial = study.ask()
    config = space.suggest(trial, space.budget())
    assert config["conv"] == "full" and config["kernel"] == 3
    assert space.check_config(config) == 19_198


def test_the_frontier_table_says_which_rows_came_from_a_warm_start():
    from search.frontier_view import frontier_html, frontier_table

    row = {"budget": 5000, "params": 4800, "epochs": 20, "test_mean": 0.994, "test_std": 0.0002, "seeds": [0],
           "device": "cpu", "precision": "bf16", "search_seconds": 60.0, "retrain_seconds": 60.0,
           "study": "gap_cnn-p4999", "trial": 2}  # fmt: skip
    searched = {"space": "gap_cnn", "rows": [row, row | {"budget": 2000, "trial": 7, "warm_start_of": None}]}
    warm = {"space": "gap_cnn", "rows": [row | {"warm_start_of": "a|<b>.json"}]}
    assert "warm start" not in frontier_table(searched) + frontier_html(searched, include_plotlyjs=False)
    table, page = frontier_table(warm), frontier_html(warm, include_plotlyjs=False)
    assert "| gap_cnn-p4999 trial 2 (warm start: a/<b>.json) |" in table  # a '|' would split the cell
    assert "(warm start: a|&lt;b&gt;.json)" in page


def test_the_frontier_plot_has_room_for_every_point_and_claim_label():
    """Plotly's autorange leaves labels out: the axes must hold every claim with its label above
    it and every row's error bar, and each claim's label names its size and how it was measured."""
    from search.frontier_view import REFERENCES, frontier_figure

    row = {"budget": 2000, "params": 300, "epochs": 20, "test_mean": 0.97, "test_std": 0.004, "seeds": [0],
           "device": "cpu", "precision": "fp32", "search_seconds": 1.0, "retrain_seconds": 1.0,
           "study": "s", "trial": 0}  # fmt: skip
    top = row | {"budget": 50_000, "params": 40_000, "test_mean": 0.998}
    figure = frontier_figure({"space": "gap_cnn", "rows": [row, top]})
    low_x, high_x = figure.layout.xaxis.range
    low_y, high_y = figure.layout.yaxis.range
    assert low_x < math.log10(300) and high_x > math.log10(40_000)  # a log axis's range is in decades
    assert low_y < 100 * (0.97 - 0.004) and high_y > 100 * (0.998 + 0.004) > 100 * max(a for _, a, _ in REFERENCES)
    claims = figure.data[1]
    assert claims.textposition == "top center"
    assert list(claims.text) == [f"{size:,}: {how}" for size, _, how in REFERENCES]
