"""The worker's trial loop: claim a trial, train it, record how it ended; recover what others left.

Every way a trial can end goes through one path (``_outcome``). A signal stops the trial in
training and puts it back in the queue with its params. Anything that is not training (the
artifact upload) is recorded and warned about, never turned into a failed trial; and the same
failure trial after trial stops the search instead of looping.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from search.cpu import configure_process
from search.data import Tensors
from search.interrupts import SearchInterrupted, StopRequest, signal_label
from search.options import SearchOptions
from search.processes import process_alive
from search.progress import Progress
from search.recovery import INTERRUPTED, recover_trials
from search.run import Run
from search.storage import artifact_store, kind_of
from search.train import Diverged, resolve_device
from spaces import Budget, InvalidArchitecture, Space
from spaces.errors import UserError, first_line
from spaces.states import FINISHED

POLL_S = 1.0
SAME_FAILURE_LIMIT = 5  # this many trials in a row failing alike (same type, same place) stop the search
FAILURE_LIMIT = 10  # and this many in a row failing in any ways


class StudyFull(Exception):
    """Other workers finished the study while this trial waited to start."""


class TrialInterrupted(Exception):
    """A signal stopped this trial; Optuna records it as FAIL and the worker re-queues it."""


class Worker:
    """Runs trials in this process until the study holds enough finished ones."""

    def __init__(
        self, options: SearchOptions, space: Space, budget: Budget, study: optuna.Study, data: tuple[Tensors, Tensors]
    ) -> None:
        self.options, self.space, self.budget, self.study = options, space, budget, study
        self.device = resolve_device(options.device)
        configure_process(self.device)  # an entry point: every search, in this process or a --jobs worker, starts here
        if self.device.type == "cpu" and options.jobs == 1 and os.environ.get("MNIST_SEARCH_THREADS"):
            torch.set_num_threads(int(os.environ["MNIST_SEARCH_THREADS"]))
        self.train_set, self.val_set = (part.to(self.device) for part in data)
        self.progress = Progress(
            study, options.trials, quiet=options.quiet, device=str(self.device), max_epochs=budget.max_epochs
        )
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.stop = StopRequest()
        self.heartbeat = kind_of(options.storage_url()) != "journal"  # RDB storages beat; journals do not
        self.artifacts = None if options.artifacts is None else artifact_store(Path(options.artifacts))
        self.artifact_warned = False
        self.failures: list[tuple[str, str]] = []  # (key, reason) of the latest trials, while they keep failing

    def run(self) -> None:
        if self.options.multi_objective and not self.options.quiet:
            print("note: Optuna cannot prune multi-objective studies; every trial runs all its epochs")
        self._warn_if_sqlite_is_shared()
        deadline = None if self.options.timeout is None else time.monotonic() + self.options.timeout
        gc.freeze()  # see _release_memory
        try:
            with self.stop.handling():
                recover_trials(self.study, self.heartbeat, self.space.defaults)  # what an earlier run or worker left
                self._run_until_done(deadline)
        finally:
            gc.unfreeze()  # a Python caller's process collects normally again
            self.progress.close()

    def _run_until_done(self, deadline: float | None) -> None:
        while deadline is None or time.monotonic() < deadline:
            self._stop_if_asked()
            states = [t.state for t in self.study.get_trials(deepcopy=False)]
            done = sum(s in FINISHED for s in states)
            if done >= self.options.trials:
                break
            if done + states.count(TrialState.RUNNING) >= self.options.trials:
                time.sleep(POLL_S)  # the rest are in flight elsewhere; stay in case they fail
                recover_trials(self.study, self.heartbeat, self.space.defaults, worker=self.worker_id)
                continue
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.01)
            self.study.optimize(
                self._objective,
                n_trials=1,
                timeout=remaining,
                catch=(Exception,),
                gc_after_trial=False,
                callbacks=[self._count_unhandled_failure],
            )
            _release_memory(self.device)
            self._stop_if_failing_alike()

    def _stop_if_asked(self) -> None:
        if self.stop.signum is not None:
            requeued = recover_trials(self.study, self.heartbeat, self.space.defaults, worker=self.worker_id)
            raise SearchInterrupted(self.stop.signum, requeued)

    def _stop_if_failing_alike(self) -> None:
        """The circuit breaker: the same failure ``SAME_FAILURE_LIMIT`` times in a row is not bad luck, nor
        are ``FAILURE_LIMIT`` failures in a row of any kind. Failures are alike when they have the same
        type and were raised at the same place: their messages may differ (shapes, addresses)."""
        keys = {key for key, _ in self.failures[-SAME_FAILURE_LIMIT:]}
        if len(self.failures) >= SAME_FAILURE_LIMIT and len(keys) == 1:
            raise UserError(
                f"stopped: the last {SAME_FAILURE_LIMIT} trials all failed with {self.failures[-1][1]!r}; "
                "fix that, then rerun the same command to resume"
            )
        if len(self.failures) >= FAILURE_LIMIT:
            raise UserError(
                f"stopped: the last {FAILURE_LIMIT} trials all failed, the latest with {self.failures[-1][1]!r}; "
                "fix that, then rerun the same command to resume"
            )

    def _count_unhandled_failure(self, _study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """A trial that failed before reaching its handler (a storage error while claiming it) counts too."""
        if trial.state == TrialState.FAIL and "fail_reason" not in trial.user_attrs:
            self.failures = [*self.failures, ("failed before its handler", "a failure before the trial started")]

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
            if self.stop.requested:
                trial.set_user_attr("fail_reason", f"{INTERRUPTED} before training")
                raise TrialInterrupted(f"{INTERRUPTED} before training")
            time.sleep(POLL_S)
            recover_trials(self.study, self.heartbeat, self.space.defaults, worker=self.worker_id)

    def _warn_if_sqlite_is_shared(self) -> None:
        """SQLite is not safe for several writing processes (Optuna's FAQ); say so when we see one."""
        if kind_of(self.options.storage_url()) != "sqlite":
            return
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            host, _, pid = t.user_attrs.get("worker", "").rpartition(":")
            if host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid() and process_alive(int(pid)):
                print(
                    f"warning: process {pid} is also running trials on this SQLite study, and SQLite is not safe "
                    "for several processes; use --jobs N (journal file) or a postgresql:// --storage",
                    file=sys.stderr,
                )
                return

    def _objective(self, trial: optuna.Trial) -> float | Sequence[float]:
        """One trial, every step of it (suggest, build, precision, training, upload) through one handler."""
        trial.set_user_attr("worker", self.worker_id)  # first: a worker dying while it waits is found
        self._claim(trial)
        curve: list[float] = []
        self.train_started: float | None = None
        try:
            value = self._run_trial(trial, curve)
        except BaseException as error:  # noqa: BLE001 - every ending goes through _outcome, which re-raises the rest
            if isinstance(error, KeyboardInterrupt):  # also one raised without our handler (not the main thread)
                self.stop.request(signal.SIGINT)
            state, reason, raised = _outcome(error, self.stop.signum)
            trial.set_user_attr(f"{state.lower()}_reason", reason)
            self._record(trial, curve)
            params = trial.user_attrs.get("params")
            self.progress.trial_done(trial.number, state, curve[-1] if curve else None, params, reason)
            failed = state == "FAIL" and raised is error
            self.failures = [*self.failures, (failure_key(error), reason)] if failed else []
            raise raised from None
        self.failures.clear()
        return value

    def _run_trial(self, trial: optuna.Trial, curve: list[float]) -> float | Sequence[float]:
        trial.set_user_attr("device", str(self.device))
        with warnings.catch_warnings():
            if trial.user_attrs.get("baseline"):  # a tighter budget shrinks ranges past the seed's widths
                warnings.filterwarnings("ignore", message="Fixed parameter .* is out of range")
            config = self.space.suggest(trial, self.budget)
        trial.set_user_attr("config", config)
        train_seed = trial.user_attrs.get("warm_start_seed", self.options.seed + trial.number)
        trial.set_user_attr("train_seed", train_seed)
        try:  # the seed fixes the initial weights: export + retrain reproduce them
            run = Run.build(self.space, config, seed=train_seed, device=self.device, precision=self.options.precision)
        except InvalidArchitecture as error:
            raise optuna.TrialPruned(str(error)) from None
        params = run.params
        trial.set_user_attr("params", params)
        trial.set_user_attr("precision", run.profile.precision)
        if self.budget.max_params is not None:
            # Over-budget trials complete at once as *infeasible* (constraint > 0) instead of being
            # pruned: TPE, GP, CMA-ES and NSGA-II read trial constraints and learn to avoid the
            # region, and best_trial / best_trials skip infeasible trials. No training step runs.
            trial.set_constraint("params", params - self.budget.max_params)
            if params > self.budget.max_params:
                trial.set_user_attr("infeasible", f"{params} parameters > budget {self.budget.max_params}")
                self.progress.trial_done(trial.number, "INFEASIBLE", None, params)
                return (0.0, float(params)) if self.options.multi_objective else 0.0

        def on_epoch(epoch: int, accuracy: float) -> None:
            curve.append(accuracy)
            with self.stop.shielded():  # storage calls finish; a signal raises after them
                self.progress.epoch(trial.number, epoch, config["epochs"], accuracy)
                if not self.options.multi_objective:
                    trial.report(accuracy, epoch)
                    # After the last epoch stopping saves nothing, and the sampler learns more
                    # from a finished value than from a pruned one.
                    if epoch < config["epochs"] and trial.should_prune():
                        raise optuna.TrialPruned(f"pruned at epoch {epoch} with val accuracy {accuracy:.4f}")

        self.progress.trial_started()
        self.train_started = time.perf_counter()
        with self.stop.interruptible():
            result = run.train(self.train_set, self.val_set, on_epoch)
        self._record(trial, curve)
        self.progress.trial_done(trial.number, "COMPLETE", result.accuracy, params)
        if self.options.multi_objective:
            return result.accuracy, float(params)
        return result.accuracy

    def _record(self, trial: optuna.Trial, curve: list[float]) -> None:
        trial.set_user_attr("epochs_run", len(curve))
        seconds = 0.0 if self.train_started is None else time.perf_counter() - self.train_started
        trial.set_user_attr("seconds", round(seconds, 3))
        trial.set_user_attr("val_accuracy_per_epoch", curve)
        self._upload_curve(trial, curve)

    def _upload_curve(self, trial: optuna.Trial, curve: list[float]) -> None:
        """The learning curve as a CSV artifact for the dashboard. Only a convenience: a failed upload is
        recorded on the trial and warned about once, and the trial keeps its result."""
        if self.artifacts is None or not curve:
            return
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"trial{trial.number}-learning-curve.csv"
                path.write_text("epoch,val_accuracy\n" + "".join(f"{e},{a}\n" for e, a in enumerate(curve, start=1)))
                optuna.artifacts.upload_artifact(
                    artifact_store=self.artifacts, file_path=str(path), study_or_trial=trial
                )
        except Exception as error:  # noqa: BLE001 - a full or read-only artifact folder, whatever the kind
            reason = f"{type(error).__name__}: {first_line(error)}"
            trial.set_user_attr("artifact_error", reason)
            if not self.artifact_warned:
                self.artifact_warned = True
                print(
                    f"warning: cannot upload learning curves to --artifacts {self.options.artifacts} ({reason}); "
                    "trials go on without them",
                    file=sys.stderr,
                )


def _outcome(error: BaseException, signum: int | None) -> tuple[str, str, BaseException]:
    """How a trial that raised ends: its state, the reason recorded, and what to raise to Optuna."""
    if isinstance(error, optuna.TrialPruned):
        return "PRUNED", str(error), error
    if isinstance(error, Diverged):
        return "PRUNED", str(error), optuna.TrialPruned(str(error))
    if isinstance(error, KeyboardInterrupt):
        reason = f"{INTERRUPTED} ({signal_label(signum or signal.SIGINT)})"
        return "FAIL", reason, TrialInterrupted(reason)
    if isinstance(error, Exception):
        return "FAIL", f"{type(error).__name__}: {first_line(error)}", error
    raise error  # SystemExit and the like: not a trial's outcome


def failure_key(error: BaseException) -> str:
    """What makes two failures alike: the exception's type and the line that raised it."""
    frames = traceback.extract_tb(error.__traceback__)
    place = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    return f"{type(error).__qualname__} at {place}"


def _release_memory(device: torch.device) -> None:
    """Free the finished trial's model, optimizer and CUDA graph, which a pruning exception's
    traceback can hold in a reference cycle, then freeze what is left: whatever survives a trial
    (modules imported on first use, the study's trial cache) is not rescanned after every trial.
    Between trials, not inside one: there the exception is still in flight, holding the model.
    """
    gc.collect()
    gc.freeze()
    if device.type == "cuda":
        torch.cuda.empty_cache()
