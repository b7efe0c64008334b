"""The Optuna driver through the Python API: baselines, budgets, pruning, resuming."""

from __future__ import annotations

import dataclasses
import gc
import weakref

import optuna
import pytest
from optuna.trial import TrialState

import search.driver
import search.options
import search.run
import search.worker
from search import make_pruner, run_search
from search.algorithms import JUDGE_AMONG, make_sampler, tpe_good_trials
from search.driver import open_study
from search.pruning import PeerPruner
from spaces import get_space
from spaces.errors import UserError
from tests.conftest import small_search


def options(tmp_path, data_dir, **overrides):
    return small_search(tmp_path, data_dir, **overrides)


def test_trial_0_is_the_seed_config_and_records_its_measurements(tmp_path, data_dir):
    study = run_search(options(tmp_path, data_dir))
    trial0 = study.trials[0]
    seed = get_space("ffn").baselines[0]
    assert trial0.user_attrs["baseline"] is True
    assert trial0.user_attrs["config"] == seed | {"epochs": 1}
    assert trial0.user_attrs["params"] == 53_962
    assert trial0.user_attrs["epochs_run"] == 1
    assert trial0.user_attrs["device"] == "cpu"
    assert trial0.user_attrs["seconds"] > 0
    assert trial0.intermediate_values == {1: trial0.value}
    assert study.user_attrs["val_size"] == 1000 and study.user_attrs["space"] == "ffn"


def test_rerun_resumes_the_same_study(tmp_path, data_dir):
    first = run_search(options(tmp_path, data_dir, trials=2))
    again = run_search(options(tmp_path, data_dir, trials=4))
    assert again.study_name == first.study_name
    trials = again.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(trials) == 4
    assert sum(bool(t.user_attrs.get("baseline")) for t in again.trials) == 1


def test_startup_trials_reach_the_sampler_and_default_to_its_own(tmp_path, data_dir):
    for sampler, asked, drawn in (("tpe", 3, 3), ("tpe", None, 10), ("gp", 0, 0), ("cmaes", 4, 4), ("cmaes", None, 1)):
        opts = options(tmp_path, data_dir, sampler=sampler, startup_trials=asked, study_name=f"{sampler}-{asked}")
        space, budget = opts.validate()
        study = open_study(opts, space, budget, opts.storage_url())
        assert study.sampler._n_startup_trials == drawn  # Optuna keeps the count private


def test_tpe_takes_only_its_best_few_trials_as_good(recwarn):
    assert [tpe_good_trials(n) for n in (1, 16, 17, 100, 10_000, 100_000)] == [1, 1, 2, 3, 25, 25]
    sampler = make_sampler("tpe", 0)
    assert sampler._gamma is tpe_good_trials  # Optuna keeps it private
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]  # its deprecation, silenced
    study = optuna.create_study(direction="maximize", sampler=sampler)
    uniform = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for value in [i / 30 for i in range(30)]:
        study.add_trial(optuna.trial.create_trial(params={"x": value}, distributions=uniform, value=value))
    good, _ = optuna.samplers._tpe.sampler._split_trials(study, study.trials, sampler._gamma(len(study.trials)))
    assert [t.number for t in good] == [28, 29]  # Optuna's own rule takes 3 of 30


