"""What one search run is asked to do: ``SearchOptions``, mapped one to one onto the CLI flags, and
their checks, all made before any data loads or storage opens."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from search.algorithms import PRUNERS, SAMPLERS
from search.storage import ARTIFACTS_DIR, MAX_HEARTBEAT_S, Heartbeat, default_storage
from search.train import PRECISIONS
from spaces import Budget, Space, get_space
from spaces.errors import UserError

OBJECTIVES = ("accuracy", "params")
MAX_SEED = 2**32 - 1  # numpy's samplers take 32-bit seeds
MAX_STUDY_NAME = 128
MAX_TRIALS = 1_000_000
STUDY_NAME = re.compile(r"[^\x00-\x1f\x7f]+")  # printable: it is shown, logged and slugged into file names


@dataclass(frozen=True)
class SearchOptions:
    """Everything one search run needs; the CLI flags map onto these one to one."""

    space: str
    trials: int = 100
    storage: str | None = None
    study_name: str | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    prune_from_epoch: int | None = None  # the median pruner's first judging epoch (None: its default)
    seed: int = 0
    timeout: float | None = None
    max_epochs: int | None = None
    max_params: int | None = None
    objectives: tuple[str, ...] = ("accuracy",)
    data_dir: str | None = None
    download: bool = True
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 on CUDA and on CPUs with native bf16, else fp32
    target: float | None = None  # test accuracy to beat; None: the space's own
    warm_start: tuple[str, ...] = ()  # STORAGE#STUDY or exported .json files: their configs go first
    warm_start_top: int = 5  # from each study source, its best this many
    train_subset: int | None = None
    val_size: int = 10_000
    jobs: int = 1
    mps: bool = True  # --jobs on a GPU: run the workers under CUDA MPS when the driver has it
    worker_index: int = 0
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    artifacts: str | None = str(ARTIFACTS_DIR)  # learning curves for the dashboard; None: keep none
    quiet: bool = False

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def storage_url(self) -> str:
        return self.storage or default_storage(self.jobs)

    def default_study_name(self) -> str:
        """The space name, with any budget or subset flags, so different budgets never mix."""
        parts = [self.space]
        if self.max_params is not None:
            parts.append(f"p{self.max_params}")
        if self.max_epochs is not None:
            parts.append(f"e{self.max_epochs}")
        if self.train_subset is not None:
            parts.append(f"n{self.train_subset}")
        if self.multi_objective:
            parts.append("pareto")
        return "-".join(parts)

    def validate(self) -> tuple[Space, Budget]:
        if not 1 <= self.trials <= MAX_TRIALS:
            raise UserError(f"--trials must be between 1 and {MAX_TRIALS:,}, got {self.trials}")
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}")
        if self.target is not None and not 0 < self.target < 1:
            raise UserError(f"--target is a fraction of 1 (0.994 for 99.4%), got {self.target}")
        if self.warm_start_top < 1:
            raise UserError(f"--warm-start-top must be at least 1, got {self.warm_start_top}")
        if self.jobs < 1:
            raise UserError(f"--jobs must be at least 1, got {self.jobs}")
        if not 0 <= self.seed <= MAX_SEED:
            raise UserError(f"--seed must be between 0 and {MAX_SEED} (2**32 - 1), got {self.seed}")
        if not 1 <= self.heartbeat.interval <= MAX_HEARTBEAT_S:
            raise UserError(
                f"--heartbeat must be between 1 and {MAX_HEARTBEAT_S} seconds, got {self.heartbeat.interval}"
            )
        name = self.study_name
        if name is not None and (len(name) > MAX_STUDY_NAME or not STUDY_NAME.fullmatch(name)):
            raise UserError(
                f"--study-name must be 1 to {MAX_STUDY_NAME} printable characters, got {len(name)} characters"
            )
        if self.sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {self.sampler!r}; choose one of: {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise UserError(f"unknown pruner {self.pruner!r}; choose one of: {', '.join(PRUNERS)}")
        if self.prune_from_epoch is not None and self.prune_from_epoch < 1:
            raise UserError(f"--prune-from-epoch must be at least 1, got {self.prune_from_epoch}")
        if tuple(self.objectives) not in (("accuracy",), ("accuracy", "params")):
            raise UserError("--objectives must be 'accuracy' or 'accuracy params'")
        if self.multi_objective and self.sampler == "cmaes":
            raise UserError("the cmaes sampler cannot search several objectives; use tpe, random or gp")
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise UserError(f"--timeout must be a positive number of seconds, got {self.timeout}")
        space = get_space(self.space)
        budget = space.budget(self.max_params, self.max_epochs)
        if self.pruner == "median" and (self.prune_from_epoch or 0) > budget.max_epochs:
            raise UserError(
                f"--prune-from-epoch {self.prune_from_epoch} is past the epoch cap ({budget.max_epochs}), so no "
                "trial could be pruned; lower it, or pass --pruner none"
            )
        return space, budget
