"""The benchmark scripts run (on CPU, tiny sizes) and the pruner replay is faithful."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from datetime import datetime, timedelta

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from search import make_pruner
from search.cpu import cpu_has_native_bf16
from spaces import get_space
from tests.conftest import DATA_DIR, REPO


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _recorded_study(pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """40 trials with made-up but varied learning curves, pruned for real by ``pruner``."""

    def objective(trial: optuna.Trial) -> float:
        ceiling = trial.suggest_float("ceiling", 0.90, 0.99)
        slow = trial.suggest_float("slow", 0.0, 0.3)  # a slow start, like OneCycle's
        accuracy = 0.0
        for epoch in range(1, 11):
            accuracy = ceiling - slow / epoch - 0.05 / epoch
            trial.set_user_attr("seconds", 0.5 * epoch)
            trial.set_user_attr("epochs_run", epoch)
            trial.set_user_attr("device", "cpu")
            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return accuracy

    study = optuna.create_study(direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(0))
    study.optimize(objective, n_trials=40)
    return study


def test_replay_under_the_recorded_pruner_reproduces_the_study():
    replay = _load("replay_pruners")
    trials = _recorded_study(make_pruner("median", 10)).trials
    recorded = replay.recorded(trials)
    again = replay.replay(trials, make_pruner("median", 10), "same")
    assert (again.epochs, again.pruned, again.top_kept, again.best_kept) == (
        recorded.epochs,
        recorded.pruned,
        recorded.top_kept,
        recorded.best_kept,
    )
    assert recorded.pruned > 0 and again.seconds == pytest.approx(recorded.seconds)


def test_replay_of_a_harsher_pruner_spends_less_and_names_the_top_trials_it_cuts():
    replay = _load("replay_pruners")
    trials = _recorded_study(optuna.pruners.NopPruner()).trials
    harsh = replay.replay(trials, optuna.pruners.PercentilePruner(10.0, 5, 1), "harsh")
    recorded = replay.recorded(trials)
    assert recorded.epochs == 400 and harsh.epochs < recorded.epochs
    assert harsh.top_kept + len(harsh.cut_top) == harsh.top == 5
    assert harsh.best_kept <= recorded.best_kept


def test_replay_cli_prints_a_table(tmp_path):
    url = f"sqlite:///{tmp_path}/r.db"
    study = optuna.create_study(storage=url, study_name="s", direction="maximize", pruner=make_pruner("median", 10))
    study.add_trials(_recorded_study(make_pruner("median", 10)).trials)
    out = subprocess.run(
        [sys.executable, "bench/replay_pruners.py", "--storage", url, "--study-name", "s",
         "--out", str(tmp_path / "r.json")],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "| as recorded | " in out.stdout and "mnist-search default" in out.stdout
    rows = json.loads((tmp_path / "r.json").read_text())
    assert rows[0]["epochs"] == rows[1]["epochs"]  # the default replayed = the default recorded


def test_loop_benchmark_runs_on_cpu(tmp_path):
    out = subprocess.run(
        [sys.executable, "bench/bench_loop.py", "--space", "ffn", "--epochs", "1", "--train-images", "2000",
         "--jobs", "2", "--loader-workers", "0", "--device", "cpu", "--data-dir", str(DATA_DIR),
         "--rounds", "2", "--out", str(tmp_path / "b.json")],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    precisions = ["fp32", "bf16 autocast"] if cpu_has_native_bf16() else ["fp32"]  # bf16 only where native
    assert [r["loop"].split(", ")[0:2] for r in rows] == [["seed-style DataLoader", "batch 64"]] + [
        ["mnist-search loop", p] for p in precisions
    ] + [["mnist-search loop", f"{jobs} process(es) at once"] for jobs in (1, 2)]
    assert all(r["s_per_epoch"] > 0 and r["trials_per_hour"] > 0 for r in rows)
    assert [list(r["speedup_vs_seed_loop"]) for r in rows] == [["0"]] * len(rows)  # one ratio per seed-style loop
    timed = [r for r in rows if "rounds_s" in r]  # every row but the concurrent-process ones
    assert len(timed) == 1 + len(precisions) and all(len(r["rounds_s"]) == 2 for r in timed)
    for r in timed:  # the median and range of the per-round ratios
        mid, low, high = r["speedup_range_vs_seed_loop"]["0"]
        ratios = [a / b for a, b in zip(timed[0]["rounds_s"], r["rounds_s"], strict=True)]
        assert low <= mid <= high and [low, high] == [min(ratios), max(ratios)]
    assert "| × seed loop (0 workers) |" in out.stdout


def test_pruner_ab_runs_real_studies(tmp_path):
    out = subprocess.run(
        [sys.executable, "bench/ab_pruners.py", "--space", "ffn", "--trials", "3", "--epochs", "3",
         "--train-subset", "500", "--arms", "median:2", "peers:1:0.5", "--seeds", "0", "--device", "cpu",
         "--to", "0.5", "--data-dir", str(DATA_DIR), "--out", str(tmp_path / "ab.json"),
         "--keep-studies", str(tmp_path / "studies")],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "ab.json").read_text())
    assert [(r["arm"], r["seed"]) for r in rows] == [("median:2", 0), ("peers:1:0.5", 0)]
    median, peers = rows
    assert median["epochs"] == 9 and median["pruned"] == 0  # 3 trials of 3 epochs: too few for the median rule
    assert peers["epochs"] <= 9
    for row in rows:  # training seconds so far after each trial, in the order they ended
        clocks = [clock for clock, _ in row["timeline"]]
        assert len(clocks) == 3 and clocks == sorted(clocks) and clocks[-1] == pytest.approx(row["train_seconds"], 0.01)
    assert "peers:1:0.5 vs median:2:" in out.stdout and "| s to 0.5 |" in out.stdout
    assert sorted(p.name for p in (tmp_path / "studies").glob("*.db")) == ["median2-s0.db", "peers1k0.5-s0.db"]


def test_pruner_ab_passes_a_parameter_budget_on(tmp_path):
    """A frontier's small budget puts the seed config over it: the A/B must measure that case too."""
    out = subprocess.run(
        [sys.executable, "bench/ab_pruners.py", "--space", "ffn", "--trials", "2", "--epochs", "2",
         "--train-subset", "500", "--val-size", "500", "--max-params", "50000", "--arms", "peers:1", "--seeds", "0",
         "--device", "cpu", "--data-dir", str(DATA_DIR), "--out", str(tmp_path / "ab.json")],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (row,) = json.loads((tmp_path / "ab.json").read_text())
    assert len(row["timeline"]) == 2
    assert row["timeline"][0][1] is None  # the seed config (53,962 parameters): over budget, never trained


def test_estimate_replay_compares_each_estimate_with_the_time_the_rest_took(tmp_path):
    replay = _load("replay_estimate")
    study = _recorded_study(make_pruner("peers", 10, 2))
    rows = replay.replay(study, replay.Pruning(2, 0.16), 5, "cpu")
    assert [r["finished"] for r in rows] == list(range(5, 40))
    ended = sorted(t.datetime_complete for t in study.trials)
    assert rows[0]["actual_s"] == pytest.approx((ended[-1] - ended[4]).total_seconds(), abs=0.1)
    assert all(r["estimate_s"] > 0 for r in rows)
    # The study's own constant rate: the same seconds for every trial left.
    per_trial = {round(r["constant_rate_s"] / (40 - r["finished"]), 0) for r in rows}
    assert len(per_trial) == 1 and per_trial.pop() > 0
    # The true epochs and pace: the first row's factors against the trials that came after it.
    rest = sorted(study.trials, key=lambda t: t.datetime_complete)[5:]
    guess = replay.estimate(sorted(study.trials, key=lambda t: t.datetime_complete)[:5], 40, "cpu", 20,
                            pruning=replay.Pruning(2, 0.16))  # fmt: skip
    rest_epochs = sum(t.user_attrs["epochs_run"] for t in rest)
    rest_seconds = sum(t.user_attrs["seconds"] for t in rest)
    outside = rows[0]["true_epochs_s"] - rest_epochs * guess.seconds_per_epoch
    assert outside == pytest.approx(0, abs=0.2)  # the made-up trials take no time outside training
    assert rows[0]["true_pace_s"] - outside == pytest.approx(
        guess.epochs_per_trial * 35 * rest_seconds / rest_epochs, abs=0.2
    )
    assert replay.within([{"actual_s": 100, "x": x} for x in (69, 71, 129, 131)], "x") == 2


def test_the_estimate_replay_sees_the_trials_other_workers_had_in_flight():
    replay = _load("replay_estimate")
    start = datetime(2026, 12, 8)

    def trial(number: int, began: int, ended: int):
        t = create_trial(state=TrialState.COMPLETE, value=0.9, user_attrs={"epochs_run": 1, "seconds": 1.0})
        t.number = number
        t.datetime_start, t.datetime_complete = start + timedelta(seconds=began), start + timedelta(seconds=ended)
        return t

    first, second, third = trial(0, 0, 10), trial(1, 5, 20), trial(2, 12, 30)
    stored, ended = replay.as_the_line_saw_it([first], [second, third])
    # Trial 0's line: itself not yet told, trial 1 in flight on the other worker, trial 2 not begun.
    assert [(t.number, t.state) for t in stored] == [(0, TrialState.RUNNING), (1, TrialState.RUNNING)]
    assert (ended.number, ended.at, ended.state) == (0, first.datetime_complete, TrialState.COMPLETE)
    assert first.state == TrialState.COMPLETE  # the study's own trials are left as they were


def test_trial_overhead_runs_on_cpu(tmp_path):
    out = subprocess.run(
        [sys.executable, "bench/trial_overhead.py", "--space", "ffn", "--configs", "2", "--epochs", "2",
         "--train-subset", "1000", "--val-size", "500", "--device", "cpu", "--profile", "5",
         "--data-dir", str(DATA_DIR), "--out", str(tmp_path / "t.json")],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "t.json").read_text())
    assert len(rows) == 2 and all(r["first_epoch_s"] > 0 and r["later_epoch_s"] > 0 for r in rows)
    assert all(r["fixed_s"] == pytest.approx(r["first_epoch_s"] - r["later_epoch_s"]) for r in rows)
    assert "per-trial fixed cost: median" in out.stdout and "Self CPU" in out.stdout


