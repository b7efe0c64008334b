"""CUDA-only checks of the training loop (skipped without a GPU; run them on a GPU machine)."""

from __future__ import annotations

import pytest
import torch

from search.data import Split, split_train_val
from search.train import TrainSettings, train
from spaces import get_space

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def split(mnist):
    return split_train_val(mnist.train, Split(val_size=5000, train_subset=20_000))


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"optimizer": "adam", "lr": 3e-3, "schedule": "onecycle"},
        {"schedule": "step", "step_size": 1, "gamma": 0.5, "augment": 0.5, "label_smoothing": 0.1},
    ],
)
def test_cuda_graph_trains_as_well_as_eager(split, extra):
    space = get_space("gap_cnn")
    config = space.baselines[0] | {"epochs": 3} | extra
    accuracies = {}
    for graph in (True, False):
        torch.manual_seed(0)
        model = space.build(config)
        settings = TrainSettings.from_config(config)
        accuracies[graph] = train(model, *split, settings, device=CUDA, seed=0, cuda_graph=graph).accuracy
    assert accuracies[True] > 0.95 and accuracies[False] > 0.95, accuracies
    assert abs(accuracies[True] - accuracies[False]) < 0.01, accuracies


def test_schedule_changes_the_lr_inside_the_graph(split):
    space = get_space("gap_cnn")
    config = space.baselines[0] | {"epochs": 2, "schedule": "step", "step_size": 1, "gamma": 0.0}
    torch.manual_seed(0)
    model = space.build(config)
    before = [p.detach().clone() for p in model.parameters()]
    # gamma 0: the lr is 0 from epoch 2 on, so epoch 2 must leave the weights alone.
    result = train(model, *split, TrainSettings.from_config(config), device=CUDA, seed=0)
    assert len(result.accuracies) == 2
    assert result.accuracies[1] == pytest.approx(result.accuracies[0], abs=0.002)
    assert any(not torch.equal(b.to(CUDA), p) for b, p in zip(before, model.parameters(), strict=True))