def test_over_budget_config_is_infeasible_without_a_training_step(tmp_path, data_dir, monkeypatch, recwarn):
    calls = []
    real_train = search.run.train
    monkeypatch.setattr(search.run, "train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    study = run_search(options(tmp_path, data_dir, space="gap_cnn", trials=1, max_params=5000))
    trial0 = study.trials[0]
    assert trial0.user_attrs["baseline"] and trial0.user_attrs["params"] == 14_320
    assert trial0.constraints == {"params": 14_320 - 5000}
    assert "infeasible" in trial0.user_attrs and "epochs_run" not in trial0.user_attrs
    assert calls == []
    assert not [w for w in recwarn if "out of range" in str(w.message)]  # the seed's widths, shrunk ranges
    with pytest.raises(ValueError):  # Optuna skips infeasible trials when picking the best
        _ = study.best_trial


def test_hopeless_configs_are_pruned_and_every_trial_model_is_freed_before_the_next(tmp_path, data_dir, monkeypatch):
    opts = options(tmp_path, data_dir, trials=12, max_epochs=6, train_subset=2000, pruner="median", prune_from_epoch=3)
    space, budget = opts.validate()
    study = open_study(opts, space, budget, opts.storage_url())
    good = space.baselines[0] | {"epochs": 6, "lr": 3e-3}
    hopeless = good | {"n_hidden": 1, "width_0": 16, "lr": 1e-4, "dropout": 0.5, "batch_size": 512}
    for config in [good] * 8 + [hopeless] * 3:  # the median pruner starts after 8 trials
        study.enqueue_trial({k: v for k, v in config.items() if k != "optimizer"})

    models, leftovers = [], []

    def build(config):
        model = space.build(config)
        models.append(weakref.ref(model))
        return model

    def release(device):
        release_memory(device)
        # A pruned trial's traceback holds its model in a cycle: it must be gone all the same,
        # and what is left to scan at the next collection must be small (the rest is frozen).
        assert models[-1]() is None
        leftovers.append(len(gc.get_objects()))

    release_memory = search.worker._release_memory
    monkeypatch.setattr(search.worker, "_release_memory", release)
    monkeypatch.setattr(search.options, "get_space", lambda name: dataclasses.replace(space, build=build))
    assert gc.get_freeze_count() == 0
    study = run_search(opts)
    assert gc.get_freeze_count() == 0  # frozen only while the run lasts
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert len(pruned) >= 2
    assert all("pruned at epoch" in t.user_attrs["pruned_reason"] for t in pruned)
    assert all(3 <= t.user_attrs["epochs_run"] < 6 for t in pruned)
    assert len(leftovers) == 12 and max(leftovers) < 20_000


def test_median_pruner_judges_only_against_trained_curves():
    """Over-budget trials complete at once with no curve; they must not stand in for the eight
    trained trials the median pruner waits for, or one curve would judge every trial."""
    study = optuna.create_study(direction="maximize", pruner=make_pruner("median", 10))
    curve = [0.90, 0.95, 0.97, 0.98, 0.99]

    def trained(trial: optuna.Trial) -> float:
        for epoch, accuracy in enumerate(curve, start=1):
            trial.report(accuracy, epoch)
        return curve[-1]

    def slightly_worse() -> bool:
        trial = study.ask()
        for epoch, accuracy in enumerate(curve[:4], start=1):
            trial.report(accuracy - 0.001, epoch)
        return trial.should_prune()

    study.optimize(trained, n_trials=1)
    study.optimize(lambda trial: 0.0, n_trials=JUDGE_AMONG)  # infeasible: completed, never trained
    assert not slightly_worse()
    study.optimize(trained, n_trials=JUDGE_AMONG - 1)
    assert slightly_worse()


def test_peers_pruner_judges_only_against_the_same_schedule():
    study = optuna.create_study(direction="maximize", pruner=make_pruner("peers", 10, 2, keep=0.5))
    schedules = optuna.distributions.CategoricalDistribution(["none", "onecycle"])

    def completed(schedule: str, curve: list[float]) -> None:
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE, value=curve[-1], params={"schedule": schedule},
            distributions={"schedule": schedules}, intermediate_values=dict(enumerate(curve, start=1)),
        ))  # fmt: skip

    def stopped(schedule: str, curve: list[float]) -> bool:
        study.enqueue_trial({"schedule": schedule})
        trial = study.ask({"schedule": schedules})
        for epoch, accuracy in enumerate(curve, start=1):
            trial.report(accuracy, epoch)
        return trial.should_prune()

    completed("none", [0.96, 0.97, 0.98])  # the seed baseline: constant rate
    assert not stopped("none", [0.10])  # epoch 1: before the first judging epoch
    assert stopped("none", [0.95, 0.965])  # below its one peer at epoch 2
    assert not stopped("onecycle", [0.90, 0.92])  # no onecycle peer: not held to the constant-rate curve
    completed("onecycle", [0.90, 0.94, 0.99])
    assert not stopped("onecycle", [0.91, 0.945])  # now judged against its own schedule's curve
    assert stopped("onecycle", [0.85, 0.93])
    assert not stopped("none", [0.99, 0.95])  # its best so far counts: a dip is not judged alone
    completed("none", [0.97, 0.98, 0.99])
    completed("none", [0.97, 0.975, 0.99])
    assert not stopped("none", [0.96, 0.9751])  # above the median of 0.97, 0.975, 0.98
    study.pruner = make_pruner("peers", 10, 2, keep=1 / 3)
    assert stopped("none", [0.96, 0.9751])  # not in their top third (above 0.9767)
    assert not stopped("none", [0.96, 0.977])


