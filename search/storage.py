"""Study storage: SQLite by default, Optuna's journal file for local multi-process runs, and any
RDB URL (PostgreSQL for many workers) with heartbeats and retries of stale trials."""

from __future__ import annotations

import random
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

from search.errors import UserError

STUDIES_DIR = Path("studies")
DEFAULT_SQLITE = STUDIES_DIR / "mnist-search.db"
DEFAULT_JOURNAL = STUDIES_DIR / "mnist-search.journal"
MAX_RETRY = 3
SCHEMA_ATTEMPTS = 5


@dataclass(frozen=True)
class Heartbeat:
    """A RUNNING trial whose worker stops beating for ``grace`` seconds is failed and re-queued."""

    interval: int = 10
    grace: int = 30


def default_storage(jobs: int) -> str:
    # SQLite is not safe for several writing processes (Optuna FAQ): --jobs uses the journal file.
    return str(DEFAULT_JOURNAL) if jobs > 1 else f"sqlite:///{DEFAULT_SQLITE}"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def is_journal(url: str) -> bool:
    return "://" not in url


def redact(url: str) -> str:
    """The URL with any password replaced, for logs, errors and reports."""
    return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", url)


def check_parallel_safe(url: str, processes: int) -> None:
    if processes > 1 and is_sqlite(url):
        raise UserError(
            f"SQLite storage {redact(url)} is not safe for {processes} processes; drop --storage to use the "
            f"journal file {DEFAULT_JOURNAL}, or pass a journal path or a postgresql:// URL"
        )


def open_storage(url: str, heartbeat: Heartbeat | None = None) -> optuna.storages.BaseStorage:
    """Open (creating where needed) the storage at ``url``; any failure is a one-line UserError."""
    heartbeat = heartbeat or Heartbeat()
    if is_journal(url):
        path = Path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return JournalStorage(JournalFileBackend(str(path)))
        except Exception as error:  # noqa: BLE001 - unreadable file, bad log line, permissions
            raise UserError(f"cannot open journal storage {path}: {_first_line(error)}") from None
    if is_sqlite(url):
        sqlite_path = url.split(":///", 1)[-1]
        if sqlite_path and sqlite_path != ":memory:":
            Path(sqlite_path).parent.mkdir(parents=True, exist_ok=True)
    attempt = 0
    while True:
        attempt += 1
        try:
            return RDBStorage(
                url,
                engine_kwargs=_SQLITE_ENGINE if is_sqlite(url) else {"pool_pre_ping": True},
                heartbeat_interval=heartbeat.interval,
                grace_period=heartbeat.grace,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Workers starting together on an empty database race to create Optuna's tables;
            # the losers find them made on a second look.
            if attempt == SCHEMA_ATTEMPTS:
                raise UserError(f"cannot create Optuna's tables in {redact(url)}") from None
            time.sleep(random.uniform(0.2, 1.0))
        except Exception as error:  # noqa: BLE001 - SQLAlchemy raises many kinds for bad URLs
            raise UserError(f"cannot open storage {redact(url)}: {redact(_first_line(error))}") from None


class _WalConnection(sqlite3.Connection):
    """A SQLite connection in write-ahead-log mode with ``synchronous=NORMAL``: a commit appends to
    the log instead of rewriting pages and syncing twice, and a reader (the dashboard) never blocks
    the writing worker. The file stays consistent through a crash; a power cut can lose the last
    commits. Where the mode cannot be set (a read-only file), the default journal stays."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        try:
            self.execute("PRAGMA journal_mode=WAL")  # recorded in the file; later opens find it set
        except sqlite3.OperationalError:
            return
        self.execute("PRAGMA synchronous=NORMAL")


_SQLITE_ENGINE = {"connect_args": {"timeout": 60, "factory": _WalConnection}}


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
