"""Runs left alone: bad input ends in one line and exit 2; faults lose nothing, loop nowhere, write
nowhere outside their folder and print no secret. Full and read-only file systems are real tmpfs
mounts (skipped where this machine refuses to mount)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import search.files
import search.run
from search import SearchOptions, UserError, run_search
from search.cli import main
from search.files import inside, write_text
from search.jobs import STOP_GRACE_S
from search.journal import repair_journal
from search.processes import process_alive
from search.redact import redact
from search.storage import open_storage
from spaces import get_space
from tests.conftest import DATA_DIR, small_search

FFN = get_space("ffn").baselines[0]


def _mount_tmpfs(path: Path, size: str, read_only: bool = False) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.decode().strip() or 'not root'})")
    if read_only:
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
    return path


@pytest.fixture
def read_only_dir(tmp_path):
    path = _mount_tmpfs(tmp_path / "ro", "1m", read_only=True)
    yield path
    subprocess.run(["umount", "-l", str(path)])


@pytest.fixture
def small_disk(tmp_path):
    path = _mount_tmpfs(tmp_path / "small", "2m")
    yield path
    subprocess.run(["umount", "-l", str(path)])


def _fill(disk: Path, leave_bytes: int) -> Path:
    """Fill ``disk`` so that about ``leave_bytes`` stay free; delete the returned file to free it."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    filler.write_bytes(b"\0" * max(free - leave_bytes, 0))
    return filler


def _one_line_exit_2(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    return captured.err


def _exported(tmp_path: Path, **edits) -> Path:
    config = FFN | edits
    record = {"format": 1, "space": "ffn", "study": "ffn", "trial": 0, "config": config, "epochs": config["epochs"]}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(record))
    return path


# Each: argv (run in `tmp_path`), and a part of the one-line message.
BAD_SEARCH = {
    "negative seed": (["--seed", "-1"], "--seed must be between 0 and"),
    "seed past 2**32-1": (["--seed", str(2**32)], "--seed must be between 0 and"),
    "zero heartbeat": (["--heartbeat", "0"], "must be at least 1"),
    "huge heartbeat": (["--heartbeat", "99999999999"], "--heartbeat must be between 1 and 3600"),
    "300-character study name": (["--study-name", "s" * 300], "--study-name must be 1 to 128"),
    "study name with a newline": (["--study-name", "a\nb"], "printable characters"),
    "a million trials and one": (["--trials", "1000001"], "--trials must be between 1 and"),
    "trials a fraction": (["--trials", "2.5"], "not a whole number"),
    "thousand jobs": (["--jobs", "1000"], "more than this machine can hold"),
    "zero jobs": (["--jobs", "0"], "must be at least 1"),
    "negative timeout": (["--timeout", "-5"], "must be a positive, finite number"),
    "zero epochs": (["--epochs", "0"], "must be at least 1"),
    "zero max params": (["--max-params", "0"], "must be at least 1"),
    "zero val size": (["--val-size", "0"], "must be at least 1"),
    "val size of the whole training set": (["--val-size", "60000"], "--val-size must be between 1 and"),
    "train subset past the split": (["--train-subset", "59000"], "--train-subset must be between 1 and"),
    "unknown sampler": (["--sampler", "grid"], "invalid choice: 'grid'"),
    "unknown pruner": (["--pruner", "patient"], "invalid choice: 'patient'"),
    "negative startup trials": (["--startup-trials", "-1"], "must be 0 or more"),
    "startup trials past the trial cap": (["--startup-trials", "1000001"], "--startup-trials must be between 0 and"),
    "startup trials for the random sampler": (["--sampler", "random", "--startup-trials", "3"], "random sampler"),
    "unknown objective": (["--objectives", "speed"], "invalid choice: 'speed'"),
    "cmaes for two objectives": (["--objectives", "accuracy", "params", "--sampler", "cmaes"], "cmaes"),
    "unknown flag": (["--trails", "5"], "unrecognized arguments: --trails"),
    "unknown device": (["--device", "tpu"], "invalid choice: 'tpu'"),
    "data dir is a file": (["--data-dir", "afile"], "afile"),
    "storage scheme unknown": (["--storage", "bogus://x/y"], "cannot open storage"),
    "storage journal is a folder": (["--storage", "afolder"], "is a folder"),
    "sqlite file in a file's place": (["--storage", "sqlite:///afile/s.db"], "cannot create the folder"),
    "sqlite for two processes": (["--jobs", "2", "--storage", "sqlite:///s.db"], "not safe for 2 processes"),
}