class _PeerStudy:
    """A study under the peers pruner (from epoch 1, the best half) whose trials hold only a
    schedule and their epochs: completed curves go in whole, and a trial is asked whether to stop."""

    def __init__(self, schedules: list[str]) -> None:
        self.study = optuna.create_study(direction="maximize", pruner=make_pruner("peers", 20, 1, keep=0.5))
        self.space = {
            "schedule": optuna.distributions.CategoricalDistribution(schedules),
            "epochs": optuna.distributions.IntDistribution(1, 20),
        }

    def completed(self, schedule: str, curve: list[float]) -> None:
        self.study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE, value=curve[-1], params={"schedule": schedule, "epochs": len(curve)},
            distributions=self.space, intermediate_values=dict(enumerate(curve, start=1)),
        ))  # fmt: skip

    def stopped(self, schedule: str, epochs: int, curve: list[float]) -> bool:
        self.study.enqueue_trial({"schedule": schedule, "epochs": epochs})
        trial = self.study.ask(self.space)
        for epoch, accuracy in enumerate(curve, start=1):
            trial.report(accuracy, epoch)
        return trial.should_prune()


def test_peers_pruner_reads_onecycle_curves_at_the_same_share_of_the_run():
    """A 20-epoch OneCycle run at epoch 2 has done what a 10-epoch one did at epoch 1; a constant
    rate is compared epoch for epoch whatever the run's length."""
    peers = _PeerStudy(["none", "onecycle"])
    completed, stopped = peers.completed, peers.stopped
    completed("onecycle", [0.90, 0.94, 0.96, 0.97, 0.98, 0.985, 0.99, 0.991, 0.992, 0.993])
    assert not stopped("onecycle", 20, [0.50])  # a twentieth of the run: the peer has no reading that early
    assert not stopped("onecycle", 20, [0.50, 0.91])  # a tenth: above the peer's epoch 1 (0.90)
    assert stopped("onecycle", 20, [0.50, 0.89])
    assert not stopped("onecycle", 20, [0.50, 0.89, 0.921])  # 3/20: halfway between its epochs 1 and 2
    assert stopped("onecycle", 20, [0.50, 0.89, 0.919])
    assert stopped("onecycle", 5, [0.93, 0.95])  # 2/5 of the run: held to the peer's epoch 4 (0.97)
    completed("none", [0.96, 0.97, 0.98])
    assert stopped("none", 20, [0.95])  # a constant rate: epoch 1 against epoch 1
    assert not stopped("none", 20, [0.961])


def test_peers_pruner_holds_every_trial_to_a_floor_across_schedules():
    """One poor peer sets a bar anyone passes, and the first of a schedule has none: every trial is
    also stopped when its error is more than FLOOR_ERROR_RATIO times the median error of all the
    completed curves at the same share of the run, whatever their schedules."""
    peers = _PeerStudy(["none", "step", "onecycle"])
    completed, stopped = peers.completed, peers.stopped
    completed("none", [0.96, 0.97, 0.98, 0.985])
    # The first step trial: no peer of its schedule, so only the floor, 3 x the 0.03 error at epoch 2.
    assert not stopped("step", 4, [0.90, 0.911])
    assert stopped("step", 4, [0.90, 0.909])
    # At the same share of the run: epoch 2 of 8 is epoch 1 of the 4-epoch curve (error 0.04).
    assert not stopped("step", 8, [0.85, 0.881])
    assert stopped("step", 8, [0.85, 0.879])
    completed("onecycle", [0.50, 0.60, 0.70, 0.80])  # a poor peer: alone, it lets any curve above 0.80 go on
    completed("none", [0.97, 0.98, 0.99, 0.995])
    # The median error at epoch 4 of the three curves is 0.015: the floor is 0.045, above the peer's bar.
    assert stopped("onecycle", 4, [0.70, 0.80, 0.90, 0.95])
    assert not stopped("onecycle", 4, [0.70, 0.80, 0.90, 0.96])
    peers.study.pruner = PeerPruner(1, 0.5, floor_ratio=0)  # off: the poor peer's bar alone
    assert not stopped("onecycle", 4, [0.70, 0.80, 0.90, 0.81])
    peers.study.pruner = make_pruner("peers", 20, 1, keep=0.5)
    for _ in range(4):  # 4 of the 7 curves: a perfect median, and no ratio to hold a trial to
        completed("none", [1.0, 1.0, 1.0, 1.0])
    assert not stopped("step", 4, [0.5])


