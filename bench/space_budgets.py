"""How a space's ranges follow --max-params: the share of sampled configs over budget, or no network.

    python bench/space_budgets.py --space gap_cnn --budgets 2000 5000 8000 20000 --samples 400

A budget N means fewer than N parameters (``--max-params N-1``), as in ``mnist-search frontier``.
For each budget it draws configs with Optuna's random sampler (what a study's start-up trials do),
counts each one's parameters on PyTorch's meta device (nothing is allocated or trained) and prints
the share over budget, the share that describes no network, and the parameters of those that fit.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter

import optuna
import torch

from spaces import get_space
from spaces.base import InvalidArchitecture


def sample(space_name: str, max_params: int, samples: int, seed: int) -> dict:
    space = get_space(space_name)
    budget = space.budget(max_params=max_params)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    over = invalid = 0
    fitting: list[int] = []
    kinds: Counter[str] = Counter()
    for _ in range(samples):
        trial = study.ask()
        config = space.suggest(trial, budget)
        try:
            with torch.device("meta"):
                params = sum(p.numel() for p in space.build(config).parameters())
        except InvalidArchitecture:
            invalid += 1
            continue
        if params > max_params:
            over += 1
        else:
            fitting.append(params)
            kinds[f"{config.get('conv', '-')} {config.get('kernel', '-')}"] += 1
        study.tell(trial, 0.0)
    return {
        "budget": max_params,
        "samples": samples,
        "over_budget": over / samples,
        "no_network": invalid / samples,
        "fitting_median_params": statistics.median(fitting) if fitting else None,
        "fitting_min_params": min(fitting, default=None),
        "fitting_kinds": dict(kinds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--space", default="gap_cnn")
    parser.add_argument("--budgets", type=int, nargs="+", default=[2000, 5000, 8000, 20000], help="under N parameters")
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cap = get_space(args.space).max_params
    for budget in args.budgets:
        print(json.dumps(sample(args.space, min(budget - 1, cap or budget), args.samples, args.seed)))


if __name__ == "__main__":
    main()