@pytest.mark.parametrize("case", BAD_SEARCH)
def test_bad_search_input_is_one_line_and_exit_2(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "afolder").mkdir()
    args, message = BAD_SEARCH[case]
    err = _one_line_exit_2(["--space", "ffn", "--no-download", "--data-dir", str(DATA_DIR), *args], capsys)
    assert message in err
    assert {p.name for p in tmp_path.iterdir()} == {"afile", "afolder"}  # nothing created


BAD_CONFIGS = {
    "negative batch size": ({"batch_size": -64}, "batch_size=-64"),
    "zero batch size": ({"batch_size": 0}, "batch_size=0"),
    "ten million wide": ({"width_0": 10_000_000}, "width_0=10000000"),
    "epochs in words": ({"epochs": "ten"}, "epochs='ten'"),
    "lr in words": ({"lr": "fast"}, "lr='fast'"),
    "lr true": ({"lr": True}, "lr=True"),
    "dropout over one": ({"dropout": 1.5}, "dropout=1.5"),
    "batch norm as a number": ({"batch_norm": 1}, "batch_norm=1"),
    "epochs past the cap": ({"epochs": 31}, "epochs=31"),
    "fractional depth": ({"n_hidden": 2.5}, "n_hidden=2.5"),
    "a key this config does not use": ({"momentum": 0.9}, "does not use: momentum"),
    "an optimizer the space lacks": ({"optimizer": "lion"}, "optimizer='lion'"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_retrain_checks_every_config_value_before_loading_anything(case, tmp_path, capsys):
    edits, message = BAD_CONFIGS[case]
    out = tmp_path / "out"
    err = _one_line_exit_2(["retrain", str(_exported(tmp_path, **edits)), "--out", str(out), "--no-download"], capsys)
    assert message in err
    assert not out.exists()


def test_retrain_refuses_files_that_are_not_configs(tmp_path, capsys):
    cases = {"list.json": "[1, 2]", "text.json": "not json", "noconfig.json": '{"space": "ffn"}'}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        _one_line_exit_2(["retrain", str(tmp_path / name), "--no-download"], capsys)
    _one_line_exit_2(["retrain", str(tmp_path / "missing.json"), "--no-download"], capsys)
    record = json.loads(_exported(tmp_path).read_text()) | {"epochs": 3}  # edited the wrong epochs
    (tmp_path / "edited.json").write_text(json.dumps(record))
    assert "differs from config.epochs" in _one_line_exit_2(["retrain", str(tmp_path / "edited.json")], capsys)


def test_bad_output_folders_are_refused_before_training(tmp_path, capsys, read_only_dir):
    config = str(_exported(tmp_path, epochs=1))
    (tmp_path / "afile").write_text("x")
    assert "is a file" in _one_line_exit_2(["retrain", config, "--out", str(tmp_path / "afile")], capsys)
    assert "cannot be written" in _one_line_exit_2(["retrain", config, "--out", str(read_only_dir / "x")], capsys)
    storage = f"sqlite:///{tmp_path}/s.db"
    run_search(small_search(tmp_path, DATA_DIR, trials=1, storage=storage))
    for command in (["export", "--out", str(read_only_dir)], ["report", "--out", str(read_only_dir / "r.html")]):
        assert "cannot be written" in _one_line_exit_2([*command, "--storage", storage], capsys)
    assert "is a folder" in _one_line_exit_2(["report", "--storage", storage, "--out", str(tmp_path)], capsys)


def test_a_full_output_folder_is_refused_before_training(tmp_path, capsys, small_disk):
    _fill(small_disk, 100_000)
    err = _one_line_exit_2(["retrain", str(_exported(tmp_path, epochs=1)), "--out", str(small_disk)], capsys)
    assert "MiB free" in err


def test_a_trial_name_cannot_lead_retrain_outside_its_folder(tmp_path, data_dir):
    from search.export import load_record
    from search.retrain import retrain

    out = tmp_path / "a" / "b" / "out"
    path = _exported(tmp_path, epochs=1)
    record = json.loads(path.read_text()) | {"trial": "0/../../../escaped", "study": "../../up"}
    path.write_text(json.dumps(record))
    before = set(tmp_path.rglob("*"))
    retrain(load_record(path), [0], data_dir=str(data_dir), download=False, device="cpu", out_dir=out)
    written = set(tmp_path.rglob("*")) - before
    assert written and all(out in p.parents or p == out or p in out.parents for p in written), written
    assert len([p for p in written if p.parent == out]) == 5  # checkpoint, metrics, report, plot, model card
    assert not list(out.glob(".*"))  # no temporary file left


def test_long_study_names_become_short_file_names(tmp_path):
    path = inside(tmp_path, "s" * 300, "trial1", suffix=".json")
    assert len(path.name) < 100 and path.parent == tmp_path
    assert inside(tmp_path, "s" * 300, "trial1") != inside(tmp_path, "s" * 299 + "t", "trial1")
    with pytest.raises(UserError, match="outside"):
        (tmp_path / "link").symlink_to("/etc")
        inside(tmp_path, "link")


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_text(tmp_path / "metrics.json", "old")

    def half_then_fail(file):
        file.write(b"new and half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        search.files.write_atomic(target, half_then_fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


SECRET_URLS = [
    "postgresql+psycopg2://user:s3cret@127.0.0.1:1/db",
    "postgresql+psycopg2://user:s3c@ret@127.0.0.1:1/db",  # an unencoded @ in the password
    "postgresql+psycopg2://user:s3c%40ret@127.0.0.1:1/db",
    "postgresql+psycopg2://user@127.0.0.1:1/db?password=s3cret",
    "postgresql+psycopg2://127.0.0.1:1/db?user=u&sslpassword=s3cret",
]


@pytest.mark.parametrize("url", SECRET_URLS)
def test_no_secret_is_printed_in_any_url_form(url, tmp_path, capsys):
    err = _one_line_exit_2(["--space", "ffn", "--storage", url, "--data-dir", str(DATA_DIR)], capsys)
    assert "cannot open storage postgresql+psycopg2://" in err
    for secret in ("s3cret", "s3c@ret", "s3c%40ret", "ret@127"):
        assert secret not in err and secret not in redact(url)


def test_the_report_and_dashboard_banner_hide_the_password(tmp_path):
    from search.report import write_report

    storage = f"sqlite:///{tmp_path}/s.db"
    study = run_search(small_search(tmp_path, DATA_DIR, trials=1, storage=storage))
    html_path, _ = write_report(study, "postgresql://u:pa@ss@db.example/x?password=qq1", tmp_path / "r.html")
    page = html_path.read_text()
    assert "pa@ss" not in page and "qq1" not in page and "postgresql://***" in page  # two '@': all hidden
    html_path, _ = write_report(study, "postgresql://u:pass@db.example/x?password=qq1", tmp_path / "r.html")
    assert "postgresql://u:***@db.example/x?password=***" in html_path.read_text()


def test_interrupt_during_the_baseline_requeues_it_and_a_rerun_trains_it(tmp_path, monkeypatch):
    """The Python API: a KeyboardInterrupt inside training (what the signal handler raises there)."""
    real_train = search.run.train

    def interrupted_train(*args, **kwargs):
        monkeypatch.setattr(search.run, "train", real_train)  # once
        raise KeyboardInterrupt

    monkeypatch.setattr(search.run, "train", interrupted_train)
    opts = small_search(tmp_path, DATA_DIR, trials=3)
    with pytest.raises(KeyboardInterrupt) as stopped:
        run_search(opts)
    assert stopped.value.requeued == [0]
    assert "trial 0 was re-queued" in stopped.value.message()
    study = run_search(opts)
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states and states.count(TrialState.FAIL) == 1
    [retry] = [t for t in study.trials if t.user_attrs.get("retry_of") == 0]
    assert (
        retry.state == TrialState.COMPLETE and retry.user_attrs["baseline"] and retry.params == study.trials[0].params
    )
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 3


def _study_with_the_seed_config(storage: optuna.storages.BaseStorage | None = None) -> optuna.Study:
    """A gap_cnn study whose trial 0 holds the seed config as today's space suggests it."""
    space = get_space("gap_cnn")
    study = optuna.create_study(storage=storage, direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(dict(space.baselines[0]))
    probe = study.ask()
    space.suggest(probe, space.budget())
    study.tell(probe, 0.5)
    return study


def _retried_as_the_seed_model(study: optuna.Study) -> None:
    """The one trial in the queue is the seed's full 3×3 net again, not a fresh pick of ``conv``
    (about half of the sampler's picks are separable, with widths under other names)."""
    space = get_space("gap_cnn")
    retry = study.ask()
    config = space.suggest(retry, space.budget())
    assert retry.params == study.trials[0].params
    assert sum(p.numel() for p in space.build(config).parameters()) == 14_320


def test_a_trial_interrupted_before_a_key_existed_is_retried_as_the_same_model():
    """gap_cnn's ``conv`` and ``kernel`` came later: a trial an older version left interrupted must
    come back as the full 3×3 net it was."""
    from search.recovery import INTERRUPTED, recover_trials

    space = get_space("gap_cnn")
    study = _study_with_the_seed_config()
    seed = study.trials[0]
    old = {k: v for k, v in seed.params.items() if k not in space.defaults}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.FAIL, params=old, distributions={k: seed.distributions[k] for k in old},
        user_attrs={"fail_reason": f"{INTERRUPTED} by SIGINT"},
    ))  # fmt: skip
    assert recover_trials(study, False, space.defaults) == [1]
    _retried_as_the_seed_model(study)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # ask() here stands in for a worker
def test_a_dead_workers_trial_from_before_a_key_existed_is_retried_as_the_same_model(tmp_path):
    """On SQL storage Optuna's heartbeat re-queues a dead worker's trial with its old params."""
    from search.recovery import recover_trials

    space = get_space("gap_cnn")
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{tmp_path}/s.db", heartbeat_interval=1, grace_period=1,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
    )  # fmt: skip
    study = _study_with_the_seed_config(storage)
    seed = study.trials[0]
    old = {k: v for k, v in seed.params.items() if k not in space.defaults}
    study.enqueue_trial(old)
    dead = study.ask({k: seed.distributions[k] for k in old})  # started, then its worker died
    storage.record_heartbeat(dead._trial_id)
    time.sleep(2.5)
    recover_trials(study, True, space.defaults)
    assert study.trials[1].state == TrialState.FAIL
    _retried_as_the_seed_model(study)


def test_a_rerun_never_proposes_the_configs_the_study_holds(tmp_path):
    opts = small_search(tmp_path, DATA_DIR, trials=4, sampler="random", train_subset=300, val_size=300)
    run_search(opts)
    study = run_search(SearchOptions(**(opts.__dict__ | {"trials": 8})))
    configs = [json.dumps(t.params, sort_keys=True) for t in study.trials]
    assert len(configs) == 8 and len(set(configs)) == 8


def test_failing_artifact_uploads_warn_once_and_keep_every_result(tmp_path, capsys, read_only_dir):
    # A folder that exists but cannot be written: the read-only mount itself.
    study = run_search(small_search(tmp_path, DATA_DIR, trials=4, artifacts=str(read_only_dir)))
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 4 and not study.get_trials(states=(TrialState.FAIL,))
    assert all("artifact_error" in t.user_attrs for t in finished if t.user_attrs.get("epochs_run"))
    assert capsys.readouterr().err.count("cannot upload learning curves") == 1


def test_the_same_failure_again_and_again_stops_the_search(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR")

    monkeypatch.setattr(search.run, "train", broken)
    opts = small_search(tmp_path, DATA_DIR, trials=50, timeout=120)
    with pytest.raises(UserError, match="last 5 trials all failed with 'RuntimeError: cuDNN error"):
        run_search(opts)
    study = optuna.load_study(study_name=opts.default_study_name(), storage=opts.storage_url())
    assert len(study.get_trials(states=(TrialState.FAIL,))) == 5


def test_a_journal_with_a_torn_last_record_opens_with_every_trial(tmp_path):
    journal = tmp_path / "s.journal"
    opts = small_search(tmp_path, DATA_DIR, trials=2, storage=str(journal))
    run_search(opts)
    complete = len(optuna.load_study(study_name="ffn-e1-n1000", storage=open_storage(str(journal))).trials)
    intact = journal.read_bytes()
    # A full disk cut a record, then another worker appended a whole one behind it.
    with journal.open("ab") as file:
        file.write(b'{"op_code":5,"worker_id":"x","trial_id":1,"us')
    run_search(opts)  # the torn record, trailing: repaired on open
    assert list(tmp_path.glob("s.journal.torn-*.bak"))
    journal.write_bytes(intact + b'{"op_code":5,"wor' + intact.splitlines(keepends=True)[-1])
    assert repair_journal(journal) is not None  # glued: the whole record behind the torn one is kept
    study = run_search(SearchOptions(**(opts.__dict__ | {"trials": 3})))
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 3
    assert len(study.trials) >= complete


def _cli(*args: str, cwd: Path) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "search.cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


QUICK = ["--space", "ffn", "--device", "cpu", "--no-download", "--data-dir", str(DATA_DIR), "--quiet"]
SLOW = [*QUICK, "--epochs", "8", "--train-subset", "20000", "--val-size", "2000"]


def _wait_until_training(storage, name: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            trials = optuna.load_study(study_name=name, storage=open_storage(storage)).trials
        except (KeyError, UserError):  # not created yet
            trials = []
        if any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials):
            return
        time.sleep(0.2)
    raise AssertionError("no trial started training")


def _settled(storage: str, name: str) -> optuna.Study:
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    assert not study.get_trials(states=(TrialState.RUNNING,)), "a trial was left RUNNING"
    return study


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_baseline_requeues_it_within_seconds(signum, tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    worker = _cli(*SLOW, "--trials", "3", "--storage", storage, "--study-name", "sig", cwd=tmp_path)
    _wait_until_training(storage, "sig")
    sent = time.monotonic()
    worker.send_signal(signum)
    _out, err = worker.communicate(timeout=60)
    assert time.monotonic() - sent < 15
    assert worker.returncode == 128 + signum, err
    assert "trial 0 was re-queued with its params; run the same command again to resume" in err
    assert "Traceback" not in err
    study = _settled(storage, "sig")
    [waiting] = study.get_trials(states=(TrialState.WAITING,))
    assert waiting.user_attrs == {"retry_of": 0, "baseline": True}


def test_the_jobs_parent_stops_its_workers_on_sigterm_and_a_rerun_continues(tmp_path):
    journal = str(tmp_path / "s.journal")
    parent = _cli(*SLOW, "--trials", "6", "--jobs", "2", "--storage", journal, "--study-name=-dash", cwd=tmp_path)
    _wait_until_training(journal, "-dash")
    sent = time.monotonic()
    parent.send_signal(signal.SIGTERM)
    _out, err = parent.communicate(timeout=60)
    assert time.monotonic() - sent < STOP_GRACE_S + 10
    assert parent.returncode == 128 + signal.SIGTERM, err
    assert "re-queued" in err and "run the same command again to resume" in err and "Traceback" not in err
    study = _settled(journal, "-dash")
    interrupted = [t.number for t in study.trials if t.user_attrs.get("fail_reason", "").startswith("interrupted")]
    assert interrupted and {t.user_attrs.get("retry_of") for t in study.trials} >= set(interrupted)
    completed = {t.number for t in study.get_trials(states=(TrialState.COMPLETE,))}
    rerun = _cli(*SLOW, "--trials", "6", "--jobs", "2", "--storage", journal, "--study-name=-dash", cwd=tmp_path)
    _out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    study = _settled(journal, "-dash")
    assert completed <= {t.number for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 6
    assert any(t.user_attrs.get("baseline") and t.state == TrialState.COMPLETE for t in study.trials)


def test_workers_die_with_a_parent_killed_by_sigkill(tmp_path):
    journal = str(tmp_path / "s.journal")
    parent = _cli(*SLOW, "--trials", "50", "--jobs", "2", "--storage", journal, "--study-name", "orphans", cwd=tmp_path)
    _wait_until_training(journal, "orphans")
    study = optuna.load_study(study_name="orphans", storage=open_storage(journal))
    pids = {int(t.user_attrs["worker"].rpartition(":")[2]) for t in study.trials if "worker" in t.user_attrs}
    parent.kill()
    parent.communicate()
    deadline = time.monotonic() + 30
    while any(process_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in pids if process_alive(pid)], "workers outlived their parent"


def test_a_full_disk_under_a_jobs_journal_loses_nothing_and_a_rerun_continues(tmp_path, small_disk):
    journal = str(small_disk / "s.journal")
    args = [*QUICK, "--epochs", "1", "--train-subset", "300", "--val-size", "300", "--storage", journal]
    first = _cli(*args, "--trials", "3", "--jobs", "2", "--artifacts", "", cwd=tmp_path)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    kept = {t.number for t in optuna.load_study(study_name="ffn-e1-n300", storage=open_storage(journal)).trials
            if t.state == TrialState.COMPLETE}  # fmt: skip
    filler = _fill(small_disk, 3000)
    full = _cli(*args, "--trials", "40", "--jobs", "2", "--artifacts", "", cwd=tmp_path)
    _out, err = full.communicate(timeout=300)
    assert full.returncode == 2, err
    assert "Traceback" not in err and "No space left on device" in err
    filler.unlink()
    again = _cli(*args, "--trials", "8", "--jobs", "2", "--artifacts", "", cwd=tmp_path)
    _out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    study = _settled(journal, "ffn-e1-n300")
    assert kept <= {t.number for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) >= 8


def test_sqlite_on_a_full_disk_stops_in_one_line_and_a_rerun_continues(tmp_path, small_disk):
    storage = f"sqlite:///{small_disk}/s.db"
    args = [*QUICK, "--epochs", "1", "--train-subset", "300", "--val-size", "300", "--storage", storage]
    first = _cli(*args, "--trials", "3", "--artifacts", "", cwd=tmp_path)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    kept = {t.number for t in _settled(storage, "ffn-e1-n300").get_trials(states=(TrialState.COMPLETE,))}
    filler = _fill(small_disk, 0)
    full = _cli(*args, "--trials", "40", "--artifacts", "", cwd=tmp_path)
    _out, err = full.communicate(timeout=300)
    assert full.returncode == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"storage {storage}" in err and "rerun the same command to resume" in err  # at open or mid-run
    filler.unlink()
    again = _cli(*args, "--trials", "8", "--artifacts", "", "--heartbeat", "1", cwd=tmp_path)
    _out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    study = _settled(storage, "ffn-e1-n300")
    assert kept <= {t.number for t in study.get_trials(states=(TrialState.COMPLETE,))}


def test_a_read_only_journal_is_refused_before_any_work(tmp_path):
    disk = _mount_tmpfs(tmp_path / "ro-journal", "2m")
    try:
        journal = str(disk / "s.journal")
        run_search(small_search(tmp_path, DATA_DIR, trials=1, storage=journal))
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        for jobs in ("1", "2"):
            worker = _cli(*QUICK, "--epochs", "1", "--train-subset", "1000", "--val-size", "1000", "--trials", "3",
                          "--jobs", jobs, "--storage", journal, cwd=tmp_path)  # fmt: skip
            _out, err = worker.communicate(timeout=120)
            assert worker.returncode == 2 and "is read-only" in err and len(err.strip().splitlines()) == 1, err
        # Reading it is fine: export and report do not write to the storage.
        exported = _cli("export", "--storage", journal, "--out", str(tmp_path / "out"), cwd=tmp_path)
        assert exported.wait(timeout=120) == 0, exported.stderr.read()
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def test_a_data_dir_one_level_too_deep_is_named_and_left_untouched(tmp_path, capsys):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (DATA_DIR / "MNIST" / "raw").iterdir():
        (raw / f.name).symlink_to(f)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    err = _one_line_exit_2(["--space", "ffn", "--data-dir", str(raw)], capsys)
    assert f"pass --data-dir {tmp_path / 'data'}" in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no MNIST/raw/MNIST/raw


def test_the_report_table_keeps_whole_numbers_whole(tmp_path):
    from search.report import write_report

    study = run_search(small_search(tmp_path, DATA_DIR, trials=2))
    _, csv_path = write_report(study, study.user_attrs["space"], tmp_path / "r.html")
    lines = csv_path.read_text().splitlines()
    assert ".0," not in "".join(lines) and all(len(f.split(".")[-1]) <= 6 for f in lines[1].split(",")[:4])
