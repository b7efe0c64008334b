"""Each family: the seed baseline reproduces the seed's network, and the space builds what it suggests."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch

from search.train import count_params
from spaces import SPACES, InvalidArchitecture, get_space
from spaces.errors import UserError
from spaces.fcn import hidden_widths
from spaces.training import TRAIN_KEYS

# Parameter counts of the seed documents' networks (seed 004 prints its summary: 14,320).
SEED_PARAMS = {"ffn": [53_962], "fcn": [2_076_749], "cnn": [34_826, 93_322], "gap_cnn": [14_320]}


@pytest.mark.parametrize("name", SPACES)
def test_baselines_have_the_seed_parameter_counts(name):
    space = SPACES[name]
    assert [count_params(space.build(b)) for b in space.baselines] == SEED_PARAMS[name]


def test_fcn_widths_step_evenly_from_784_to_10_as_in_seed_001():
    assert hidden_widths(10) == [707, 630, 553, 476, 399, 322, 245, 168, 91]


def test_gap_cnn_baseline_is_seed_004_layer_by_layer():
    model = get_space("gap_cnn").build(get_space("gap_cnn").baselines[0])
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [
        (1, 16, 3),
        (16, 16, 3),
        (16, 16, 3),
        (16, 32, 3),
        (32, 16, 3),
        (16, 10, 1),
    ]
    assert all(c.bias is None for c in convs)
    assert isinstance(model[-1], torch.nn.LogSoftmax)


@pytest.mark.parametrize("name", SPACES)
def test_suggest_reproduces_each_baseline(name):
    """The baseline is a point of the space: enqueued as trial 0, it yields exactly the seed config."""
    space = SPACES[name]
    budget = space.budget()
    for baseline in space.baselines:
        trial = optuna.trial.FixedTrial({k: v for k, v in baseline.items()})
        assert space.suggest(trial, budget) == baseline


@pytest.mark.parametrize("name", SPACES)
def test_suggested_configs_build_and_run_forward(name):
    space = SPACES[name]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    built = 0
    for _ in range(15):
        trial = study.ask()
        config = space.suggest(trial, space.budget())
        space.check_keys(config)
        assert 1 <= config["epochs"] <= space.max_epochs
        assert set(config) - space.model_keys <= TRAIN_KEYS
        try:
            model = space.build(config)
        except InvalidArchitecture:
            continue
        model.eval()
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
        built += 1
        study.tell(trial, 0.0)
    assert built > 5


def test_epoch_cap_limits_suggestions():
    space = get_space("gap_cnn")
    budget = space.budget(max_epochs=3)
    study = optuna.create_study()
    for _ in range(5):
        assert space.suggest(study.ask(), budget)["epochs"] <= 3


@pytest.mark.parametrize(
    ("flags", "message"),
    [({"max_epochs": 21}, "outside 1..20"), ({"max_params": 20_000}, "over the cap"), ({"max_epochs": 0}, "outside")],
)
def test_budget_flags_cannot_loosen_the_family_cap(flags, message):
    with pytest.raises(UserError, match=message):
        get_space("gap_cnn").budget(**flags)


def test_unknown_space_and_unknown_keys_are_user_errors():
    with pytest.raises(UserError, match="unknown space"):
        get_space("resnet")
    with pytest.raises(UserError, match="unknown keys: 'colour'"):
        get_space("ffn").check_keys(get_space("ffn").baselines[0] | {"colour": "red"})


def test_each_family_declares_its_own_target_and_why():
    from spaces import SPACES

    targets = {name: (space.target, space.target_reason) for name, space in SPACES.items()}
    assert targets["gap_cnn"][0] == 0.994 and "seed 004" in targets["gap_cnn"][1]
    assert targets["ffn"][0] == 0.973 and "seed 000" in targets["ffn"][1]
    assert all(0.9 < target < 1 and reason for target, reason in targets.values())


def _sampled(space, budget, n: int, seed: int = 0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(n):
        trial = study.ask()
        yield space.suggest(trial, budget)
        study.tell(trial, 0.0)


@pytest.mark.parametrize("max_params", [2_000, 5_000, 8_000, 19_999])
def test_gap_cnn_configs_of_any_budget_check_at_the_family_budget_and_all_build(max_params):
    """A frontier search's configs at a small budget are retrained, exported and checked later at the
    family budget: each must pass that check, and none may describe no network."""
    space = get_space("gap_cnn")
    budget = space.budget(max_params=max_params)
    over = 0
    for config in _sampled(space, budget, 150):
        params = count_params(space.build(config))  # raises InvalidArchitecture for no network
        if params <= space.max_params:
            assert space.check_config(config) == params  # the family budget: raises if a range left it
        over += params > max_params
    assert over / 150 < (0.6 if max_params < 5_000 else 0.3)  # the ranges follow --max-params


def test_gap_cnn_configs_from_before_the_conv_and_kernel_keys_still_check_and_build():
    """A config exported before ``conv`` and ``kernel`` existed means full 3×3 convs."""
    space = get_space("gap_cnn")
    old = {k: v for k, v in space.baselines[0].items() if k not in ("conv", "kernel")}
    assert space.check_config(old) == space.check_config(space.baselines[0]) == 14_320
    assert count_params(space.build(old)) == 14_320
    with pytest.raises(UserError, match="conv='depthwise'"):
        space.check_config(old | {"conv": "depthwise"})


def test_gap_cnn_separable_blocks_cost_what_they_should():
    space = get_space("gap_cnn")
    seed = space.baselines[0]
    as_separable = {k.replace("_width_", "_sep_width_"): v for k, v in seed.items()} | {"conv": "separable"}
    assert space.check_config(as_separable) < 14_320
    with pytest.raises(UserError, match="missing 'stage1_sep_width_0'"):  # separable widths have their own names
        space.check_config(seed | {"conv": "separable"})
    separable = space.build(as_separable)
    convs = [m for m in separable.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].groups == 1 and convs[0].in_channels == 1  # one input channel: a full conv
    depthwise = [c for c in convs if c.groups > 1]
    assert depthwise and all(c.groups == c.in_channels == c.out_channels for c in depthwise)
    # 16→16→16 then 16→32→16 separable: 3×3·c_in + c_in·c_out per block, the rest as in the seed.
    blocks = [(16, 16), (16, 16), (16, 32), (32, 16)]
    full = sum(9 * a * b for a, b in blocks)
    split = sum(9 * a + a * b for a, b in blocks)
    assert count_params(separable) == 14_320 - full + split
    wide = space.build(seed | {"kernel": 5, "padding": "same"})
    assert wide(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert [m.kernel_size for m in wide.modules() if isinstance(m, torch.nn.Conv2d)][:4] == [(5, 5)] * 3 + [(3, 3)]


WARM_STARTS = sorted((Path(__file__).parent.parent / "examples" / "warm-starts").glob("*.json"))


@pytest.mark.parametrize("path", WARM_STARTS, ids=lambda p: p.name)
def test_the_example_warm_starts_fit_the_budget_they_name_and_build_what_they_list(path):
    """examples/warm-starts/SPACE-Nk-*.json: a config under N thousand parameters, as --warm-start reads it."""
    record = json.loads(path.read_text())
    space = get_space(record["space"])
    budget = int(path.name.split("-")[1].removesuffix("k")) * 1000
    assert space.check_config(record["config"], space.budget(max_params=budget - 1)) == record["params"]
