"""The one training loop, on real MNIST subsets on the CPU."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from search.augment import random_affine
from search.averaging import WeightAverage
from search.cpu import FastBatchNorm2d, FastDropout
from search.data import Tensors
from search.profile import DeviceProfile
from search.train import Diverged, accuracy, train
from spaces import SPACES
from spaces.training import TrainSettings

CPU = torch.device("cpu")


def on_cpu(model: torch.nn.Module) -> DeviceProfile:
    return DeviceProfile.resolve(CPU, "auto", model)


@pytest.mark.parametrize("name", SPACES)
def test_each_seed_config_trains_one_short_epoch_above_chance(name, small_split):
    space = SPACES[name]
    train_set, val_set = small_split
    config = space.baselines[0] | {"epochs": 1}
    # 2,000 images at the seeds' batch sizes are a handful of steps, too few for BatchNorm's
    # running statistics to settle: batch 32 gives the one short epoch 62 steps.
    settings = TrainSettings.from_config(config | {"batch_size": 32})
    model = space.build(config)
    result = train(model, train_set, val_set, settings, profile=on_cpu(model), seed=0)
    assert len(result.accuracies) == 1
    assert result.accuracy > 0.3, f"{name}: {result.accuracy:.3f} is near chance (0.10)"


def test_training_is_reproducible_with_a_seed(small_split):
    space = SPACES["ffn"]
    config = space.baselines[0] | {"epochs": 2}
    runs = []
    for _ in range(2):
        torch.manual_seed(7)  # the initial weights
        model = space.build(config)
        runs.append(
            train(model, *small_split, TrainSettings.from_config(config), profile=on_cpu(model), seed=7).accuracies
        )
    assert runs[0] == runs[1]


def test_per_epoch_callback_sees_every_epoch_and_can_stop(small_split):
    space = SPACES["ffn"]
    config = space.baselines[0] | {"epochs": 3}
    seen = []

    class Stop(Exception):
        pass

    def on_epoch(epoch, accuracy):
        seen.append((epoch, accuracy))
        if epoch == 2:
            raise Stop

    model = space.build(config)
    with pytest.raises(Stop):
        train(model, *small_split, TrainSettings.from_config(config), profile=on_cpu(model), on_epoch=on_epoch)
    assert [e for e, _ in seen] == [1, 2]


def test_diverging_lr_raises_diverged(small_split):
    space = SPACES["ffn"]
    config = space.baselines[0] | {"epochs": 1, "lr": 1e12, "batch_norm": False, "dropout": 0.0, "weight_decay": 0.0}
    model = space.build(config)
    with pytest.raises(Diverged):
        train(model, *small_split, TrainSettings.from_config(config), profile=on_cpu(model))


def test_cross_entropy_on_log_softmax_outputs_is_nll_loss():
    logits, labels = torch.randn(64, 10), torch.randint(0, 10, (64,))
    log_probs = F.log_softmax(logits, dim=1)
    assert torch.allclose(F.cross_entropy(log_probs, labels), F.nll_loss(log_probs, labels), atol=1e-6)


def test_schedules_and_optimizers_run(small_split):
    space = SPACES["gap_cnn"]
    train_set, val_set = small_split
    tiny = Tensors(train_set.images[:256], train_set.labels[:256])
    for extra in ({"schedule": "onecycle", "optimizer": "adam"}, {"schedule": "step", "step_size": 1, "gamma": 0.5}):
        config = space.baselines[0] | {"epochs": 1, "augment": 0.5, "label_smoothing": 0.1} | extra
        model = space.build(config)
        result = train(model, tiny, val_set, TrainSettings.from_config(config), profile=on_cpu(model))
        assert 0.0 <= result.accuracy <= 1.0


def test_augmentation_keeps_shape_and_range_and_is_identity_at_zero_strength():
    x = torch.rand(16, 1, 28, 28)
    generator = torch.Generator().manual_seed(0)
    assert torch.allclose(random_affine(x, 0.0, generator), x, atol=1e-5)
    y = random_affine(x, 1.0, generator)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(y, x)


def test_training_leaves_the_callers_model_as_it_was_and_returns_the_trained_copy(small_split):
    space = SPACES["gap_cnn"]
    config = space.baselines[0] | {"epochs": 1, "batch_size": 32}
    train_set, val_set = small_split
    torch.manual_seed(0)
    model = space.build(config)
    kinds = [type(m) for m in model.modules()]
    assert nn.Dropout in kinds and nn.BatchNorm2d in kinds
    before = {k: v.clone() for k, v in model.state_dict().items()}
    profile = DeviceProfile.resolve(CPU, "bf16", model)  # bf16: channels-last too
    result = train(model, Tensors(train_set.images[:512], train_set.labels[:512]), val_set,
                   TrainSettings.from_config(config), profile=profile)  # fmt: skip
    # The caller's model: PyTorch's own layers, its weights, its memory format, ready for any device.
    assert [type(m) for m in model.modules()] == kinds
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.is_contiguous() for p in model.parameters())
    meta = copy.deepcopy(model).to("meta").train()
    assert meta(torch.zeros(4, 1, 28, 28, device="meta")).shape == (4, 10)
    # The trained copy: the CPU's layers, new weights under the same keys, which the caller's model takes.
    trained = result.model
    assert {FastDropout, FastBatchNorm2d} <= {type(m) for m in trained.modules()}
    assert list(trained.state_dict()) == list(before)
    assert not torch.equal(trained.state_dict()["0.weight"], before["0.weight"])
    model.load_state_dict(trained.state_dict())
    assert accuracy(model, val_set, profile) == pytest.approx(result.accuracy, abs=0.005)


def test_a_weight_average_warms_up_then_moves_at_its_decay_and_copies_counters():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        model[0].weight.zero_()
    average = WeightAverage(model, 0.9)
    average.update_parameters(model)  # the first update copies
    expected = 0.0
    for n in range(1, 30):
        with torch.no_grad():
            model[0].weight.fill_(float(n))
        model[1].num_batches_tracked += 1
        average.update_parameters(model)
        weight = 1 - min(0.9, n / (9 + n))  # (1 + k) / (10 + k), k updates before this one
        expected += weight * (n - expected)
    assert average.module[0].weight[0, 0].item() == pytest.approx(expected, rel=1e-5)
    assert average.module[1].num_batches_tracked.item() == model[1].num_batches_tracked.item() == 29
    with pytest.raises(ValueError):
        WeightAverage(model, 1.0)


def test_with_ema_the_loop_evaluates_and_returns_the_average_of_the_same_run(small_split):
    space = SPACES["gap_cnn"]
    config = space.baselines[0] | {"epochs": 1, "batch_size": 32}
    train_set, val_set = small_split
    subset = Tensors(train_set.images[:512], train_set.labels[:512])
    results = {}
    for ema in (0.0, 0.9):
        torch.manual_seed(0)
        model = space.build(config)
        settings = TrainSettings.from_config(config | {"ema": ema})
        results[ema] = train(model, subset, val_set, settings, profile=on_cpu(model), seed=0)
    plain, averaged = results[0.0], results[0.9]
    assert list(averaged.model.state_dict()) == list(plain.model.state_dict())
    assert not torch.equal(averaged.model.state_dict()["0.weight"], plain.model.state_dict()["0.weight"])
    # The average is what the epoch measured, and batch norm's statistics came with it.
    assert accuracy(averaged.model, val_set, on_cpu(averaged.model)) == averaged.accuracy
    assert not torch.equal(averaged.model.state_dict()["2.running_mean"], plain.model.state_dict()["2.running_mean"])
