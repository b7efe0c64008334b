"""Study storage: SQLite by default, Optuna's journal file for local multi-process runs, and any
RDB URL (PostgreSQL for many workers) with heartbeats and retries of stale trials.

Every ``--storage`` (and every ``--warm-start`` source) passes one gate, ``locate``, which decides
what the thing is from its content, never its name: a file that starts with SQLite's header is a
SQLite database, one whose first line is a journal record is a journal, and anything else is refused
and left byte for byte as it was. Read-only commands open with ``writable=False``: a missing storage
is refused instead of created, SQLite opens read-only, and a journal is never repaired.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import random
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.artifacts import FileSystemArtifactStore
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from sqlalchemy.engine import URL, make_url

from search.journal import SNIFF_BYTES, looks_like_journal, repair_journal
from search.redact import is_ambiguous, redact, scrub
from spaces.errors import UserError, first_line

STUDIES_DIR = Path("studies")
DEFAULT_SQLITE = STUDIES_DIR / "mnist-search.db"
DEFAULT_JOURNAL = STUDIES_DIR / "mnist-search.journal"
ARTIFACTS_DIR = STUDIES_DIR / "artifacts"
MAX_RETRY = 3
SCHEMA_ATTEMPTS = 5
MAX_HEARTBEAT_S = 3600
SQLITE_HEADER = b"SQLite format 3\x00"
OPTUNA_TABLES = frozenset({"studies", "trials", "version_info"})  # any of them: Optuna's (or being made)
POSTGRES_DRIVERS = ("psycopg2", "psycopg")  # the [postgres] extra installs the first


@dataclass(frozen=True)
class Heartbeat:
    """A RUNNING trial whose worker stops beating for ``grace`` seconds is failed and re-queued."""

    interval: int = 10
    grace: int = 30


@dataclass(frozen=True)
class Location:
    """What a storage argument turned out to be: its kind, and the URL or path to open."""

    kind: Literal["sqlite", "journal", "rdb"]
    target: str  # a SQLite file's path, a journal's path, or a server URL (driver filled in)
    given: str  # what the user typed, for messages (shown through ``redact``)
    exists: bool = True


def default_storage(jobs: int) -> str:
    # SQLite is not safe for several writing processes (Optuna FAQ): --jobs uses the journal file.
    return str(DEFAULT_JOURNAL) if jobs > 1 else f"sqlite:///{DEFAULT_SQLITE}"


def kind_of(url: str) -> str:
    """ "sqlite", "journal" or "rdb", by the same gate that opens it (a search's view: writable)."""
    return locate(url, writable=True).kind


def locate(given: str, *, writable: bool) -> Location:
    """The one gate every storage argument passes; refuses in one line, before anything is opened."""
    if not given or "\x00" in given:
        raise UserError("--storage is empty or holds a NUL character; pass a URL or a file path")
    if "://" not in given:
        return _locate_file(Path(given), given, writable)
    scheme = given.split("://", 1)[0]
    if scheme.startswith("sqlite"):
        return _locate_sqlite_url(given, writable)
    return Location("rdb", _server_url(given), given)


def check_parallel_safe(url: str, processes: int) -> None:
    if processes > 1 and kind_of(url) == "sqlite":
        raise UserError(
            f"SQLite storage {redact(url)} is not safe for {processes} processes; drop --storage to use the "
            f"journal file {DEFAULT_JOURNAL}, or pass a journal path or a postgresql:// URL"
        )


def open_storage(
    url: str, heartbeat: Heartbeat | None = None, *, writable: bool = False, live: bool = False
) -> optuna.storages.BaseStorage:
    """Open the storage ``url`` names; any failure is a one-line UserError.

    ``writable``: the caller will write (a search, a retrain's uploads): a new storage is created,
    and a read-only file is refused up front. Otherwise nothing is created or changed. ``live``
    (read-only): keep seeing what a search writes later (the dashboard); SQLite then keeps its own
    ``-wal``/``-shm`` files beside a database in WAL mode, the database itself unchanged.
    """
    location = locate(url, writable=writable)
    if location.kind == "journal":
        return _open_journal(Path(location.target), writable)
    heartbeat = heartbeat or Heartbeat()
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    url_to_open = location.target
    if location.kind == "sqlite":
        if writable:
            _make_parent(Path(location.target))
        engine_kwargs = {"creator": _sqlite_connector(Path(location.target), writable, live)}
        url_to_open = f"sqlite:///{location.target}"
    attempt = 0
    while True:
        attempt += 1
        try:
            if location.kind == "rdb":
                _check_optuna_server(url_to_open, url, writable)
            return RDBStorage(
                url_to_open,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat.interval,
                grace_period=heartbeat.grace,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
                skip_table_creation=not writable,
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as error:
            # Workers starting together on an empty database race to create Optuna's tables;
            # the losers find them made on a second look.
            if not writable:
                raise UserError(f"{redact(url)} holds no Optuna study; check --storage") from None
            if attempt == SCHEMA_ATTEMPTS:
                raise UserError(
                    f"cannot create Optuna's tables in {redact(url)}: {scrub(first_line(error), url)}"
                ) from None
            time.sleep(random.uniform(0.2, 1.0))
        except UserError:
            raise
        except Exception as error:  # noqa: BLE001 - SQLAlchemy and the drivers raise many kinds
            hint = ""
            if isinstance(error, sqlalchemy.exc.OperationalError | OSError) and location.kind == "sqlite":
                hint = (
                    "; check that the file and its folder are writable and the disk has room, then rerun the same "
                    "command to resume"
                    if writable
                    else "; check that the file and its folder can be read"
                )
            raise UserError(f"cannot open storage {redact(url)}: {scrub(first_line(error), url)}{hint}") from None


@contextmanager
def storage_failures(url: str) -> Iterator[None]:
    """A storage that fails mid-run (a full disk, a lost server) ends the command in one line; what it
    already holds stays, and heartbeats or the journal's dead-worker check re-queue the trial cut off."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:
        # Optuna can replace a failed write with its own AssertionError ("Should not reach."): look down the chain.
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, sqlalchemy.exc.SQLAlchemyError | OSError):
            cause = cause.__context__
        if cause is None:
            raise
        raise UserError(
            f"the study storage {redact(url)} failed ({scrub(first_line(cause), url)}); completed trials are "
            "kept: free disk space or fix the storage, then rerun the same command to resume"
        ) from None


def artifact_store(path: Path = ARTIFACTS_DIR) -> FileSystemArtifactStore:
    """Optuna's file artifact store (learning curves, checkpoints) for the dashboard."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--artifacts {path} cannot be created ({error.strerror}); pass a writable folder") from None
    return FileSystemArtifactStore(str(path))


def _locate_file(path: Path, given: str, writable: bool) -> Location:
    """A plain path: a journal or a SQLite file, told apart by content; a new one becomes a journal."""
    if not _existing_file(path, "storage", writable):
        return Location("journal", str(path), given, exists=False)
    head = _head(path)
    if head.startswith(SQLITE_HEADER):
        _check_optuna_sqlite(path, writable)
        return Location("sqlite", str(path), given)
    if head and not looks_like_journal(head):
        raise UserError(
            f"storage {path} is neither an Optuna journal nor a SQLite database; it was left as it is: "
            "pass another --storage"
        )
    if not head and not writable:
        raise UserError(f"storage {path} is empty: it holds no study yet")
    return Location("journal", str(path), given)


def _existing_file(path: Path, label: str, writable: bool) -> bool:
    """Whether ``path`` is a regular file already; missing is fine only for a writer, anything else
    (a folder, a FIFO, a device) is refused before it is opened."""
    if path.is_dir():
        raise UserError(f"{label} {path} is a folder; pass a file path")
    if not path.exists():
        if not writable:
            raise UserError(f"no {label} at {path}; check the path (read-only commands create nothing)")
        return False
    if not _is_file(path):
        raise UserError(f"{label} {path} is not a regular file; pass another --storage")
    return True


def _locate_sqlite_url(given: str, writable: bool) -> Location:
    try:
        parsed = make_url(given)
    except Exception:  # noqa: BLE001 - the parser's message may quote the URL
        raise UserError(f"cannot parse storage URL {redact(given)}; write it as sqlite:///PATH") from None
    if writable and parsed.query.get("mode") == "ro":
        raise UserError(f"{redact(given)} asks for a read-only database (mode=ro); drop mode=ro to search or retrain")
    database = parsed.database or ""
    if parsed.query.get("uri") in ("true", "1") and database.startswith("file:"):
        database = database.removeprefix("file:")
    if database in ("", ":memory:") or database.startswith(":memory:") or parsed.query.get("mode") == "memory":
        raise UserError(f"{redact(given)} is an in-memory database, lost when the command ends; pass sqlite:///PATH")
    path = Path(database)
    if not _existing_file(path, "SQLite storage", writable):
        return Location("sqlite", str(path), given, exists=False)
    head = _head(path)
    if head and not head.startswith(SQLITE_HEADER):
        hint = " (it is an Optuna journal: pass its path without sqlite:///)" if looks_like_journal(head) else ""
        raise UserError(f"{path} is not a SQLite database{hint}; it was left as it is")
    if not head and not writable:
        raise UserError(f"SQLite storage {path} is empty: it holds no study yet")
    if writable and not os.access(path, os.W_OK):
        raise UserError(f"SQLite file {path} is read-only; make it writable or pass another --storage")
    if head:
        _check_optuna_sqlite(path, writable)
    return Location("sqlite", str(path), given)


def _check_optuna_sqlite(path: Path, writable: bool) -> None:
    """A SQLite database of some other program is not ours to add tables to."""
    try:
        connection = sqlite3.connect(_read_only_uri(path), uri=True)
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            connection.close()
    except sqlite3.Error as error:
        raise UserError(f"cannot read SQLite storage {path}: {error}; it was left as it is") from None
    if tables and not tables & OPTUNA_TABLES:
        raise UserError(f"{path} is a SQLite database of another program (no Optuna tables); it was left as it is")
    if not tables and not writable:
        raise UserError(f"SQLite storage {path} holds no study yet")


def _check_optuna_server(url: str, given: str, writable: bool) -> None:
    """As for SQLite: a database of another program gets no Optuna tables, and a read finds a study."""
    engine = sqlalchemy.create_engine(url, pool_pre_ping=True)
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    if tables and not tables & OPTUNA_TABLES:
        raise UserError(f"{redact(given)} is a database of another program (no Optuna tables); it was left as it is")
    if not tables and not writable:
        raise UserError(f"{redact(given)} holds no Optuna study yet; check --storage")


def _server_url(given: str) -> str:
    """A server URL with its driver filled in; a password with a bare ``@`` is refused, never parsed."""
    if is_ambiguous(given):
        raise UserError(
            f"cannot open storage {redact(given)}: it holds an '@' besides the one before the host; write '@' "
            "in a password or a query value as %40"
        )
    try:
        parsed = make_url(given)
    except Exception:  # noqa: BLE001 - never show the parser's message: it quotes pieces of the password
        raise UserError(
            f"cannot open storage {redact(given)}: not a valid URL; percent-encode '@ : / ? # %' in the "
            "user name and password"
        ) from None
    if parsed.drivername == "postgres":
        raise UserError(f"cannot open storage {redact(given)}: write the scheme as postgresql://")
    if parsed.drivername == "postgresql":  # SQLAlchemy's default driver is psycopg 3; use what is installed
        installed = [name for name in POSTGRES_DRIVERS if importlib.util.find_spec(name) is not None]
        if not installed:
            raise UserError("PostgreSQL storage needs a driver: pip install 'mnist-search[postgres]'")
        parsed = parsed.set(drivername=f"postgresql+{installed[0]}")
    return _render(parsed)


def _render(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def _read_only_uri(path: Path, live: bool = False) -> str:
    """How to read ``path`` creating nothing beside it. A writer at work has its ``-wal`` and ``-shm``
    open: ``mode=ro`` shares them. With neither, ``immutable=1`` reads the file alone (``mode=ro``
    would make both for a database in WAL mode), unless the reader must follow later writes
    (``live``). A ``-wal`` without its ``-shm`` is a crashed writer's log, still holding commits:
    database and log are read from a private copy, where SQLite may replay the log."""
    wal, shm = (path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))
    if wal.exists() and not shm.exists():
        path = _private_copy(path, wal)
        return f"file:{quote(str(path))}?mode=ro"
    follow = live or wal.exists()
    return f"file:{quote(str(path.resolve()))}?{'mode=ro' if follow else 'immutable=1'}"


def _private_copy(path: Path, wal: Path) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="mnist-search-read-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    copy = folder / path.name
    shutil.copyfile(path, copy)
    shutil.copyfile(wal, folder / wal.name)
    return copy


def _sqlite_connector(path: Path, writable: bool, live: bool) -> Any:
    """Connections for SQLAlchemy: read-write in WAL mode, or read-only."""
    uri = f"file:{quote(str(path.resolve()))}" if writable else _read_only_uri(path, live)
    return lambda: sqlite3.connect(
        uri, uri=True, timeout=60, factory=_WalConnection if writable else sqlite3.Connection, check_same_thread=False
    )


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the folder of {path}: {error.strerror}; pass another --storage") from None


def _open_journal(path: Path, writable: bool) -> JournalStorage:
    if writable:
        _make_parent(path)
        if not os.access(path if path.exists() else path.parent, os.W_OK):
            raise UserError(f"journal storage {path} is read-only; make it writable or pass another --storage")
    try:
        if writable and path.exists():
            repair_journal(path)
        return JournalStorage(JournalFileBackend(str(path)))
    except UserError:
        raise
    except AssertionError:  # Optuna's replay met a whole record it has no rule for ("Should not reach.")
        raise UserError(
            f"journal storage {path} holds a record this Optuna ({optuna.__version__}) cannot replay: it was "
            "written by another version or edited; it was left as it is: use the Optuna that wrote it, or a backup"
        ) from None
    except Exception as error:  # noqa: BLE001 - unreadable file, bad log line, permissions
        hint = "; if a record was cut short, a search on it repairs it" if not writable else ""
        raise UserError(f"cannot open journal storage {path}: {first_line(error)}{hint}") from None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            return file.read(SNIFF_BYTES)
    except OSError as error:
        raise UserError(f"cannot read storage {path}: {error.strerror}") from None


class _WalConnection(sqlite3.Connection):
    """A SQLite connection in write-ahead-log mode with ``synchronous=NORMAL``: a commit appends to
    the log instead of rewriting pages and syncing twice, and a reader (the dashboard) never blocks
    the writing worker. The file stays consistent through a crash; a power cut can lose the last
    commits. Where the mode cannot be set (a read-only file), the default journal stays."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            self.execute("PRAGMA journal_mode=WAL")  # recorded in the file; later opens find it set
        except sqlite3.OperationalError:
            return
        self.execute("PRAGMA synchronous=NORMAL")
