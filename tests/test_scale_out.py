"""Many workers and crashes against real storages: a PostgreSQL server started here on loopback,
and the default SQLite file. Workers are real `mnist-search` processes."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from search.storage import open_storage
from spaces.errors import UserError
from spaces.states import FINISHED
from tests.conftest import DATA_DIR, REPO


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """A throw-away PostgreSQL cluster on 127.0.0.1 (as the postgres user when we are root)."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server not installed (.ci/run installs Debian's postgresql)")
    # Not under pytest's tmp dir: that is private to root, and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="mnist-search-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", _free_port()
    subprocess.run(
        [*as_user, bindir / "initdb", "-D", data, "-U", "mnist", "--auth=trust"], check=True, capture_output=True
    )
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=100 -c fsync=off"
    subprocess.run(
        [*as_user, bindir / "pg_ctl", "-D", data, "-l", base / "log", "-o", options, "-w", "start"],
        check=True,
        capture_output=True,
    )
    yield f"postgresql+psycopg2://mnist@127.0.0.1:{port}/postgres"
    subprocess.run([*as_user, bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


def _worker(storage: str, study: str, trials: int, *extra: str) -> subprocess.Popen:
    args = [
        "--space",
        "ffn",
        "--trials",
        str(trials),
        "--storage",
        storage,
        "--study-name",
        study,
        "--epochs",
        "1",
        "--train-subset",
        "300",
        "--val-size",
        "300",
        "--device",
        "cpu",
        "--quiet",
        *extra,
    ]
    env = os.environ | {"MNIST_SEARCH_DATA": str(DATA_DIR), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "search.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _load(storage: str, name: str) -> optuna.Study:
    """Storage URLs and journal file paths alike, as mnist-search opens them."""
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def _check_exact(study: optuna.Study, total: int) -> None:
    trials = study.get_trials(deepcopy=False)
    assert sum(t.state in FINISHED for t in trials) == total
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))


def test_four_workers_share_one_postgres_study_exactly(postgres_url, tmp_path):
    workers = [
        _worker(postgres_url, "four-workers", 100, "--seed", str(i), "--artifacts", str(tmp_path)) for i in range(4)
    ]
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (_out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
        assert "lock" not in err.lower(), err
    study = _load(postgres_url, "four-workers")
    _check_exact(study, 100)
    assert sum(bool(t.user_attrs.get("baseline")) for t in study.trials) == 1
    assert len({t.user_attrs["worker"] for t in study.trials if "worker" in t.user_attrs}) == 4


def _wait_for_running_trial(storage: str, name: str, timeout: float = 120) -> int:
    """The number of a trial that has started training (one epoch reported) and not finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # One snapshot: with two reads, a trial seen RUNNING in the first could finish before the
            # second (seen here: trial 0, just completed, picked as the victim).
            trials = _load(storage, name).get_trials(deepcopy=False)
            finished = sum(t.state in FINISHED for t in trials)
            for t in trials:
                if t.state == TrialState.RUNNING and t.intermediate_values and finished >= 1:
                    return t.number
        except (KeyError, UserError):  # not created yet
            pass
        time.sleep(0.2)
    raise AssertionError("no trial started training")


def _retried_from(trial: optuna.trial.FrozenTrial) -> int | None:
    """RDB storages re-queue through heartbeats; the journal through the dead worker's pid."""
    return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial) or trial.user_attrs.get("retry_of")


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "journal"])
def test_kill_9_mid_trial_then_rerun_resumes_with_nothing_lost(backend, tmp_path, request):
    storage = {
        "sqlite": f"sqlite:///{tmp_path}/kill.db",
        "journal": str(tmp_path / "kill.journal"),
        "postgres": "postgres_url",
    }[backend]
    if backend == "postgres":
        storage = request.getfixturevalue("postgres_url")
    name = f"kill-{backend}"
    # No pruner: a trial pruned between being picked and the kill would not be the victim this test needs.
    slow = ["--epochs", "8", "--train-subset", "20000", "--heartbeat", "1", "--pruner", "none"]
    slow += ["--artifacts", str(tmp_path)]
    worker = _worker(storage, name, 4, *slow)
    victim = _wait_for_running_trial(storage, name)
    completed_before = {t.number for t in _load(storage, name).get_trials(states=(TrialState.COMPLETE,))}
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    time.sleep(4)  # past the grace period of 3 missed 1-second heartbeats
    again = _worker(storage, name, 4, *slow)
    _out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    study = _load(storage, name)
    _check_exact(study, 4)
    assert study.trials[victim].state == TrialState.FAIL
    retries = [t for t in study.trials if _retried_from(t) == victim]
    assert len(retries) == 1 and retries[0].state in FINISHED
    assert completed_before <= {t.number for t in study.get_trials(states=(TrialState.COMPLETE,))}


def test_ctrl_c_marks_the_trial_and_says_how_to_resume(tmp_path):
    storage = f"sqlite:///{tmp_path}/int.db"
    # Far more trials than can finish: the worker must still be running when the signal lands.
    worker = _worker(
        storage, "interrupted", 50, "--epochs", "8", "--train-subset", "20000", "--pruner", "none",
        "--artifacts", str(tmp_path),
    )  # fmt: skip
    _wait_for_running_trial(storage, "interrupted")
    worker.send_signal(signal.SIGINT)
    _out, err = worker.communicate(timeout=60)
    assert worker.returncode == 130, err
    assert "run the same command again to resume" in err
    assert "Traceback" not in err
    study = _load(storage, "interrupted")
    assert not study.get_trials(states=(TrialState.RUNNING,))
    [failed] = study.get_trials(states=(TrialState.FAIL,))
    if failed.intermediate_values:  # interrupted while training (not in the instant between trials)
        assert failed.user_attrs["fail_reason"] == "interrupted (Ctrl-C)"


def test_a_postgres_database_that_is_empty_or_another_programs_is_refused(postgres_url, capsys):
    """Read-only commands find no study in an empty database; a search adds no tables beside another program's."""
    import sqlalchemy

    from search.cli import main

    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for name in ("empty_db", "other_db"):
            connection.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name}"))
            connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    base = postgres_url.rsplit("/", 1)[0]
    other = sqlalchemy.create_engine(f"{base}/other_db")
    with other.begin() as connection:
        connection.execute(sqlalchemy.text("CREATE TABLE users (name TEXT)"))
    assert main(["export", "--storage", f"{base}/empty_db"]) == 2
    assert "holds no Optuna study" in capsys.readouterr().err
    assert main(["--space", "ffn", "--storage", f"{base}/other_db", "--data-dir", str(DATA_DIR)]) == 2
    assert "another program" in capsys.readouterr().err
    assert set(sqlalchemy.inspect(other).get_table_names()) == {"users"}
    other.dispose()
