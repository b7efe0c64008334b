"""The Optuna driver: create or resume a study, enqueue the seed baseline, run trials until the
study holds ``trials`` finished ones (counted across reruns and workers)."""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from search.algorithms import PRUNERS, SAMPLERS, make_pruner, make_sampler
from search.data import Split, Tensors, load_mnist, resolve_data_dir, split_train_val
from search.errors import UserError
from search.mps import mps_daemon
from search.progress import LINES_ENV, Progress
from search.storage import (
    ARTIFACTS_DIR,
    Heartbeat,
    artifact_store,
    check_parallel_safe,
    default_storage,
    is_journal,
    is_sqlite,
    open_storage,
    redact,
)  # fmt: skip
from search.train import Diverged, TrainSettings, count_params, resolve_device, train
from spaces import Budget, InvalidArchitecture, Space, get_space

TARGET = 0.994
OBJECTIVES = ("accuracy", "params")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
POLL_S = 1.0


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
        if self.trials < 1:
            raise UserError(f"--trials must be at least 1, got {self.trials}")
        if self.jobs < 1:
            raise UserError(f"--jobs must be at least 1, got {self.jobs}")
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
        if self.timeout is not None and self.timeout <= 0:
            raise UserError(f"--timeout must be positive, got {self.timeout}")
        space = get_space(self.space)
        budget = space.budget(self.max_params, self.max_epochs)
        if self.pruner == "median" and (self.prune_from_epoch or 0) > budget.max_epochs:
            raise UserError(
                f"--prune-from-epoch {self.prune_from_epoch} is past the epoch cap ({budget.max_epochs}), so no "
                "trial could be pruned; lower it, or pass --pruner none"
            )
        return space, budget


def run_search(options: SearchOptions) -> optuna.Study:
    """Run (or resume) the study that ``options`` describe; the Python API behind the CLI."""
    space, budget = options.validate()
    url = options.storage_url()
    check_parallel_safe(url, options.jobs)
    data = _load_data(options)  # before touching storage: bad data must not leave an empty study
    study = open_study(options, space, budget, url)
    if options.jobs > 1:
        _launch_workers(options, url, study.study_name)
    else:
        _Worker(options, space, budget, study, data).run()
    return study


def open_study(options: SearchOptions, space: Space, budget: Budget, url: str) -> optuna.Study:
    """Create the study, or load it and check it was made for the same space, split and budget.

    Creation is atomic in the storage, so of many workers starting together exactly one creates
    the study, records its settings and enqueues the seed baseline; the others wait for them.
    """
    storage = open_storage(url, options.heartbeat)
    name = options.study_name or options.default_study_name()
    directions = ["maximize", "minimize"] if options.multi_objective else ["maximize"]
    expected = {
        "space": space.name,
        **Split(options.val_size, 0, options.train_subset).as_attrs(),
        "max_params": budget.max_params,
        "max_epochs": budget.max_epochs,
        "objectives": list(options.objectives),
    }
    # Each local worker gets its own seed, or all of them would propose the same configs.
    sampler = make_sampler(options.sampler, options.seed + options.worker_index)
    # Optuna cannot prune multi-objective studies.
    pruner = make_pruner(
        "none" if options.multi_objective else options.pruner, budget.max_epochs, options.prune_from_epoch
    )
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, directions=directions, sampler=sampler, pruner=pruner
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    else:
        for key, value in expected.items():
            study.set_user_attr(key, value)
        study.set_user_attr("target", TARGET)
        study.set_metric_names(["val_accuracy", "params"][: len(directions)])  # names in the dashboard
        for baseline in space.baselines:
            study.enqueue_trial(_clip_epochs(baseline, budget), user_attrs={"baseline": True})
        return study
    recorded = _wait_for_settings(study)
    if [d.name.lower() for d in study.directions] != directions:
        raise UserError(
            f"study {name!r} in {redact(url)} optimises {len(study.directions)} objective(s), not "
            f"{len(directions)}; use the original --objectives or another --study-name"
        )
    for key, value in expected.items():
        if recorded.get(key) != value:
            raise UserError(
                f"study {name!r} was created with {key}={recorded.get(key)!r}, not {value!r}; "
                "use the original flags or another --study-name"
            )
    return study


