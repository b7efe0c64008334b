"""The CPU as a first-class device: precision, the fast dropout, and time estimates (CPU)."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from datetime import timedelta

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from torch import nn

from search import make_pruner, run_search
from search.cpu import (
    BF16_MIN_FLOPS,
    FastBatchNorm2d,
    FastDropout,
    Fp32DepthwiseConv2d,
    cpu_has_native_bf16,
    dropout,
    forward_flops,
    swap_cpu_modules,
)
from search.cpu.allocator import USER_SETTINGS
from search.cpu.dropout import dropped_positions, splitmix64
from search.estimate import (
    COMPLETE_PER_KEEP,
    PRIOR_COMPLETE_FRACTION,
    PRIOR_OVER_BUDGET,
    PRIOR_PRUNED_EXTRA,
    PRIOR_TRIALS,
    Ended,
    Pruning,
    Running,
    _schedules_without_reference,
    _thinned_complete_share,
    _unjudged,
    estimate,
    format_duration,
)
from search.profile import DeviceProfile, resolve_precision
from search.zoo import zoo_entry
from spaces import get_space
from spaces.training import TrainSettings
from tests.conftest import run_cli, small_search


@pytest.mark.parametrize("side", [13, 24])  # the mask everywhere; at 24 and p < 0.1, positions
def test_fast_dropout_drops_p_scales_the_rest_and_keeps_the_layout(side, monkeypatch):
    torch.manual_seed(0)
    x = torch.ones(256, 8, side, side).to(memory_format=torch.channels_last)
    drawn = []
    monkeypatch.setattr(dropout, "dropped_positions", lambda *a: drawn.append(a) or dropped_positions(*a))
    for p in (0.05, 0.2, 0.5):
        y = FastDropout(p).train()(x)
        dropped = (y == 0).float().mean().item()
        assert dropped == pytest.approx(p, abs=0.005)
        assert y.max().item() == pytest.approx(1 / (1 - p), rel=1e-3)
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert y.mean().item() == pytest.approx(1.0, abs=0.01)  # unbiased, as nn.Dropout
    big = x.numel() >= dropout.POSITIONS_MIN_ELEMENTS
    assert [a[1] for a in drawn] == ([0.05] if big else [])  # positions only at small p on big tensors
    for dtype in (torch.bfloat16, torch.float16, torch.float64):
        y = FastDropout(0.2).train()(x.to(dtype))
        assert y.dtype == dtype and set(y.unique().tolist()) == {0.0, torch.tensor(1.25, dtype=dtype).item()}
    sliced = torch.ones(512, 80)[:, ::2]  # neither contiguous nor channels-last
    assert (FastDropout(0.5).train()(sliced) == 0).float().mean().item() == pytest.approx(0.5, abs=0.02)
    assert FastDropout(0.3).eval()(x) is x
    # The gradient takes the same mask, also when it arrives in another layout than x's.
    for p in (0.05, 0.5):
        grad_in = x.clone().requires_grad_()
        y = FastDropout(p).train()(grad_in)
        upstream = torch.rand(x.shape)  # contiguous, where x is channels-last
        (y * upstream).sum().backward()
        torch.testing.assert_close(grad_in.grad, torch.where(y == 0, 0.0, upstream / (1 - p)))


def test_dropped_positions_are_a_bernoulli_process():
    n, p = 1_000_000, 0.1
    positions = dropped_positions(n, p, seed=7)
    gaps = positions.diff()
    assert positions[0] >= 0 and positions[-1] < n and (gaps > 0).all()
    assert abs(len(positions) - n * p) < 5 * (n * p * (1 - p)) ** 0.5
    # Between drops: geometric, so the next element is dropped with probability p, whatever came before.
    assert gaps.double().mean().item() == pytest.approx(1 / p, rel=0.01)
    assert (gaps == 1).double().mean().item() == pytest.approx(p, abs=0.005)
    counts = torch.bincount(positions // (n // 10), minlength=10).double()
    assert ((counts - n * p / 10).abs() < 5 * (n * p / 10) ** 0.5).all()
    assert not torch.equal(positions[:100], dropped_positions(n, p, seed=8)[:100])


def test_dropped_positions_continue_the_same_stream_when_more_draws_are_needed():
    assert torch.equal(dropped_positions(50_000, 0.2, seed=3, draws=64), dropped_positions(50_000, 0.2, seed=3))
    assert len(dropped_positions(100, 0.999, seed=1)) >= 95


def test_splitmix64_matches_the_reference_and_its_halves_are_uniform():
    def reference(i: int, seed: int) -> int:
        m = (1 << 64) - 1
        z = (seed + i * 0x9E3779B97F4A7C15) & m
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        z ^= z >> 31
        return z - (1 << 64) if z >> 63 else z

    words = splitmix64(200_000, 12345)
    assert [words[i].item() for i in (0, 1, 77, 199_999)] == [reference(i, 12345) for i in (0, 1, 77, 199_999)]
    halves = words.view(torch.int32).view(-1, 2).double()
    assert halves.mean(0).abs().max() < 2**32 / 200 and (halves.std(0) / (2**32 / 12**0.5) - 1).abs().max() < 0.01
    assert torch.equal(splitmix64(10, 12345, first=5), words[5:15])


def test_cpu_optimizers_are_fused():
    model = nn.Linear(4, 2)
    profile = DeviceProfile.resolve(torch.device("cpu"), "fp32")
    for name in ("sgd", "adam", "adamw"):
        optimizer = profile.optimizer(model, TrainSettings(epochs=1, optimizer=name))
        assert optimizer.defaults["fused"] is True, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_batch_norm_trains_as_batch_norm_and_moves_the_same_statistics(dtype):
    # The reference is nn.BatchNorm2d in float64 on the same values: in bf16 PyTorch's own kernel
    # rounds the bias gradient to bf16 (1-2% off), where the fast one sums in fp32.
    torch.manual_seed(0)
    exact = nn.BatchNorm2d(12).double()
    nn.init.uniform_(exact.weight, 0.5, 1.5), nn.init.uniform_(exact.bias, -0.5, 0.5)
    fast = FastBatchNorm2d(12)
    fast.load_state_dict(exact.state_dict())
    tolerance = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 2e-2}
    for _ in range(2):  # the running statistics move twice
        x = (torch.randn(16, 12, 19, 19) * 3 + 1).to(dtype).to(memory_format=torch.channels_last)
        grad = torch.randn(16, 12, 19, 19).to(dtype)
        x_exact, x_fast = x.double().requires_grad_(), x.clone().requires_grad_()
        out_exact, out_fast = exact(x_exact), fast(x_fast)
        assert type(out_fast.grad_fn).__name__ == "_TrainingBatchNormBackward"  # the row path, not PyTorch's
        out_exact.backward(grad.double()), out_fast.backward(grad)
        assert out_fast.dtype == dtype and out_fast.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(out_fast.double(), out_exact, **tolerance)
        torch.testing.assert_close(x_fast.grad.double(), x_exact.grad, **tolerance)
    for name in ("weight", "bias"):
        torch.testing.assert_close(getattr(fast, name).grad.double(), getattr(exact, name).grad, rtol=1e-4, atol=1e-4)
    for name in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(fast, name).double(), getattr(exact, name), rtol=1e-5, atol=1e-5)
    assert fast.num_batches_tracked.item() == exact.num_batches_tracked.item() == 2


def test_fast_batch_norm_leaves_the_rest_to_pytorch():
    torch.manual_seed(0)
    reference, fast = nn.BatchNorm2d(16), FastBatchNorm2d(16)
    x = torch.randn(4, 16, 5, 5).to(memory_format=torch.channels_last)
    assert torch.equal(fast(x), reference(x))  # 16 channels: PyTorch's kernel vectorises them
    odd_reference, odd_fast = nn.BatchNorm2d(12).eval(), FastBatchNorm2d(12).eval()
    y = torch.randn(4, 12, 5, 5)
    assert torch.equal(odd_fast(y), odd_reference(y))  # evaluation, NCHW
    small = torch.randn(4, 12, 5, 5).to(memory_format=torch.channels_last).requires_grad_()
    assert torch.equal(odd_fast.train()(small), odd_reference.train()(small))  # too small to gain


def test_fast_layers_leave_tensors_on_other_devices_to_pytorch():
    # Large, channels-last, 12 channels: on the CPU both would take their own path.
    x = torch.ones(256, 12, 13, 13, device="meta").to(memory_format=torch.channels_last)
    assert FastDropout(0.5).train()(x).device.type == "meta"
    assert FastBatchNorm2d(12, device="meta").train()(x).device.type == "meta"
    depthwise = Fp32DepthwiseConv2d(12, 12, 3, groups=12, device="meta")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert depthwise(x).device.type == "meta"


def test_the_cpu_profile_keeps_only_large_depthwise_convs_in_fp32():
    space, config = get_space("gap_cnn"), dict(zoo_entry("gap_cnn-8k-cpu").config)  # separable
    # Stage 1's kernel; stage 2's is 3×3, and stage 1's first "depthwise" conv sees one channel.
    for kernel, in_fp32 in ((3, 0), (5, config["stage1_blocks"] - 1)):
        model = space.build(config | {"kernel": kernel})
        prepared = DeviceProfile.resolve(torch.device("cpu"), "bf16", model).prepare(model)
        assert sum(type(m) is Fp32DepthwiseConv2d for m in prepared.modules()) == in_fp32
        assert list(prepared.state_dict()) == list(model.state_dict())


@pytest.mark.parametrize("padding", [0, "same"])
def test_fp32_depthwise_conv_computes_in_fp32_inside_a_bf16_step(padding):
    torch.manual_seed(0)
    plain = nn.Conv2d(12, 12, 5, padding=padding, groups=12, bias=False)
    fast = Fp32DepthwiseConv2d.like(plain)
    x = torch.randn(8, 12, 14, 14).to(torch.bfloat16).to(memory_format=torch.channels_last)
    grad = torch.randn(8, 12, *plain(x.float()).shape[2:])
    exact_x, fast_x = x.double().requires_grad_(), x.clone().requires_grad_()
    exact_weight = plain.weight.detach().double().requires_grad_()
    exact = nn.functional.conv2d(exact_x, exact_weight, None, 1, padding, 1, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fast(fast_x)
        rounded = plain(x)  # PyTorch's conv under autocast: bf16 weights, bf16 out
    assert out.dtype == torch.float32 and rounded.dtype == torch.bfloat16
    out.backward(grad), exact.backward(grad.double())
    torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=1e-5)
    assert fast.weight.grad.dtype == torch.float32
    torch.testing.assert_close(fast.weight.grad.double(), exact_weight.grad, rtol=1e-4, atol=1e-4)
    assert fast_x.grad.dtype == torch.bfloat16
    torch.testing.assert_close(fast_x.grad.double(), exact_x.grad, rtol=1e-2, atol=1e-2)
    assert not torch.allclose(rounded.double(), exact, rtol=1e-5, atol=1e-5)  # what fp32 buys: bf16 is off
    # Outside autocast it is nn.Conv2d, the same values.
    y = torch.randn(2, 12, 9, 9)
    assert torch.equal(fast(y), plain(y))


def test_swap_cpu_modules_replaces_every_dropout_and_keeps_the_weights():
    model = nn.Sequential(
        nn.Linear(4, 4), nn.Dropout(0.25), nn.Sequential(nn.Dropout(0.1), nn.ReLU(), nn.BatchNorm2d(6, momentum=0.2)),
        nn.Conv2d(6, 6, 5, groups=6, bias=False), nn.Conv2d(6, 6, 5, padding="same", groups=6),  # 5×5 depthwise
        nn.Conv2d(6, 6, 3, groups=6), nn.Conv2d(6, 12, 5, groups=6), nn.Conv2d(6, 6, 5, groups=3),  # faster in bf16,
        nn.Conv2d(1, 1, 5), nn.Conv2d(6, 6, 1),  # or not depthwise
    )  # fmt: skip
    model[2][2].running_mean.fill_(0.5)
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    swap_cpu_modules(model)
    kinds = [type(m) for m in model.modules()]
    assert nn.Dropout not in kinds and kinds.count(FastDropout) == 2
    assert kinds.count(FastBatchNorm2d) == 1 and model[2][2].momentum == 0.2 and not model[2][2].training
    assert [type(m) for m in model[3:]] == [Fp32DepthwiseConv2d] * 2 + [nn.Conv2d] * 5
    assert model[4].padding == "same" and model[4].bias is not None and model[3].bias is None
    assert not model[3].training
    assert list(model.state_dict()) == list(state)
    assert [m.p for m in model.modules() if isinstance(m, FastDropout)] == [0.25, 0.1]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


_PROCESS_PROBE = """
import os, torch
from search.cpu import configure_process
from search.cpu.allocator import keep_pages_mapped
from search.data import Tensors
from search.profile import DeviceProfile
from search.train import train
from spaces import get_space
from spaces.training import TrainSettings
def settings():
    return os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY"), keep_pages_mapped.cache_info().currsize