def test_compare_revisions_times_both_trees_alike(tmp_path):
    out = subprocess.run(
        [sys.executable, "bench/compare_revisions.py", "--base", "HEAD", "--spaces", "ffn", "--rounds", "1",
         "--train-images", "500", "--epochs", "1", "--data-dir", str(DATA_DIR), "--out", str(tmp_path / "r.json")],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "r.json").read_text())["results"]["ffn"]
    assert len(result["runs"]["base"]) == len(result["runs"]["this"]) == 1
    assert result["ratio"] == pytest.approx(result["base_median"] / result["this_median"])
    assert "base/this" in out.stdout


def test_compare_revisions_times_zoo_entries_and_exported_configs(tmp_path):
    out = subprocess.run(
        [sys.executable, "bench/compare_revisions.py", "--base", "HEAD", "--zoo", "gap_cnn-2k-cpu", "--configs",
         "examples/warm-starts/gap_cnn-2k-a.json", "--rounds", "1", "--train-images", "300", "--epochs", "1",
         "--data-dir", str(DATA_DIR), "--out", str(tmp_path / "r.json")],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    saved = json.loads((tmp_path / "r.json").read_text())
    assert list(saved["results"]) == ["gap_cnn-2k-cpu", "gap_cnn-2k-a"]
    assert saved["args"]["configs"] == ["examples/warm-starts/gap_cnn-2k-a.json"]


def test_depthwise_benchmark_times_both_precisions():
    out = subprocess.run(
        [sys.executable, "bench/depthwise_fp32.py", "--shapes", "4x6x8x5", "--steps", "1"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    (row,) = (json.loads(line) for line in out.stdout.splitlines())
    assert row["shape"] == "4x6x8x5" and row["bf16_ms"] > 0 and row["fp32_depthwise_ms"] > 0
    assert row["ratio"] == pytest.approx(row["bf16_ms"] / row["fp32_depthwise_ms"])


def test_space_budgets_counts_configs_over_each_budget():
    out = subprocess.run(
        [sys.executable, "bench/space_budgets.py", "--budgets", "2000", "30000", "--samples", "30"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    small, capped = (json.loads(line) for line in out.stdout.splitlines())
    assert small["budget"] == 1999 and small["samples"] == 30 and 0 < small["over_budget"] < 1  # under 2,000
    assert capped["budget"] == 19_999  # held to the family cap
    assert capped["fitting_median_params"] <= 19_999 and small["fitting_median_params"] <= 1999


def test_ab_pruner_arms_name_a_revision_and_get_distinct_safe_file_names():
    ab = _load("ab_pruners")
    assert ab.parse_arm("peers:1") == ("", "peers", "1", [])
    assert ab.parse_arm("origin/main@median:4:0.5") == ("origin/main", "median", "4", ["0.5"])
    arms = ("peers:1", "a6be49b@peers:1", "origin/main@peers:1", "peers:1:0.5")
    files = {ab.study_file(arm, 0) for arm in arms}
    assert len(files) == 4 and not any("/" in name for name in files)
    assert ab.study_file("origin/main@peers:1", 3) == "origin_main-peers1-s3.db"


def test_ab_ema_pairs_the_live_weights_with_each_average_of_the_same_run(tmp_path):
    config = tmp_path / "ffn.json"
    config.write_text(json.dumps({"space": "ffn", "config": get_space("ffn").baselines[0] | {"epochs": 2}}))
    out = subprocess.run(
        [sys.executable, "bench/ab_ema.py", str(config), "--decays", "0.9", "0.99", "--seeds", "0",
         "--data-dir", str(DATA_DIR), "--out", str(tmp_path / "e.json")],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    curves = json.loads((tmp_path / "e.json").read_text())["runs"]["0"]
    assert set(curves) == {"live", "0.9", "0.99"} and all(len(c) == 2 for c in curves.values())
    assert curves["live"] != curves["0.9"]  # an average of the run, not the live weights again
    assert "vs live +0.000%" in out.stdout  # the live row against itself