def _wait_for_settings(study: optuna.Study, patience_s: float = 30.0) -> dict:
    """The creator records the settings right after creating the study; give it a moment."""
    deadline = time.monotonic() + patience_s
    while "objectives" not in (recorded := study.user_attrs) and time.monotonic() < deadline:
        time.sleep(0.2)
    if "space" not in recorded:
        raise UserError(f"study {study.study_name!r} was not made by mnist-search; use another --study-name")
    return recorded


def _clip_epochs(config: dict, budget: Budget) -> dict:
    return config | {"epochs": min(config["epochs"], budget.max_epochs)}


def _load_data(options: SearchOptions) -> tuple[Tensors, Tensors]:
    mnist = load_mnist(resolve_data_dir(options.data_dir), download=options.download)
    return split_train_val(mnist.train, Split(options.val_size, 0, options.train_subset))


class StudyFull(Exception):
    """Other workers finished the study while this trial waited to start."""


class _Worker:
    """Runs trials in this process until the study holds enough finished ones."""

    def __init__(
        self, options: SearchOptions, space: Space, budget: Budget, study: optuna.Study, data: tuple[Tensors, Tensors]
    ) -> None:
        self.options, self.space, self.budget, self.study = options, space, budget, study
        self.device = resolve_device(options.device)
        if self.device.type == "cpu" and options.jobs == 1 and os.environ.get("MNIST_SEARCH_THREADS"):
            torch.set_num_threads(int(os.environ["MNIST_SEARCH_THREADS"]))
        self.train_set, self.val_set = (part.to(self.device) for part in data)
        self.progress = Progress(study, options.trials, quiet=options.quiet)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.interrupted: threading.Event | None = None  # set by Ctrl-C while run() is active
        self.heartbeat = not is_journal(options.storage_url())  # RDB storages beat; journals do not
        self.artifacts = None if options.artifacts is None else artifact_store(Path(options.artifacts))

    def run(self) -> None:
        if self.options.multi_objective and not self.options.quiet:
            print("note: Optuna cannot prune multi-objective studies; every trial runs all its epochs")
        self._warn_if_sqlite_is_shared()
        deadline = None if self.options.timeout is None else time.monotonic() + self.options.timeout
        self._fail_abandoned_trials()  # a restarted worker re-queues what its predecessor left
        gc.freeze()  # see _release_memory
        try:
            with _remember_ctrl_c() as interrupted:
                self.interrupted = interrupted
                self._run_until_done(deadline)
        finally:
            gc.unfreeze()  # a Python caller's process collects normally again
        self.progress.close()

    def _run_until_done(self, deadline: float | None) -> None:
        while deadline is None or time.monotonic() < deadline:
            self._raise_if_interrupted()
            states = [t.state for t in self.study.get_trials(deepcopy=False)]
            done = sum(s in FINISHED for s in states)
            if done >= self.options.trials:
                break
            if done + states.count(TrialState.RUNNING) >= self.options.trials:
                time.sleep(POLL_S)  # the rest are in flight elsewhere; stay in case they fail
                self._fail_abandoned_trials()
                continue
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.01)
            self.study.optimize(
                self._objective, n_trials=1, timeout=remaining, catch=(Exception,), gc_after_trial=False
            )
            _release_memory(self.device)

    def _raise_if_interrupted(self) -> None:
        # A KeyboardInterrupt raised inside a finalizer is swallowed by Python; the flag is not.
        if self.interrupted is not None and self.interrupted.is_set():
            raise KeyboardInterrupt

    def _claim(self, trial: optuna.Trial) -> None:
        """Start only while finished trials plus earlier-numbered running ones leave room."""
        while True:
            trials = self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
            done = sum(t.state in FINISHED for t in trials)
            ahead = sum(t.state == TrialState.RUNNING and t.number < trial.number for t in trials)
            if done >= self.options.trials:
                raise StudyFull(f"study already holds {done} finished trials")
            if done + ahead < self.options.trials:
                return
            time.sleep(POLL_S)
            self._fail_abandoned_trials()

    def _warn_if_sqlite_is_shared(self) -> None:
        """SQLite is not safe for several writing processes (Optuna's FAQ); say so when we see one."""
        if not is_sqlite(self.options.storage_url()):
            return
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            host, _, pid = t.user_attrs.get("worker", "").rpartition(":")
            if host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid() and _process_alive(int(pid)):
                print(
                    f"warning: process {pid} is also running trials on this SQLite study, and SQLite is not safe "
                    "for several processes; use --jobs N (journal file) or a postgresql:// --storage",
                    file=sys.stderr,
                )
                return

    def _fail_abandoned_trials(self) -> None:
        """Fail and re-queue RUNNING trials whose worker is gone.

        RDB storages know through heartbeats. The journal file has none, so there a trial counts
        as abandoned when the process recorded in its ``worker`` attr (on this host) has exited.
        """
        if self.heartbeat:
            optuna.storages.fail_stale_trials(self.study)
            return
        host = socket.gethostname()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker_host, _, pid = t.user_attrs.get("worker", "").rpartition(":")
            if worker_host != host or not pid.isdigit() or _process_alive(int(pid)):
                continue
            storage = self.study._storage
            try:
                storage.set_trial_user_attr(t._trial_id, "fail_reason", f"worker {pid} exited mid-trial")
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker got there first
            self.study.enqueue_trial(t.params, user_attrs={"retry_of": t.number, **_carried(t.user_attrs)})

    def _objective(self, trial: optuna.Trial) -> float | Sequence[float]:
        trial.set_user_attr("worker", self.worker_id)  # first: a worker dying while it waits is found
        self._claim(trial)
        trial.set_user_attr("device", str(self.device))
        with warnings.catch_warnings():
            if trial.user_attrs.get("baseline"):  # a tighter budget shrinks ranges past the seed's widths
                warnings.filterwarnings("ignore", message="Fixed parameter .* is out of range")
            config = self.space.suggest(trial, self.budget)
        trial.set_user_attr("config", config)
        train_seed = self.options.seed + trial.number
        trial.set_user_attr("train_seed", train_seed)
        torch.manual_seed(train_seed)  # the initial weights: export + retrain reproduce them
        try:
            model = self.space.build(config)
        except InvalidArchitecture as error:
            trial.set_user_attr("pruned_reason", str(error))
            raise optuna.TrialPruned(str(error)) from None
        params = count_params(model)
        trial.set_user_attr("params", params)
        if self.budget.max_params is not None:
            # Over-budget trials complete at once as *infeasible* (constraint > 0) instead of being
            # pruned: TPE, GP, CMA-ES and NSGA-II read trial constraints and learn to avoid the
            # region, and best_trial / best_trials skip infeasible trials. No training step runs.
            trial.set_constraint("params", params - self.budget.max_params)
            if params > self.budget.max_params:
                trial.set_user_attr("infeasible", f"{params} parameters > budget {self.budget.max_params}")
                self.progress.trial_done(trial.number, "INFEASIBLE", None, params)
                return (0.0, float(params)) if self.options.multi_objective else 0.0
        curve: list[float] = []

        def on_epoch(epoch: int, accuracy: float) -> None:
            self._raise_if_interrupted()
            curve.append(accuracy)
            self.progress.epoch(trial.number, epoch, config["epochs"], accuracy)
            if not self.options.multi_objective:
                trial.report(accuracy, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch} with val accuracy {accuracy:.4f}")

        start = time.perf_counter()
        state, reason = "COMPLETE", ""
        try:
            result = train(
                model,
                self.train_set,
                self.val_set,
                TrainSettings.from_config(config),
                device=self.device,
                seed=train_seed,
                on_epoch=on_epoch,
            )
        except optuna.TrialPruned as pruned:
            state, reason = "PRUNED", str(pruned)
            trial.set_user_attr("pruned_reason", reason)
            raise
        except Diverged as error:
            state, reason = "PRUNED", str(error)
            trial.set_user_attr("pruned_reason", reason)
            raise optuna.TrialPruned(reason) from None
        except KeyboardInterrupt:
            state, reason = "FAIL", "interrupted (Ctrl-C)"
            trial.set_user_attr("fail_reason", reason)
            raise
        except Exception as error:
            first_line = str(error).splitlines()[0] if str(error) else ""
            state, reason = "FAIL", f"{type(error).__name__}: {first_line}"
            trial.set_user_attr("fail_reason", reason)
            raise
        finally:
            trial.set_user_attr("epochs_run", len(curve))
            trial.set_user_attr("seconds", round(time.perf_counter() - start, 3))
            trial.set_user_attr("val_accuracy_per_epoch", curve)
            self._upload_curve(trial, curve)
            if state != "COMPLETE":
                self.progress.trial_done(trial.number, state, curve[-1] if curve else None, params, reason)
        self.progress.trial_done(trial.number, state, result.accuracy, params)
        if self.options.multi_objective:
            return result.accuracy, float(params)
        return result.accuracy

    def _upload_curve(self, trial: optuna.Trial, curve: list[float]) -> None:
        """The learning curve as a CSV artifact, so the dashboard shows it with the trial."""
        if self.artifacts is None or not curve:
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"trial{trial.number}-learning-curve.csv"
            path.write_text("epoch,val_accuracy\n" + "".join(f"{e},{a}\n" for e, a in enumerate(curve, start=1)))
            optuna.artifacts.upload_artifact(artifact_store=self.artifacts, file_path=str(path), study_or_trial=trial)


