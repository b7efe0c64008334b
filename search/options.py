"""What one search run is asked to do: ``SearchOptions``, each field with its own flag, and their
checks (``validate``), all made before any data loads or storage opens."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields

from search.algorithms import PEERS_FROM_EPOCH, PRUNE_FROM_EPOCH, PRUNE_KEEP, PRUNERS, SAMPLERS, STARTUP_TRIALS
from search.data import DATA_ENV
from search.flags import MAX_SEED, flag, non_negative_int, positive_float, positive_int
from search.profile import PRECISIONS
from search.storage import ARTIFACTS_DIR, MAX_HEARTBEAT_S, Heartbeat, default_storage
from spaces import SPACES, Budget, Space, get_space, known_names
from spaces.errors import UserError

OBJECTIVES = ("accuracy", "params")
DEVICES = ("auto", "cpu", "cuda")
MAX_STUDY_NAME = 128
MAX_TRIALS = 1_000_000
STUDY_NAME = re.compile(r"[^\x00-\x1f\x7f]+")  # printable: it is shown, logged and slugged into file names


def _default_targets() -> str:
    return ", ".join(f"{name} {space.target * 100:g}%%" for name, space in SPACES.items())


@dataclass(frozen=True)
class SearchOptions:
    """Everything one search run needs. Each field declares its own flag (``flag(...)``), so the CLI's
    parser is built from this class, and ``--jobs`` workers receive the options whole, as JSON."""

    space: str = field(
        metadata=flag(
            "--space",
            required=True,
            help=f"model family: {', '.join(known_names())}, or your own as package.module:NAME (docs/spaces.md)",
        )
    )
    trials: int = field(
        default=100,
        metadata=flag("--trials", type=positive_int, help="finished trials wanted in the study, across reruns"),
    )
    storage: str | None = field(
        default=None,
        metadata=flag(
            "--storage",
            help="Optuna storage: an RDB URL or a journal file path "
            "(default: sqlite:///studies/mnist-search.db; studies/mnist-search.journal with --jobs > 1)",
        ),
    )
    study_name: str | None = field(
        default=None, metadata=flag("--study-name", help="study name (default: the space, plus any budget flags)")
    )
    sampler: str = field(default="tpe", metadata=flag("--sampler", choices=SAMPLERS, help="Optuna sampler"))
    startup_trials: int | None = field(
        default=None,
        metadata=flag(
            "--startup-trials",
            type=non_negative_int,
            help="tpe, gp, cmaes: finished trials, the seed baseline's included, drawn at random before the "
            "sampler models the study (default: the sampler's own: "
            + ", ".join(f"{n} for {name}" for name, n in STARTUP_TRIALS.items())
            + ")",
        ),
    )
    pruner: str = field(
        default="peers",
        metadata=flag(
            "--pruner",
            choices=PRUNERS,
            help="peers: judged against the completed trials of the same lr schedule from the first trial, "
            "and held to a floor across schedules; "
            "median: Optuna's, once 8 trials trained that far; or Optuna's hyperband, sha, none",
        ),
    )
    prune_from_epoch: int | None = field(
        default=None,
        metadata=flag(
            "--prune-from-epoch",
            type=positive_int,
            help=f"the first epoch at which a trial may be stopped (default: {PEERS_FROM_EPOCH} for peers, "
            f"{PRUNE_FROM_EPOCH} for median)",
        ),
    )
    prune_keep: float = field(
        default=PRUNE_KEEP,
        metadata=flag(
            "--prune-keep",
            type=float,
            help="peers pruner: the share of its peers a trial must stay among, at each epoch, to go on",
        ),
    )
    seed: int = field(
        default=0, metadata=flag("--seed", type=int, help="sampler seed (0 to 2**32-1); trial k trains with seed + k")
    )
    timeout: float | None = field(
        default=None,
        metadata=flag("--timeout", type=positive_float, help="stop starting trials after this many seconds"),
    )
    max_epochs: int | None = field(
        default=None,
        metadata=flag(
            "--epochs",
            "--max-epochs",
            type=positive_int,
            help="cap on epochs per trial, within the family cap (gap_cnn: 20; others: 30)",
        ),
    )
    max_params: int | None = field(
        default=None,
        metadata=flag(
            "--max-params", type=positive_int, help="parameter budget, within the family cap (gap_cnn: 19,999)"
        ),
    )
    objectives: tuple[str, ...] = field(
        default=("accuracy",),
        metadata=flag(
            "--objectives",
            nargs="+",
            choices=OBJECTIVES,
            help="'accuracy', or 'accuracy params' for the Pareto front (no pruning)",
            to_option=tuple,
            to_flag=list,
        ),
    )
    data_dir: str | None = field(
        default=None, metadata=flag("--data-dir", help=f"folder holding MNIST/raw/ (default: ${DATA_ENV}, else ./data)")
    )
    download: bool = field(
        default=True, metadata=flag("--no-download", action="store_false", help="never try to download MNIST")
    )
    device: str = field(default="auto", metadata=flag("--device", choices=DEVICES, help="training device"))
    precision: str = field(
        default="auto",
        metadata=flag(
            "--precision",
            choices=PRECISIONS,
            help="auto: bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16, AMX), else fp32",
        ),
    )
    target: float | None = field(
        default=None,
        metadata=flag(
            "--target",
            type=float,
            help=f"test accuracy the study must beat, as a fraction (default: the space's own: {_default_targets()})",
        ),
    )
    warm_start: tuple[str, ...] = field(
        default=(),
        metadata=flag(
            "--warm-start",
            nargs="+",
            metavar="SOURCE",
            help="start from known configs: STORAGE#STUDY (its best --warm-start-top), exported .json files, or "
            "zoo (the shipped models of this space); each is checked against this study's space and budget",
            to_option=tuple,
        ),
    )
    warm_start_top: int = field(
        default=5, metadata=flag("--warm-start-top", type=positive_int, help="configs taken from each study source")
    )
    train_subset: int | None = field(
        default=None,
        metadata=flag("--train-subset", type=positive_int, help="train on only this many images (quick runs, tests)"),
    )
    val_size: int = field(
        default=10_000,
        metadata=flag("--val-size", type=positive_int, help="validation images carved from the 60k training set"),
    )
    jobs: int = field(
        default=1, metadata=flag("--jobs", type=positive_int, help="worker processes on this machine (and GPU)")
    )
    mps: bool = field(
        default=True,
        metadata=flag("--no-mps", action="store_false", help="--jobs on a GPU: do not start CUDA MPS for the workers"),
    )
    worker_index: int = 0  # set by the --jobs parent for each worker; no flag
    heartbeat: Heartbeat = field(
        default_factory=Heartbeat,
        metadata=flag(
            "--heartbeat",
            type=positive_int,
            help="seconds between heartbeats of a running trial (RDB storages); stale after 3 missed",
            to_option=lambda interval: Heartbeat(interval, 3 * interval),
            to_flag=lambda heartbeat: heartbeat.interval,
        ),
    )
    artifacts: str | None = field(
        default=str(ARTIFACTS_DIR),
        metadata=flag(
            "--artifacts",
            help="artifact folder for per-trial learning curves ('' for none)",
            to_option=lambda folder: folder or None,
        ),
    )
    quiet: bool = field(
        default=False, metadata=flag("--quiet", action="store_true", help="no progress output; only the final table")
    )

    def to_json(self) -> str:
        """Every field, exactly: what a --jobs worker receives."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SearchOptions:
        values = json.loads(text)
        known = {f.name for f in fields(cls)}
        if not isinstance(values, dict) or set(values) - known:
            raise UserError("the worker's options are not those of this mnist-search; reinstall it")
        values["heartbeat"] = Heartbeat(**values["heartbeat"])
        for name in ("objectives", "warm_start"):
            values[name] = tuple(values[name])
        return cls(**values)

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
        if self.startup_trials is not None and self.sampler == "random":
            raise UserError("--startup-trials does nothing under the random sampler; drop it, or pick tpe, gp or cmaes")
        if self.startup_trials is not None and not 0 <= self.startup_trials <= MAX_TRIALS:
            raise UserError(f"--startup-trials must be between 0 and {MAX_TRIALS:,}, got {self.startup_trials}")
        if self.pruner not in PRUNERS:
            raise UserError(f"unknown pruner {self.pruner!r}; choose one of: {', '.join(PRUNERS)}")
        if not 0 < self.prune_keep <= 1:  # NaN fails too
            raise UserError(f"--prune-keep must be above 0 and at most 1, got {self.prune_keep}")
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
        # No trial is pruned after its last epoch, so judging from the cap on prunes nothing.
        if self.pruner in ("median", "peers") and (self.prune_from_epoch or 0) >= budget.max_epochs:
            raise UserError(
                f"--prune-from-epoch {self.prune_from_epoch} is not before the epoch cap ({budget.max_epochs}), so "
                "no trial could be pruned; lower it, or pass --pruner none"
            )
        return space, budget