data = Tensors(torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (64,)))
space = get_space("ffn")
model = space.build(space.baselines[0])
train(model, data, data, TrainSettings(epochs=1, batch_size=32), profile=DeviceProfile.resolve(torch.device("cpu")))
print(*settings())
configure_process(torch.device("cuda"))
print(*settings())
configure_process(torch.device("cpu"))
print(*settings())
"""


def test_process_settings_come_from_configure_process_not_from_import_or_train():
    environment = {k: v for k, v in os.environ.items() if k not in USER_SETTINGS and not k.startswith("ONEDNN")}
    out = subprocess.run(
        [sys.executable, "-c", _PROCESS_PROBE], capture_output=True, text=True, env=environment, check=True
    )
    assert out.stdout.splitlines() == ["None 0", "None 0", "128 1"]


def _trial(state: TrialState, epochs: int, seconds: float, device: str = "cpu", **attrs):
    return create_trial(
        state=state, value=0.9 if state == TrialState.COMPLETE else None,
        intermediate_values={e: 0.9 for e in range(1, epochs + 1)},
        params={"x": 1}, distributions={"x": IntDistribution(0, 2)},
        user_attrs={"epochs_run": epochs, "seconds": seconds, "device": device, **attrs},
    )  # fmt: skip


def test_the_estimate_is_epochs_left_times_this_devices_seconds_per_epoch():
    finished = [
        _trial(TrialState.COMPLETE, 19, 38.0, baseline=True),  # queued by hand: not the sampler's mix
        _trial(TrialState.COMPLETE, 10, 20.0),
        _trial(TrialState.PRUNED, 4, 8.0),
        _trial(TrialState.PRUNED, 2, 4.0),
        _trial(TrialState.COMPLETE, 0, 0.0, infeasible="over budget"),
    ]
    other_device = _trial(TrialState.COMPLETE, 10, 1.0, device="cuda:0")
    guess = estimate([*finished, other_device], total=20, device="cpu", max_epochs=20, pruning=Pruning(2, 0.2))
    assert guess.seconds_per_epoch == pytest.approx(2.0)  # the CUDA trial's speed is not this device's

    def blend(prior, total, count):
        return (prior * PRIOR_TRIALS + total) / (PRIOR_TRIALS + count)

    over = blend(PRIOR_OVER_BUDGET, 1, 5)  # 5 sampled trials (the CUDA one too), 1 over budget
    complete = blend(0.2, 2, 4)  # of the 4 that trained, 2 completed
    complete_epochs = blend(PRIOR_COMPLETE_FRACTION * 20, 19 + 10 + 10, 3)  # the baseline's too
    pruned_epochs = blend(2 + PRIOR_PRUNED_EXTRA, 4 + 2, 2)
    per_trial = (1 - over) * (complete * complete_epochs + (1 - complete) * pruned_epochs)
    assert guess.epochs_per_trial == pytest.approx(per_trial)
    outside = guess.remaining_seconds - 14 * per_trial * 2.0
    assert 0 <= outside < 1  # create_trial's trials took no time outside training
    assert estimate([], total=5, device="cpu", max_epochs=20) is None  # nothing timed yet
    first_epoch = estimate([], total=5, device="cpu", max_epochs=20, running=Running(3.0, 1))
    assert first_epoch.seconds_per_epoch == 3.0 and first_epoch.remaining_seconds > 0
    assert format_duration(3725) == "1:02:05" and format_duration(65) == "1:05"


def test_the_estimate_learns_the_studys_own_pruning_and_sees_a_trial_just_ended():
    pruned_early = [_trial(TrialState.PRUNED, 2, 2.0) for _ in range(30)]
    short = estimate(pruned_early, total=60, device="cpu", max_epochs=20, pruning=Pruning(2, 0.2))
    long = estimate([_trial(TrialState.COMPLETE, 20, 20.0) for _ in range(30)], total=60, device="cpu", max_epochs=20)
    assert short.epochs_per_trial < 3 < 15 < long.epochs_per_trial  # its own mix outweighs the prior
    in_flight = _trial(TrialState.RUNNING, 0, 0.0)  # told to the storage only after the progress line
    in_flight.number = 30
    for state, infeasible in ((TrialState.COMPLETE, False), (TrialState.PRUNED, False), (TrialState.COMPLETE, True)):
        attrs = {"infeasible": "over budget"} if infeasible else {}
        stored = _trial(state, 0 if infeasible else 20, 20.0, **attrs)
        stored.number = 30
        ended = Ended(30, 20.0, 0 if infeasible else 20, state, infeasible)
        seen = estimate([*pruned_early, in_flight], 60, "cpu", 20, just_finished=ended)
        assert seen.epochs_per_trial == estimate([*pruned_early, stored], 60, "cpu", 20).epochs_per_trial


def test_under_jobs_a_trial_just_ended_still_counts_its_worker():
    done = [_trial(TrialState.PRUNED, 2, 2.0) for _ in range(10)]
    mine, other = _trial(TrialState.RUNNING, 0, 0.0), _trial(TrialState.RUNNING, 0, 0.0)
    mine.number, other.number = 10, 11
    stored = _trial(TrialState.PRUNED, 2, 2.0)
    stored.number = 10
    alone = estimate([*done, stored], 40, "cpu", 20)
    # The line printed as trial 10 ends: in the storage it and trial 11 are still RUNNING.
    shared = estimate([*done, mine, other], 40, "cpu", 20, just_finished=Ended(10, 2.0, 2, TrialState.PRUNED))
    assert shared.remaining_seconds == pytest.approx(alone.remaining_seconds / 2, abs=1.0)
    assert alone.remaining_seconds > 20


def test_the_estimate_leaves_the_unjudged_first_trial_of_each_schedule_out_of_the_shares():
    schedules = CategoricalDistribution(["none", "step", "onecycle"])

    def made(schedule: str, state: TrialState, epochs: int, **attrs):
        trial = _trial(state, epochs, float(epochs), **attrs)
        trial.params, trial.distributions = {"schedule": schedule}, {"schedule": schedules}
        return trial

    trials = [made("none", TrialState.COMPLETE, 19, baseline=True), made("step", TrialState.COMPLETE, 20)]
    trials += [made("none", TrialState.PRUNED, 2) for _ in range(6)]
    for number, trial in enumerate(trials):
        trial.number = number
    peers = Pruning(2, 0.16, by_schedule=True)
    guess = estimate(trials, 100, "cpu", 20, pruning=peers)
    blind = estimate(trials, 100, "cpu", 20, pruning=Pruning(2, 0.16))
    # The step trial, first of its schedule, completed unjudged: it does not raise the complete share.
    assert 0 < guess.remaining_seconds and blind.remaining_seconds > 0
    assert 1 in _unjudged(trials) and _schedules_without_reference(trials) == 1  # onecycle: not tried yet


def test_under_the_peers_pruner_completions_thin_out_and_pruned_trials_count_as_lately():
    """Each completed trial raises the peers' bar, so the estimate expects fewer completions ahead
    than it has seen; and pruned trials' epochs are the recent ones' (the bar rose)."""
    early = [_trial(TrialState.PRUNED, 8, 16.0) for _ in range(20)]
    late = [_trial(TrialState.PRUNED, 1, 2.0) for _ in range(20)]
    done = [_trial(TrialState.COMPLETE, 20, 40.0) for _ in range(8)]
    for i, trial in enumerate([*early, *done, *late]):
        trial.number = i
    history = [*early, *done, *late]
    thinning = Pruning(1, 0.1, keep=1 / 3)
    cumulative = Pruning(1, 0.1)
    ahead = estimate(history, 200, "cpu", 20, pruning=thinning)
    assert ahead.epochs_per_trial < estimate(history, 200, "cpu", 20, pruning=cumulative).epochs_per_trial
    # Pruned trials now stop after one epoch; the early ones' eight do not count.
    recent = estimate([*early, *late], 200, "cpu", 20, pruning=cumulative)
    assert recent.epochs_per_trial < 2.0  # all 40 pruned trials together: over 4


@pytest.mark.parametrize("trained", [1, 5, 20, 60, 99])
def test_completions_to_come_follow_the_whole_study_curve_of_the_prior(trained):
    """A study whose completions so far lie on the prior's curve (a share s of its N judged trials
    complete in all, growing like n^keep) is expected to end on it: s·N in all, whatever n is."""
    share, keep, total = 0.16, 1 / 3, 100
    on_curve = share * total * (trained / total) ** keep
    left = total - trained
    future = left * _thinned_complete_share(share, keep, trained, on_curve, left)  # a count, here a real
    assert future + on_curve == pytest.approx(share * total)
    # None completed so far: early on the prior still expects most of its completions to come.
    none_yet = left * _thinned_complete_share(share, keep, trained, 0, left)
    assert none_yet == pytest.approx(
        share * total * (1 - (trained / total) ** keep) * PRIOR_TRIALS / (PRIOR_TRIALS + trained)
    )


def test_the_estimate_assumes_what_the_pruner_does_and_ignores_pauses_between_runs():
    assert Pruning.of(make_pruner("none", 20)).complete_share == 1.0
    assert Pruning.of(make_pruner("median", 20, 6)).first_judged_epoch == 6
    peers = Pruning(3, COMPLETE_PER_KEEP * 0.5, by_schedule=True, keep=0.5)
    assert Pruning.of(make_pruner("peers", 20, 3, keep=0.5)) == peers
    trials = [_trial(TrialState.PRUNED, 2, 2.0) for _ in range(10)]
    quick = estimate(trials, 20, "cpu", 20)
    for i, trial in enumerate(trials):  # the same trials, run a day apart: each trial's own wall time counts
        trial.datetime_start += timedelta(days=i)
        trial.datetime_complete += timedelta(days=i)
    assert estimate(trials, 20, "cpu", 20).remaining_seconds == pytest.approx(quick.remaining_seconds, abs=1)


def test_trials_record_their_precision_and_log_lines_carry_the_estimate(tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.setenv("MNIST_SEARCH_PROGRESS_LINES", "1")
    study = run_search(small_search(tmp_path, data_dir, trials=3, quiet=False, precision="bf16"))
    assert {t.user_attrs["precision"] for t in study.trials} == {"bf16"}
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("trial")]
    assert len(lines) == 3 and all("s/epoch" in line and "to go" in line for line in lines), lines
    auto = run_search(small_search(tmp_path, data_dir, trials=1, storage=f"sqlite:///{tmp_path}/a.db"))
    seed_000 = get_space("ffn").build(auto.trials[0].user_attrs["config"])
    assert forward_flops(seed_000) < BF16_MIN_FLOPS  # too small to gain from bf16, native or not
    assert auto.trials[0].user_attrs["precision"] == "fp32"


def test_auto_precision_follows_the_cpu_and_the_model_size():
    big = get_space("gap_cnn").build(get_space("gap_cnn").baselines[0])
    assert forward_flops(big) >= BF16_MIN_FLOPS
    native = cpu_has_native_bf16()
    assert resolve_precision(torch.device("cpu"), "auto", big) == ("bf16" if native else "fp32")
    assert resolve_precision(torch.device("cpu"), "fp32", big) == "fp32"
    assert resolve_precision(torch.device("cuda"), "auto") == "bf16"


def test_a_resumed_study_starts_with_its_estimate(tmp_path, data_dir, capsys):
    run_search(small_search(tmp_path, data_dir, trials=3))
    run_search(small_search(tmp_path, data_dir, trials=5, quiet=False))
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("resuming: 3 of 5 trials finished;") and "to go on cpu" in first


def test_retrain_shows_each_epoch_and_records_its_precision(tmp_path):
    config = get_space("ffn").baselines[0] | {"epochs": 2}
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"space": "ffn", "study": "s", "trial": 0, "config": config, "epochs": 2}))
    result = run_cli("retrain", str(path), "--seeds", "3", "--device", "cpu", "--precision", "fp32",
                     "--out", str(tmp_path / "out"), "--no-download", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "s-trial0 seed 3: epoch 1/2 test accuracy" in result.stderr and "s/epoch" in result.stderr
    assert "epoch 2/2" in result.stderr
    metrics = json.loads((tmp_path / "out" / "s-trial0-seed3.metrics.json").read_text())
    assert metrics["precision"] == "fp32" and metrics["device"] == "cpu"
    assert optuna.__version__ == metrics["optuna"]


_MALLOC_PROBE = """
import ctypes, sys, torch
from search.cpu.allocator import keep_pages_mapped
class Mallinfo2(ctypes.Structure):
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(name, ctypes.c_size_t) for name in names.split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
applied = keep_pages_mapped() if sys.argv[1] == "keep" else None
before = libc.mallinfo2().hblkhd
block = torch.ones(30 << 20, dtype=torch.uint8)
print(applied, (libc.mallinfo2().hblkhd - before) >> 20)
"""


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="needs glibc 2.33+ (mallinfo2)")
@pytest.mark.parametrize(
    ("mode", "env", "expected"),
    [
        ("default", {}, "None 30"),  # glibc's default: a fresh 30 MiB block is mmap'd
        ("keep", {}, "True 0"),  # kept on the heap
        ("keep", {"MALLOC_TRIM_THRESHOLD_": "131072"}, "False 30"),  # left as the user set it
    ],
)
def test_keep_pages_mapped_serves_large_blocks_from_the_heap(mode, env, expected):
    environment = {k: v for k, v in os.environ.items() if k not in USER_SETTINGS} | env
    out = subprocess.run(
        [sys.executable, "-c", _MALLOC_PROBE, mode], capture_output=True, text=True, env=environment, check=True
    )
    assert out.stdout.split()[:2] == expected.split()


def test_the_cpu_trains_with_the_cores_other_processes_leave_free(monkeypatch):
    import search.cpu.threads as threads

    monkeypatch.setattr(threads, "usable_cpus", lambda: {0, 1})
    # (wall, machine busy, own) seconds: the first run's start and 3 epochs, the second's start and 1.
    samples = iter([(0.0, 0.0, 0.0), (10.0, 20.0, 19.5), (20.0, 40.0, 29.5), (30.0, 60.0, 49.0)]
                   + [(40.0, 80.0, 59.0), (50.0, 100.0, 64.0)])  # fmt: skip
    monkeypatch.setattr(threads, "_sample", lambda: next(samples))
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with threads.CoreShare() as share:
            share.before_epoch()  # quiet: 20 s busy, 19.5 of them ours
            assert torch.get_num_threads() == 2
            share.before_epoch()  # another process kept a core busy: 20 s busy, 10 ours
            assert torch.get_num_threads() == 1
            share.before_epoch()  # quiet again
            assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), threads.CoreShare() as share:  # a run that ends in an exception
            share.before_epoch()  # busy: down to one thread
            assert torch.get_num_threads() == 1
            raise RuntimeError("pruned")
        assert torch.get_num_threads() == 2  # the caller's count, restored
    finally:
        torch.set_num_threads(previous)


def test_only_the_cpus_this_process_may_use_count_as_the_machines_load(monkeypatch):
    """A container pinned to 2 of a host's 4 CPUs: the host's other two, busy, are not its business."""
    import io

    import search.cpu.threads as threads

    stat = (
        "cpu  400 0 0 400 0 0 0 0 0 0\n"
        "cpu0 100 0 0 100 0 0 0 0 0 0\ncpu1 50 0 0 150 0 0 0 0 0 0\n"
        "cpu2 200 0 0 0 0 0 0 0 0 0\ncpu3 50 0 0 150 0 0 0 0 0 0\nintr 12345\n"
    )
    monkeypatch.setattr(threads, "open", lambda *_: io.StringIO(stat), raising=False)
    monkeypatch.setattr(threads, "usable_cpus", lambda: {0, 1})
    _wall, busy, _own = threads._sample()
    assert busy == 150 / threads.CLOCK_TICKS  # cpu0 and cpu1 only
    monkeypatch.setattr(threads, "usable_cpus", lambda: {0, 1, 2, 3})
    assert threads._sample()[1] == 400 / threads.CLOCK_TICKS
    monkeypatch.setattr(threads, "usable_cpus", lambda: {8, 9})  # numbered otherwise (LXCFS): the whole line
    assert threads._sample()[1] == 400 / threads.CLOCK_TICKS