@contextmanager
def _remember_ctrl_c() -> Iterator[threading.Event | None]:
    """Ctrl-C raises KeyboardInterrupt as usual and also sets an event the worker checks between
    epochs and trials. (None where signals cannot be handled: outside the main thread.)"""
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    event = threading.Event()

    def on_sigint(signum: int, frame: object) -> None:
        event.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, previous)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _carried(user_attrs: dict) -> dict:
    """What a retried trial keeps of the original: whether it was the seed baseline."""
    return {"baseline": True} if user_attrs.get("baseline") else {}


def _release_memory(device: torch.device) -> None:
    """Free the finished trial's model, optimizer and CUDA graph, which a pruning exception's
    traceback can hold in a reference cycle, then freeze what is left: whatever survives a trial
    (modules imported on first use, the study's trial cache) is not rescanned after every trial.
    (A full collection of the unfrozen heap cost 0.22 s a trial on the H100 host, 81 ms on the dev CPU.)
    Between trials, not inside one: there the exception is still in flight, holding the model.
    """
    gc.collect()
    gc.freeze()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _launch_workers(options: SearchOptions, url: str, study_name: str) -> None:
    """``--jobs N``: N worker processes of this same CLI on one study (and one GPU, if any)."""
    threads = max(1, (os.cpu_count() or 1) // options.jobs)  # never oversubscribe the cores
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MNIST_SEARCH_THREADS": str(threads), LINES_ENV: "1"}
    worker_options = replace(options, storage=url, study_name=study_name, jobs=1, mps=True)
    use_mps = options.mps and resolve_device(options.device).type == "cuda"
    with mps_daemon() if use_mps else nullcontext({}) as mps_env:
        if use_mps and not options.quiet:
            how = "under CUDA MPS" if mps_env else "without MPS (none found)"
            print(f"{options.jobs} workers share the GPU {how}")
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "search.cli", *worker_argv(replace(worker_options, worker_index=i + 1))],
                env=env | mps_env,
            )
            for i in range(options.jobs)
        ]
        try:
            codes = [p.wait() for p in processes]
        except KeyboardInterrupt:
            for p in processes:
                p.wait()
            raise
    if any(codes):
        raise UserError(f"{sum(c != 0 for c in codes)} of {options.jobs} workers failed; rerun to resume")


def worker_argv(options: SearchOptions) -> list[str]:
    """The CLI arguments that reproduce ``options`` in a worker process."""
    argv = ["search"]
    defaults = SearchOptions(space=options.space)
    for key, value in asdict(options).items():
        if key in ("heartbeat", "download", "mps", "quiet", "objectives") or value == asdict(defaults)[key]:
            continue
        argv += [f"--{key.replace('_', '-')}", "" if value is None else str(value)]  # "": off
    argv += ["--space", options.space, "--objectives", *options.objectives]
    argv += ["--heartbeat", str(options.heartbeat.interval)]
    if not options.download:
        argv.append("--no-download")
    if not options.mps:
        argv.append("--no-mps")
    if options.quiet:
        argv.append("--quiet")
    return argv
