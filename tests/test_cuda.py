"""CUDA-only checks of the training loop (skipped without a GPU; run them on a GPU machine)."""

from __future__ import annotations

import pytest
import torch

from search.data import Split, split_train_val
from search.profile import DeviceProfile
from search.train import train
from spaces import get_space
from spaces.training import TrainSettings

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
        profile = DeviceProfile.resolve(CUDA, "auto", model, cuda_graph=graph)
        accuracies[graph] = train(model, *split, settings, profile=profile, seed=0).accuracy
    assert accuracies[True] > 0.95 and accuracies[False] > 0.95, accuracies
    assert abs(accuracies[True] - accuracies[False]) < 0.01, accuracies


def test_schedule_changes_the_lr_inside_the_graph(split):
    space = get_space("gap_cnn")
    config = space.baselines[0] | {"epochs": 2, "schedule": "step", "step_size": 1, "gamma": 0.0}
    torch.manual_seed(0)
    model = space.build(config)
    # train() trains the profile's copy of model; a hook (copied with it) finds that copy.
    trained: list[torch.nn.Module] = []
    model.register_forward_pre_hook(lambda module, _args: trained.append(module))
    after_epoch: dict[int, list[torch.Tensor]] = {}

    def snapshot(epoch: int, _accuracy: float) -> None:
        after_epoch[epoch] = [p.detach().clone() for n, p in trained[-1].named_parameters() if "weight" in n]

    # gamma 0: the lr is 0 from epoch 2 on, so the replayed graph must leave the weights alone.
    profile = DeviceProfile.resolve(CUDA, "auto", model)
    train(model, *split, TrainSettings.from_config(config), profile=profile, seed=0, on_epoch=snapshot)
    assert trained[-1] is not model
    assert all(torch.equal(a, b) for a, b in zip(after_epoch[1], after_epoch[2], strict=True))
    assert len(after_epoch) == 2
