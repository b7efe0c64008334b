"""The Optuna driver: check the options, load the data, create or resume the study (the seed
baseline enqueued as trial 0), then run its trials here or in ``--jobs`` worker processes."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import optuna

from search.algorithms import make_pruner, make_sampler
from search.data import Split, Tensors, load_mnist, resolve_data_dir, split_train_val
from search.interrupts import SearchInterrupted, StopRequest
from search.jobs import check_jobs, run_jobs
from search.options import SearchOptions
from search.redact import redact
from search.storage import check_parallel_safe, kind_of, open_storage, storage_failures
from search.warm_start import enqueue_warm_starts
from search.worker import Worker
from spaces import Budget, Space, source
from spaces.errors import UserError

Direction = Literal["minimize", "maximize"]


def run_search(options: SearchOptions) -> optuna.Study:
    """Run (or resume) the study that ``options`` describe; the Python API behind the CLI.

    Optuna's per-trial INFO lines and ExperimentalWarnings stay quiet (our progress lines replace
    them) unless the caller changed Optuna's verbosity."""
    with _quiet_optuna():
        return _run_search(options)


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    default = optuna.logging.get_verbosity() == optuna.logging.INFO
    if default:  # ERROR: a failed trial's warning carries a traceback; the reason is recorded and printed
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        if default:
            optuna.logging.set_verbosity(optuna.logging.INFO)


def _run_search(options: SearchOptions) -> optuna.Study:
    space, budget = options.validate()
    url = options.storage_url()
    check_parallel_safe(url, options.jobs)
    if options.jobs > 1:
        check_jobs(options.jobs)
    data = _load_data(options)  # before touching storage: bad data must not leave an empty study
    with storage_failures(url):
        with StopRequest().handling() as stop:  # a signal waits until the study and its queue are whole
            study = open_study(options, space, budget, url)
            if options.warm_start and options.worker_index == 0:
                for note in enqueue_warm_starts(study, space, budget, options.warm_start, options.warm_start_top):
                    if not options.quiet:
                        print(note, flush=True)
        if stop.signum is not None:
            raise SearchInterrupted(stop.signum, [])
        if options.jobs > 1:
            run_jobs(options, url, study, space.defaults)
        else:
            Worker(options, space, budget, study, data).run()
    return study


def open_study(options: SearchOptions, space: Space, budget: Budget, url: str) -> optuna.Study:
    """Create the study, or load it and check it was made for the same space, split and budget.

    Optuna creates a study in one write and records its settings in later ones, so a run killed in
    between leaves a study without them. Settings are written first and the marker ``created_by``
    last: a study without the marker is finished by whoever opens it next (after giving a creator
    that may still be at work a moment), so an interrupted creation never makes a name unusable.
    Signals wait until creation is over: it is never left half-done by Ctrl-C.
    """
    storage = open_storage(url, options.heartbeat, writable=True)
    name = options.study_name or options.default_study_name()
    directions: list[Literal["minimize", "maximize"]] = (
        ["maximize", "minimize"] if options.multi_objective else ["maximize"]
    )
    expected: dict[str, Any] = {
        "space": options.space,  # what finds the space again: a built-in name or package.module:NAME
        **Split(options.val_size, 0, options.train_subset).as_attrs(),
        "max_params": budget.max_params,
        "max_epochs": budget.max_epochs,
        "objectives": list(options.objectives),
    }
    if options.target:
        expected["target"] = options.target
    # Reseeded below, once the study is known.
    sampler = make_sampler(options.sampler, options.seed, options.startup_trials)
    # Optuna cannot prune multi-objective studies.
    pruner = make_pruner(
        "none" if options.multi_objective else options.pruner,
        budget.max_epochs,
        options.prune_from_epoch,
        options.prune_keep,
    )
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, directions=directions, sampler=sampler, pruner=pruner
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        if CREATED_BY not in study.user_attrs and _creator_may_be_at_work(options, url):
            _wait_for_creator(study)
        if CREATED_BY not in study.user_attrs:
            _refuse_foreign(study, url)
            if not options.quiet:
                print(f"note: study {name!r} was left half-made by an interrupted run; finishing it", flush=True)
            _check_settings(study, expected, directions, url)
            _record_settings(study, space, options, expected, budget)
        else:
            _check_settings(study, expected, directions, url)
    else:
        _record_settings(study, space, options, expected, budget)
    study.sampler = make_sampler(options.sampler, sampler_seed(options, study), options.startup_trials)
    return study


CREATED_BY = "created_by"  # written last: a study without it was not finished
CREATOR_PATIENCE_S = 10.0


def _record_settings(study: optuna.Study, space: Space, options: SearchOptions, expected: dict, budget: Budget) -> None:
    """Every setting, then the seed baseline(s), then the marker; a rerun repeats what is missing."""
    recorded = study.user_attrs
    settings = expected | {
        "space_source": source(options.space),
        "target": options.target or space.target,
        "target_reason": "--target" if options.target else space.target_reason,
    }
    for key, value in settings.items():
        if key not in recorded:
            study.set_user_attr(key, value)
    study.set_metric_names(["val_accuracy", "params"][: len(study.directions)])  # names in the dashboard
    if not any(t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False)):
        for baseline in space.baselines:
            study.enqueue_trial(_clip_epochs(baseline, budget), user_attrs={"baseline": True})
    study.set_user_attr(CREATED_BY, "mnist-search")


def _creator_may_be_at_work(options: SearchOptions, url: str) -> bool:
    """Only where another process can be creating the same study right now: a server storage, or a
    --jobs worker (its parent creates the study before starting it, so it should find it whole)."""
    return options.worker_index > 0 or kind_of(url) == "rdb"


def _wait_for_creator(study: optuna.Study) -> None:
    deadline = time.monotonic() + CREATOR_PATIENCE_S
    while CREATED_BY not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(0.2)


def _refuse_foreign(study: optuna.Study, url: str) -> None:
    if "space" not in study.user_attrs and study.get_trials(deepcopy=False):
        raise UserError(
            f"study {study.study_name!r} in {redact(url)} was not made by mnist-search; use another --study-name"
        )


def _check_settings(study: optuna.Study, expected: dict, directions: Sequence[Direction], url: str) -> None:
    """The settings the study recorded (those it has) agree with this run's."""
    name = study.study_name
    recorded = study.user_attrs
    if [d.name.lower() for d in study.directions] != directions:
        raise UserError(
            f"study {name!r} in {redact(url)} optimises {len(study.directions)} objective(s), not "
            f"{len(directions)}; use the original --objectives or another --study-name"
        )
    for key, value in expected.items():
        if key in recorded and recorded[key] != value:
            raise UserError(
                f"study {name!r} was created with {key}={recorded.get(key)!r}, not {value!r}; "
                "use the original flags or another --study-name"
            )


def _clip_epochs(config: dict, budget: Budget) -> dict:
    return config | {"epochs": min(config["epochs"], budget.max_epochs)}


def _load_data(options: SearchOptions) -> tuple[Tensors, Tensors]:
    mnist = load_mnist(resolve_data_dir(options.data_dir), download=options.download)
    return split_train_val(mnist.train, Split(options.val_size, 0, options.train_subset))


def sampler_seed(options: SearchOptions, study: optuna.Study) -> int:
    """The sampler's seed for this run of this worker: it differs between workers and between reruns
    (a rerun seeded alike would propose its random start-up configs again), yet the same seed, worker
    and study contents always give the same one."""
    entropy = [options.seed, options.worker_index, len(study.get_trials(deepcopy=False))]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])
