"""What a run leaves behind when it does not end on its own: trials a signal stopped, and trials
whose worker died. Both go back in the queue with their params and their baseline flag."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import TrialState

from search.processes import process_alive

INTERRUPTED = "interrupted"  # how a stopped trial's fail_reason begins


def recover_trials(
    study: optuna.Study, heartbeat: bool, defaults: Mapping[str, Any], worker: str | None = None
) -> list[int]:
    """Put back in the queue, with their params and baseline flag, the trials that did not end on
    their own: those a signal stopped, and those whose worker is gone. Returns the ones re-queued.

    ``defaults``: the space's values for keys its older versions lacked (``Space.defaults``); a
    trial started before a key existed is retried with the default, as the same model, rather
    than with a value the sampler picks afresh.

    ``worker``: only that worker's interrupted trials (a worker stopping); else all of them.
    RDB storages find dead workers through heartbeats (Optuna re-queues those). The journal file has
    none, so there a trial is abandoned when the process in its ``worker`` attr (on this host) exited.
    """
    if heartbeat:
        optuna.storages.fail_stale_trials(study)
        _default_the_heartbeat_retries(study, defaults)
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    host = socket.gethostname()
    requeued = []
    for t in trials:
        owner = t.user_attrs.get("worker", "")
        if t.state == TrialState.FAIL and t.user_attrs.get("fail_reason", "").startswith(INTERRUPTED):
            if t.number in retried or (worker is not None and owner != worker):
                continue
        elif t.state == TrialState.RUNNING and not heartbeat:
            owner_host, _, pid = owner.rpartition(":")
            if owner_host != host or not pid.isdigit() or process_alive(int(pid)):
                continue
            storage = study._storage  # Optuna has no public way to fail another process's trial
            try:
                storage.set_trial_user_attr(t._trial_id, "fail_reason", f"worker {pid} exited mid-trial")
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker got there first
        else:
            continue
        params = t.system_attrs.get("fixed_params") or t.params  # an enqueued trial may fail before suggesting
        if not params and not t.user_attrs.get("baseline"):
            continue  # nothing was proposed yet: the sampler proposes afresh
        carried = {"baseline": True} if t.user_attrs.get("baseline") else {}
        study.enqueue_trial({**defaults, **params}, user_attrs={"retry_of": t.number, **carried})
        requeued.append(t.number)
    return requeued


def _default_the_heartbeat_retries(study: optuna.Study, defaults: Mapping[str, Any]) -> None:
    """Optuna's heartbeat callback re-queues a dead worker's trial with its params as they were:
    the keys the space added since then are fixed to their defaults."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if "failed_trial" not in t.system_attrs:
            continue
        fixed = t.system_attrs.get("fixed_params") or {}
        missing = {k: v for k, v in defaults.items() if k not in t.params and k not in fixed}
        if missing:  # Optuna takes a name missing from the trial's params from its fixed params
            study._storage.set_trial_system_attr(t._trial_id, "fixed_params", {**missing, **fixed})