def test_no_trial_is_pruned_after_its_last_epoch(tmp_path, data_dir, monkeypatch):
    """Stopping there saves nothing, and the sampler learns more from a finished value."""
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: True)
    study = run_search(options(tmp_path, data_dir, trials=3, max_epochs=1))  # every trial: 1 epoch
    trained = [t for t in study.trials if "infeasible" not in t.user_attrs]
    assert trained and all(t.state == TrialState.COMPLETE and t.user_attrs["epochs_run"] == 1 for t in trained)


def test_study_of_another_space_is_refused_and_left_untouched(tmp_path, data_dir):
    run_search(options(tmp_path, data_dir, trials=1, study_name="mine"))
    with pytest.raises(UserError, match="space='ffn'|created with space"):
        run_search(options(tmp_path, data_dir, space="fcn", trials=2, study_name="mine"))
    study = optuna.load_study(study_name="mine", storage=f"sqlite:///{tmp_path}/s.db")
    assert len(study.trials) == 1


def test_multi_objective_records_accuracy_and_params(tmp_path, data_dir):
    study = run_search(options(tmp_path, data_dir, trials=2, objectives=("accuracy", "params")))
    assert len(study.directions) == 2
    trial0 = study.trials[0]
    assert trial0.values[1] == 53_962
    assert trial0.user_attrs["val_accuracy_per_epoch"] == [trial0.values[0]]


def test_the_study_records_its_target_and_target_overrides_it(tmp_path, data_dir):
    from search.results import format_summary

    study = run_search(small_search(tmp_path, data_dir, trials=1))
    assert study.user_attrs["target"] == 0.973 and "97.3% target" in format_summary(study)
    other = run_search(small_search(tmp_path, data_dir, trials=1, study_name="t", target=0.98))
    assert other.user_attrs["target"] == 0.98 and other.user_attrs["target_reason"] == "--target"
    assert "98% target (--target)" in format_summary(other)
    with pytest.raises(UserError, match="target=0.98, not 0.99"):
        run_search(small_search(tmp_path, data_dir, trials=2, study_name="t", target=0.99))


def test_a_warm_started_study_reaches_its_sources_best_in_its_first_trials(tmp_path, data_dir):
    from search.export import export
    from search.results import ranked_trials

    source = run_search(small_search(tmp_path, data_dir, trials=6, study_name="source", max_epochs=2))
    best = ranked_trials(source)[0]
    [exported] = export(source, top=1, out_dir=tmp_path / "out")
    warm = small_search(
        tmp_path, data_dir, trials=3, study_name="warm", max_epochs=2, seed=99,
        warm_start=(f"sqlite:///{tmp_path}/s.db#source", str(exported)), warm_start_top=2,
    )  # fmt: skip
    study = run_search(warm)
    started = [t for t in study.trials if "warm_start_of" in t.user_attrs]
    assert started and min(t.number for t in started) == 1  # right after the seed baseline
    assert started[0].user_attrs["warm_start_of"] == f"sqlite:///{tmp_path}/s.db#source trial {best.number}"
    assert max(t.values[0] for t in started if t.values) == pytest.approx(best.values[0], abs=1e-9)
    # A config that does not fit this study's budget is skipped with a note, not enqueued.
    tight = small_search(tmp_path, data_dir, trials=1, study_name="tight", max_epochs=1, warm_start=(str(exported),))
    from search.warm_start import enqueue_warm_starts

    space, budget = tight.validate()
    notes = enqueue_warm_starts(search.driver.open_study(tight, space, budget, tight.storage_url()), space, budget,
                                tight.warm_start, 5)  # fmt: skip
    assert len(notes) == 1 and notes[0].startswith(f"warm start: skipped {exported}") and "epochs=2" in notes[0]
