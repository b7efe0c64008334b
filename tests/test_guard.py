"""Issue 20's defects, one test each: storages told apart by content and opened read-only by read-only
commands, study creation that a rerun finishes, one error path per trial, passwords never printed,
names that never collide, interrupts in one line, files with the umask's mode (CPU, small studies)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import search.driver
import search.export
import search.profile
import search.run
import search.worker
from search import SearchOptions, UserError, run_search
from search.cli import main
from search.files import inside, slug, write_text
from search.journal import repair_journal
from search.storage import locate, open_storage
from spaces import get_space
from tests.conftest import DATA_DIR, run_cli, small_search

FFN = get_space("ffn").baselines[0]


def one_line_exit(argv: list[str], capsys, status: int = 2) -> str:
    assert main(argv) == status
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    return captured.err


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sqlite_study(tmp_path_factory) -> Path:
    """A real SQLite study of two trials, made once; tests copy it."""
    folder = tmp_path_factory.mktemp("sqlite")
    run_search(small_search(folder, DATA_DIR, trials=2, storage=f"sqlite:///{folder}/study.db"))
    connection = sqlite3.connect(folder / "study.db")  # fold the log in, as the end of a command does
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    return folder / "study.db"


def _copy(db: Path, folder: Path, name: str = "study.db") -> Path:
    target = folder / name
    target.write_bytes(db.read_bytes())
    return target


# 1. A plain path to a SQLite file is a SQLite storage; read-only commands change no byte.


@pytest.mark.parametrize("command", ["export", "report"])
def test_a_plain_path_to_a_sqlite_study_is_read_as_sqlite_and_left_unchanged(command, sqlite_study, tmp_path, capsys):
    db = _copy(sqlite_study, tmp_path)
    before = db.read_bytes()
    out = ["--out", str(tmp_path / "out")] if command == "export" else ["--out", str(tmp_path / "out" / "r.html")]
    assert main([command, "--storage", str(db), *out]) == 0, capsys.readouterr().err
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "study.db"]  # no -wal, -shm or backup


def test_a_search_on_a_plain_sqlite_path_adds_to_that_study(sqlite_study, tmp_path):
    db = _copy(sqlite_study, tmp_path)
    study = run_search(small_search(tmp_path, DATA_DIR, trials=3, storage=str(db)))
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 3
    assert db.read_bytes().startswith(b"SQLite format 3\x00")
    assert not list(tmp_path.glob("*.bak"))


NOT_STORAGES = {
    "text": b"hello, I am a text file\n",
    "png": b"\x89PNG\r\n\x1a\n" + bytes(100),
    "json that is not a journal": b'{"a": 1}\n',
    "zeros": bytes(4096),
}


@pytest.mark.parametrize("content", NOT_STORAGES.values(), ids=NOT_STORAGES)
@pytest.mark.parametrize("command", ["search", "export", "report", "dashboard"])
def test_a_file_that_is_no_storage_is_refused_byte_for_byte(command, content, tmp_path, capsys):
    path = tmp_path / "notes.db"
    path.write_bytes(content)
    argv = {
        "search": ["--space", "ffn", "--data-dir", str(DATA_DIR), "--no-download"],
        "export": ["export", "--out", str(tmp_path / "out")],
        "report": ["report", "--out", str(tmp_path / "r.html")],
        "dashboard": ["dashboard", "--port", "1"],
    }[command]
    for storage in (str(path), f"sqlite:///{path}"):
        err = one_line_exit([*argv, "--storage", storage], capsys)
        assert "left as it is" in err or "not a SQLite database" in err
        assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_a_journal_given_as_a_sqlite_url_is_refused_and_named(tmp_path, capsys):
    journal = tmp_path / "s.journal"
    run_search(small_search(tmp_path, DATA_DIR, trials=1, storage=str(journal)))
    before = journal.read_bytes()
    err = one_line_exit(["export", "--storage", f"sqlite:///{journal}", "--out", str(tmp_path / "o")], capsys)
    assert "it is an Optuna journal" in err and journal.read_bytes() == before


def test_a_sqlite_database_of_another_program_gets_no_optuna_tables(tmp_path, capsys):
    db = tmp_path / "app.db"
    connection = sqlite3.connect(db)
    connection.execute("CREATE TABLE users (name TEXT)")
    connection.commit()
    connection.close()
    before = db.read_bytes()
    err = one_line_exit(["--space", "ffn", "--storage", f"sqlite:///{db}", "--data-dir", str(DATA_DIR)], capsys)
    assert "another program" in err and db.read_bytes() == before


def test_a_torn_journal_is_not_repaired_by_a_read_only_command(tmp_path, capsys):
    journal = tmp_path / "s.journal"
    run_search(small_search(tmp_path, DATA_DIR, trials=1, storage=str(journal)))
    with journal.open("ab") as file:
        file.write(b'{"op_code":5,"worker_id":"x","trial_id":1,"us')
    before = journal.read_bytes()
    assert main(["export", "--storage", str(journal), "--out", str(tmp_path / "o")]) == 0, capsys.readouterr().err
    assert journal.read_bytes() == before and not list(tmp_path.glob("*.bak"))


# 6. Looking something up creates nothing.

LOOKUPS = {
    "warm start from a missing sqlite file": lambda d: [
        "--space", "ffn", "--data-dir", str(DATA_DIR), "--storage", f"sqlite:///{d}/run.db",
        "--warm-start", f"sqlite:///{d}/nope/none.db#ffn",
    ],
    "warm start from a missing journal": lambda d: [
        "--space", "ffn", "--data-dir", str(DATA_DIR), "--storage", f"sqlite:///{d}/run.db",
        "--warm-start", f"{d}/missing.journal#ffn",
    ],
    "dashboard on a new sqlite file": lambda d: ["dashboard", "--storage", f"sqlite:///{d}/new/x.db"],
    "dashboard on a new journal": lambda d: ["dashboard", "--storage", f"{d}/new.journal"],
    "export from a missing sqlite file": lambda d: ["export", "--storage", f"sqlite:///{d}/x.db", "--out", f"{d}/o"],
    "report from a missing journal": lambda d: ["report", "--storage", f"{d}/x.journal", "--out", f"{d}/r.html"],
}  # fmt: skip


@pytest.mark.parametrize("case", LOOKUPS)
def test_looking_something_up_creates_nothing(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(search.worker.Worker, "run", lambda self: pytest.fail("the search should not start"))
    err = one_line_exit(LOOKUPS[case](tmp_path), capsys)
    assert "no storage" in err or "no SQLite storage" in err
    left = {p.name for p in tmp_path.iterdir()}
    assert all(name.startswith("run.db") for name in left), left  # the search's own storage; never the source


# 13. In-memory SQLite.


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_sqlite_storage_is_refused(url, capsys):
    err = one_line_exit(["--space", "ffn", "--storage", url, "--data-dir", str(DATA_DIR)], capsys)
    assert "in-memory" in err


# 2. Study creation: interrupted, it is finished by the next run.


def test_a_study_left_half_made_is_finished_by_the_rerun(tmp_path, capsys):
    opts = small_search(tmp_path, DATA_DIR, trials=2, quiet=False)
    # As a run killed right after Optuna's create_study leaves it: a name, no settings, no baseline.
    optuna.create_study(study_name=opts.default_study_name(), storage=opts.storage_url(), direction="maximize")
    study = run_search(opts)
    assert "left half-made by an interrupted run; finishing it" in capsys.readouterr().out
    assert study.user_attrs["space"] == "ffn" and study.user_attrs["created_by"] == "mnist-search"
    assert study.trials[0].user_attrs.get("baseline")
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 2


def test_a_half_made_study_with_other_settings_is_still_refused(tmp_path):
    opts = small_search(tmp_path, DATA_DIR, trials=1)
    study = optuna.create_study(study_name=opts.default_study_name(), storage=opts.storage_url(), direction="maximize")
    study.set_user_attr("space", "cnn")  # killed after its first setting
    with pytest.raises(UserError, match="was created with space='cnn', not 'ffn'"):
        run_search(opts)


def test_ctrl_c_while_the_study_is_created_waits_until_it_is_whole(tmp_path, monkeypatch):
    real = search.driver._record_settings

    def interrupted(study, *args):
        os.kill(os.getpid(), signal.SIGINT)  # in the middle of writing the settings
        real(study, *args)

    monkeypatch.setattr(search.driver, "_record_settings", interrupted)
    opts = small_search(tmp_path, DATA_DIR, trials=1)
    with pytest.raises(KeyboardInterrupt) as stopped:
        run_search(opts)
    assert "no trial was in flight" in stopped.value.message()
    study = optuna.load_study(study_name=opts.default_study_name(), storage=opts.storage_url())
    assert study.user_attrs["created_by"] == "mnist-search" and len(study.trials) == 1  # the baseline, queued
    monkeypatch.setattr(search.driver, "_record_settings", real)
    assert len(run_search(opts).get_trials(states=(TrialState.COMPLETE,))) == 1


def test_a_foreign_study_with_trials_is_refused(tmp_path):
    opts = small_search(tmp_path, DATA_DIR, trials=1)
    optuna.create_study(study_name=opts.default_study_name(), storage=opts.storage_url()).optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=1
    )
    with pytest.raises(UserError, match="not made by mnist-search"):
        run_search(opts)


# 3. One error path per trial; the circuit breaker keys on type and place, not the message.


def test_failures_that_differ_only_in_their_message_stop_the_search(tmp_path, monkeypatch):
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied (64x{len(calls)} and 3x10)")

    monkeypatch.setattr(search.run, "train", broken)
    opts = small_search(tmp_path, DATA_DIR, trials=100)
    with pytest.raises(UserError, match="last 5 trials all failed with 'RuntimeError: mat1 and mat2"):
        run_search(opts)
    assert len(calls) == 5


def test_a_failure_outside_training_is_recorded_and_stops_the_search(tmp_path, monkeypatch):
    def no_precision(*args, **kwargs):
        raise RuntimeError("bf16 not supported for this layer")

    monkeypatch.setattr(search.profile, "resolve_precision", no_precision)
    opts = small_search(tmp_path, DATA_DIR, trials=100)
    with pytest.raises(UserError, match="last 5 trials all failed"):
        run_search(opts)
    study = optuna.load_study(study_name=opts.default_study_name(), storage=opts.storage_url())
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 5 and all(t.user_attrs["fail_reason"].startswith("RuntimeError: bf16") for t in failed)
    assert not study.get_trials(states=(TrialState.RUNNING,))


def test_failures_of_every_kind_in_a_row_stop_the_search_too(tmp_path, monkeypatch):
    kinds = iter([ValueError, TypeError, KeyError, IndexError, RuntimeError, OSError, ZeroDivisionError] * 3)

    def broken(*args, **kwargs):
        raise next(kinds)("changing")

    monkeypatch.setattr(search.run, "train", broken)
    with pytest.raises(UserError, match="last 10 trials all failed"):
        run_search(small_search(tmp_path, DATA_DIR, trials=100))


def test_a_plugin_space_whose_every_model_is_broken_stops_in_one_line(tmp_path):
    (tmp_path / "broken_space.py").write_text(
        textwrap.dedent(
            """
            from torch import nn
            from spaces.base import Space
            from spaces import get_space

            FFN = get_space("ffn")

            def build(config):
                return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.Linear(31, 10))  # mismatched

            SPACE = Space(name="broken", description="always fails", suggest=FFN.suggest, build=build,
                          baselines=FFN.baselines, model_keys=FFN.model_keys, max_epochs=30, target=0.9,
                          target_reason="a test")
            """
        )
    )
    for precision in ("fp32", "auto"):
        result = run_cli(
            "--space", "broken_space:SPACE", "--trials", "1000", "--storage", f"sqlite:///{tmp_path}/{precision}.db",
            "--device", "cpu", "--precision", precision, "--train-subset", "256", "--val-size", "256", "--epochs", "1",
            "--data-dir", str(DATA_DIR), "--no-download", "--quiet", cwd=tmp_path, timeout=120,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert "last 5 trials all failed" in result.stderr and "Traceback" not in result.stderr
        study = optuna.load_study(
            study_name="broken_space:SPACE-e1-n256", storage=f"sqlite:///{tmp_path}/{precision}.db"
        )
        assert len(study.trials) == 5 and all(t.user_attrs.get("fail_reason") for t in study.trials)


# 4 and 8. Passwords with '@' and ':' are never echoed; postgresql:// finds the installed driver.


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://postgres:p@ss:w0rd@127.0.0.1:55432/db",
        "postgresql://postgres:p@ss:w0rd@127.0.0.1:55432/db",
        "postgresql+psycopg2://postgres:p%40ss%3Aw0rd@127.0.0.1:1/db",
        "postgresql+psycopg2://postgres:pa/ss?w0rd#x@127.0.0.1:1/db",
    ],
)
@pytest.mark.parametrize("command", [["--space", "ffn"], ["export"], ["report"], ["dashboard"]])
def test_no_piece_of_a_password_is_printed(url, command, capsys):
    err = one_line_exit([*command, "--storage", url, "--data-dir", str(DATA_DIR)][: len(command) + 2], capsys)
    assert "w0rd" not in err and "p@ss" not in err and "p%40ss" not in err and "pa/ss" not in err


def test_a_plain_postgresql_url_uses_the_installed_driver(capsys):
    assert locate("postgresql://u:pw@127.0.0.1:1/db", writable=True).target.startswith("postgresql+psycopg2://")
    err = one_line_exit(["export", "--storage", "postgresql://u:pw@127.0.0.1:1/db"], capsys)
    assert "Failed to import" not in err and "cannot open storage postgresql://u:***@127.0.0.1:1/db" in err


# 7. Different names never share a file.


def test_names_that_clean_alike_get_different_slugs():
    names = ["研究/ü", "...", " ", "x", "a/b", "a-b", "a b", "A..B", ".hidden", "-flag"]
    slugs = [slug(n) for n in names]
    assert len(set(slugs)) == len(names), slugs
    assert slug("gap_cnn-p8000-e15") == "gap_cnn-p8000-e15"  # a safe name is kept as it is
    assert all(inside(Path("/tmp/x"), s, "trial0").parent == Path("/tmp/x") for s in names)


def test_studies_whose_names_clean_alike_export_to_different_files(sqlite_study, tmp_path):
    storage = f"sqlite:///{_copy(sqlite_study, tmp_path)}"
    source = optuna.load_study(study_name="ffn-e1-n1000", storage=storage)
    written = set()
    for name in ["研究/ü", "...", " "]:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        for key, value in source.user_attrs.items():
            study.set_user_attr(key, value)
        study.add_trial(source.trials[0])
        written.update(search.export.export(study, 1, tmp_path / "out"))
    assert len(written) == 3 and len(list((tmp_path / "out").iterdir())) == 3


# 10 and 11. Bad values and interrupts: one line each.


@pytest.mark.parametrize("port", ["70000", "0", "-1", "65536", "http"])
def test_a_port_out_of_range_is_one_line(port, capsys):
    one_line_exit(["dashboard", "--port", port], capsys)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0"])
def test_a_timeout_that_is_not_a_positive_number_is_refused(value, capsys):
    one_line_exit(["--space", "ffn", "--timeout", value], capsys)
    with pytest.raises(UserError, match="--timeout"):
        SearchOptions(space="ffn", timeout=float(value)).validate()


@pytest.mark.parametrize("seed", [2**70, -5, True, "3", 1.5])
def test_a_warm_start_seed_out_of_range_is_skipped_with_a_note(seed, tmp_path, capsys):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"space": "ffn", "config": FFN | {"epochs": 1}, "train_seed": seed}))
    study = run_search(small_search(tmp_path, DATA_DIR, trials=1, warm_start=(str(path),), quiet=False))
    assert "warm start: skipped" in capsys.readouterr().out
    assert not any(t.user_attrs.get("warm_start_of") for t in study.trials)


def test_a_space_module_that_exits_or_hangs_at_import_is_one_line(tmp_path, capsys, monkeypatch):
    import spaces.registry

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(spaces.registry, "IMPORT_LIMIT_S", 0.5)
    (tmp_path / "exits_space.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "sleepy_space.py").write_text("import time\ntime.sleep(30)\n")
    assert "called sys.exit(3)" in one_line_exit(["--space", "exits_space:SPACE"], capsys)
    assert "took over 0.5 s" in one_line_exit(["--space", "sleepy_space:SPACE"], capsys)
    sys.modules.pop("exits_space", None)
    sys.modules.pop("sleepy_space", None)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_during_export_is_one_line_and_leaves_no_temporary(
    signum, sqlite_study, tmp_path, capsys, monkeypatch
):
    storage = str(_copy(sqlite_study, tmp_path))
    real = search.export.to_json

    def stopped(record):
        os.kill(os.getpid(), signum)
        return real(record)

    monkeypatch.setattr(search.export, "to_json", stopped)
    err = one_line_exit(["export", "--storage", storage, "--out", str(tmp_path / "out")], capsys, 128 + signum)
    assert "interrupted" in err
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


# 15 and 17. Modes and what a killed writer left.


def test_written_files_get_the_umasks_mode_and_a_repaired_journal_keeps_its_own(tmp_path):
    previous = os.umask(0o022)
    try:
        assert (write_text(tmp_path / "a.txt", "x").stat().st_mode & 0o777) == 0o644
    finally:
        os.umask(previous)
    journal = tmp_path / "s.journal"
    journal.write_bytes(b'{"op_code":0,"worker_id":"w","study_name":"s","directions":[1]}\n{"op_code":5,"wor')
    journal.chmod(0o640)
    assert repair_journal(journal) is not None
    assert journal.stat().st_mode & 0o777 == 0o640


def test_a_temporary_left_by_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    dead = tmp_path / ".report.html.999999999.abcd.tmp"  # no such pid
    live = tmp_path / f".report.html.{os.getpid()}.efgh.tmp"  # a writer still at work
    other = tmp_path / ".other.html.999999999.abcd.tmp"
    for path in (dead, live, other):
        path.write_bytes(b"x" * 100)
    write_text(tmp_path / "report.html", "<html></html>")
    assert not dead.exists() and live.exists() and other.exists()


def test_open_storage_refuses_what_it_cannot_be(tmp_path):
    (tmp_path / "folder").mkdir()
    for given in (str(tmp_path / "folder"), "", "sqlite:///" + str(tmp_path / "folder")):
        with pytest.raises(UserError):
            open_storage(given, writable=True)


def test_a_trial_that_ends_before_its_parameter_count_still_gets_its_line(tmp_path, capsys, monkeypatch):
    from search.progress import LINES_ENV, Progress

    monkeypatch.setenv(LINES_ENV, "1")
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", direction="maximize")
    Progress(study, 10, quiet=False).trial_done(0, "FAIL", None, None, "ValueError: in suggest")
    assert "params         ?" in capsys.readouterr().out


# Found by the red team of issue 20.


def test_a_crashed_writers_log_is_read_from_a_copy_and_nothing_is_created(tmp_path, capsys):
    """A -wal without its -shm still holds commits; a read replays it elsewhere, creating nothing here."""
    live = tmp_path / "live"
    live.mkdir()
    storage = open_storage(f"sqlite:///{live}/s.db", writable=True)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.set_user_attr("space", "ffn")
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"config": FFN}))
    assert (live / "s.db-wal").stat().st_size > 0  # the trial is in the log, not yet in the file
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for name in ("s.db", "s.db-wal"):  # as a writer killed mid-run leaves them, without the -shm
        (crashed / name).write_bytes((live / name).read_bytes())
    before = snapshot(crashed)
    assert main(["export", "--storage", f"sqlite:///{crashed}/s.db", "--out", str(tmp_path / "out")]) == 0
    assert snapshot(crashed) == before  # no -shm made, nothing replayed into the original
    assert len(list((tmp_path / "out").glob("*.json"))) == 1


def test_a_journal_record_optuna_cannot_replay_is_named(tmp_path, capsys):
    journal = tmp_path / "s.journal"
    journal.write_bytes(
        b'{"op_code":0,"worker_id":"w","study_name":"s","directions":[1]}\n{"op_code":99,"worker_id":"x"}\n'
    )
    before = journal.read_bytes()
    for argv in (["export"], ["--space", "ffn", "--data-dir", str(DATA_DIR)]):
        err = one_line_exit([*argv, "--storage", str(journal)], capsys)
        assert "cannot replay" in err and journal.read_bytes() == before


@pytest.mark.parametrize("url", ["sqlite:///file:x.db?mode=memory&uri=true", "sqlite:///file:x.db?mode=ro&uri=true"])
def test_a_sqlite_uri_a_search_cannot_honour_is_refused(url, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_exit(["--space", "ffn", "--storage", url, "--data-dir", str(DATA_DIR)], capsys)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_dashboard_stops_on_a_signal_in_one_line(signum, sqlite_study, tmp_path):
    import socket
    import subprocess
    import time

    db = _copy(sqlite_study, tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    server = subprocess.Popen(
        [sys.executable, "-m", "search.cli", "dashboard", "--storage", str(db), "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    server.send_signal(signum)
    _, err = server.communicate(timeout=30)
    assert server.returncode == 128 + signum, err
    assert err.strip().splitlines()[-1].startswith("mnist-search dashboard: stopped") and "Traceback" not in err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_cli_starts_is_one_line(signum, tmp_path):
    import subprocess
    import time

    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    started = subprocess.Popen(
        [sys.executable, "-m", "search.cli", "--space", "ffn", "--storage", f"sqlite:///{tmp_path}/s.db"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(0.5)  # inside the imports (torch alone takes longer)
    started.send_signal(signum)
    _, err = started.communicate(timeout=60)
    assert started.returncode == 128 + signum, err
    assert err.strip().splitlines() == [err.strip()] and "while starting" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_another_programs_module_that_imports_search_keeps_pythons_signal_handling(tmp_path):
    import subprocess

    package = tmp_path / "theirs"
    package.mkdir()
    (package / "__init__.py").write_text("import search\n")
    (package / "__main__.py").write_text(
        "import signal\nprint(signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n"
    )
    env = os.environ | {"PYTHONPATH": f"{tmp_path}{os.pathsep}{Path(__file__).resolve().parents[1]}"}
    out = subprocess.run([sys.executable, "-m", "theirs"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr
