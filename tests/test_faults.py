"""Faults inside trials: divergence, exceptions, memory across trials (Python API, CPU)."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

import search.run
from search import run_search
from search.driver import open_study
from tests.conftest import small_search


def options(tmp_path, data_dir, **overrides):
    return small_search(tmp_path, data_dir, **({"train_subset": 500, "val_size": 500} | overrides))


def test_diverging_lr_prunes_the_trial_with_its_reason_and_the_study_goes_on(tmp_path, data_dir):
    opts = options(tmp_path, data_dir, trials=3)
    space, budget = opts.validate()
    study = open_study(opts, space, budget, opts.storage_url())
    seed = space.baselines[0]
    study.enqueue_trial(
        {k: v for k, v in seed.items() if k != "optimizer"} | {"epochs": 1, "lr": 1e12, "batch_norm": False}
    )
    study = run_search(opts)
    diverged = study.trials[1]
    assert diverged.state == TrialState.PRUNED
    assert "loss became" in diverged.user_attrs["pruned_reason"]
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 3


def test_an_exception_fails_only_its_trial(tmp_path, data_dir, monkeypatch):
    real_train = search.run.train
    calls = []

    def flaky_train(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory (simulated)\nsecond line")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(search.run, "train", flaky_train)
    study = run_search(options(tmp_path, data_dir, trials=3))
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 1
    assert failed[0].user_attrs["fail_reason"] == "RuntimeError: CUDA out of memory (simulated)"
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 3


def _rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def test_memory_stays_flat_across_many_trials(tmp_path, data_dir):
    # fp32, as every CPU trial was before --precision: bf16 matmuls add oneDNN's compiled kernels
    # per shape, a cache that fills and stays (capped by search.cpu.configure_process), not a leak of ours.
    opts = options(tmp_path, data_dir, trials=10, train_subset=300, val_size=300, precision="fp32")
    run_search(opts)  # warm up: imports, allocator pools, storage caches
    before = _rss_mb()
    run_search(options(tmp_path, data_dir, trials=50, train_subset=300, val_size=300, precision="fp32"))
    grown = _rss_mb() - before
    assert grown < 40, f"RSS grew {grown:.1f} MB over 40 trials"
    study = optuna.load_study(study_name="ffn-e1-n300", storage=opts.storage_url())
    assert len(study.trials) == 50


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_memory_stays_flat_across_trials(tmp_path, data_dir):
    run_search(options(tmp_path, data_dir, trials=5, device="cuda"))  # warm up: CUDA context, cuDNN
    before = torch.cuda.memory_allocated()
    run_search(options(tmp_path, data_dir, trials=30, device="cuda"))
    assert torch.cuda.memory_allocated() - before < 16 * 2**20
