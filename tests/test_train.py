"""The one training loop, on real MNIST subsets on the CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from search.augment import random_affine
from search.data import Tensors
from search.train import Diverged, train
from spaces import SPACES
from spaces.training import TrainSettings

CPU = torch.device("cpu")


@pytest.mark.parametrize("name", SPACES)
def test_each_seed_config_trains_one_short_epoch_above_chance(name, small_split):
    space = SPACES[name]
    train_set, val_set = small_split
    config = space.baselines[0] | {"epochs": 1}
    # 2,000 images at the seeds' batch sizes are a handful of steps, too few for BatchNorm's
    # running statistics to settle: batch 32 gives the one short epoch 62 steps.
    settings = TrainSettings.from_config(config | {"batch_size": 32})
    result = train(space.build(config), train_set, val_set, settings, device=CPU, seed=0)
    assert len(result.accuracies) == 1
    assert result.accuracy > 0.3, f"{name}: {result.accuracy:.3f} is near chance (0.10)"


def test_training_is_reproducible_with_a_seed(small_split):
    space = SPACES["ffn"]
    config = space.baselines[0] | {"epochs": 2}
    runs = []
    for _ in range(2):
        torch.manual_seed(7)  # the initial weights
        model = space.build(config)
        runs.append(train(model, *small_split, TrainSettings.from_config(config), device=CPU, seed=7).accuracies)
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

    with pytest.raises(Stop):
        train(space.build(config), *small_split, TrainSettings.from_config(config), device=CPU, on_epoch=on_epoch)
    assert [e for e, _ in seen] == [1, 2]


def test_diverging_lr_raises_diverged(small_split):
    space = SPACES["ffn"]
    config = space.baselines[0] | {"epochs": 1, "lr": 1e12, "batch_norm": False, "dropout": 0.0, "weight_decay": 0.0}
    with pytest.raises(Diverged):
        train(space.build(config), *small_split, TrainSettings.from_config(config), device=CPU)


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
        result = train(space.build(config), tiny, val_set, TrainSettings.from_config(config), device=CPU)
        assert 0.0 <= result.accuracy <= 1.0


def test_augmentation_keeps_shape_and_range_and_is_identity_at_zero_strength():
    x = torch.rand(16, 1, 28, 28)
    generator = torch.Generator().manual_seed(0)
    assert torch.allclose(random_affine(x, 0.0, generator), x, atol=1e-5)
    y = random_affine(x, 1.0, generator)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(y, x)
