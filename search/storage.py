"""Study storage: SQLite by default, Optuna's journal file for local multi-process runs, and any
RDB URL (PostgreSQL for many workers) with heartbeats and retries of stale trials."""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote

import optuna
import sqlalchemy.exc
from optuna.artifacts import FileSystemArtifactStore
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from sqlalchemy.engine import make_url

from search.errors import UserError, first_line
from search.files import write_atomic

STUDIES_DIR = Path("studies")
DEFAULT_SQLITE = STUDIES_DIR / "mnist-search.db"
DEFAULT_JOURNAL = STUDIES_DIR / "mnist-search.journal"
ARTIFACTS_DIR = STUDIES_DIR / "artifacts"
MAX_RETRY = 3
SCHEMA_ATTEMPTS = 5
MAX_HEARTBEAT_S = 3600
SECRET_QUERY_KEY = re.compile(r"pass|pwd|secret|token|key", re.IGNORECASE)
HIDDEN = "***"


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
    """The URL with its password and any secret query parameter hidden, for logs, errors and reports."""
    if is_journal(url):
        return url
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - a malformed URL: hide all user info and the query
        return re.sub(r"\?.*$", "?" + HIDDEN, re.sub(r"://[^/]*@", f"://{HIDDEN}@", url))
    if parsed.host and "@" in parsed.host:  # an unencoded "@" in the password: SQLAlchemy splits at the first
        parsed = parsed.set(host=parsed.host.rpartition("@")[2], password=HIDDEN)
    elif parsed.password is not None:
        parsed = parsed.set(password=HIDDEN)
    query = {k: HIDDEN if SECRET_QUERY_KEY.search(k) else v for k, v in parsed.query.items()}
    return parsed.set(query=query).render_as_string(hide_password=False).replace(quote(HIDDEN, safe=""), HIDDEN)


def scrub(text: str, url: str) -> str:
    """``text`` (an error message) with every secret of ``url`` replaced, in every encoding."""
    secrets: set[str] = set()
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - fall back to the raw user info
        match = re.search(r"://([^/]*)@", url)
        secrets.update(match.group(1).split(":", 1)[1:] if match else [])
    else:
        password = parsed.password
        if parsed.host and "@" in parsed.host:  # SQLAlchemy took the password's tail for the host
            tail = parsed.host.rpartition("@")[0]
            secrets.update([tail, f"{password or ''}@{tail}"])
        secrets.update([str(password)] if password else [])
        secrets.update(str(v) for k, v in parsed.query.items() if SECRET_QUERY_KEY.search(k))
    text = text.replace(url, redact(url))
    for secret in sorted(secrets, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote_plus(secret), unquote(secret)}:
            text = text.replace(form, HIDDEN)
    return text


def check_parallel_safe(url: str, processes: int) -> None:
    if processes > 1 and is_sqlite(url):
        raise UserError(
            f"SQLite storage {redact(url)} is not safe for {processes} processes; drop --storage to use the "
            f"journal file {DEFAULT_JOURNAL}, or pass a journal path or a postgresql:// URL"
        )


def open_storage(
    url: str, heartbeat: Heartbeat | None = None, *, writable: bool = False
) -> optuna.storages.BaseStorage:
    """Open (creating where needed) the storage at ``url``; any failure is a one-line UserError.

    ``writable``: the caller will write (a search), so a read-only file is refused up front.
    """
    heartbeat = heartbeat or Heartbeat()
    if is_journal(url):
        return _open_journal(Path(url), writable)
    if is_sqlite(url):
        sqlite_path = url.split(":///", 1)[-1]
        if sqlite_path and sqlite_path != ":memory:":
            _make_parent(Path(sqlite_path))
            if writable and Path(sqlite_path).exists() and not os.access(sqlite_path, os.W_OK):
                raise UserError(f"SQLite file {sqlite_path} is read-only; make it writable or pass another --storage")
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
            raise UserError(f"cannot open storage {redact(url)}: {scrub(first_line(error), url)}") from None


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


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the folder of {path}: {error.strerror}; pass another --storage") from None


def _open_journal(path: Path, writable: bool) -> JournalStorage:
    _make_parent(path)
    if path.is_dir():
        raise UserError(f"journal storage {path} is a folder; pass a file path")
    if writable and not os.access(path if path.exists() else path.parent, os.W_OK):
        raise UserError(f"journal storage {path} is read-only; make it writable or pass another --storage")
    try:
        if path.exists() and os.access(path, os.W_OK):
            repair_journal(path)
        return JournalStorage(JournalFileBackend(str(path)))
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - unreadable file, bad log line, permissions
        raise UserError(f"cannot open journal storage {path}: {first_line(error)}") from None


def repair_journal(path: Path) -> Path | None:
    """Drop a torn record (a write cut by a full disk or a kill) so the journal opens again.

    Optuna skips one torn last line, but the next append lands behind it and from then on the file
    cannot be read. A whole record glued behind a torn one is kept. The rewrite happens under the
    journal's own write lock, so a record still being written is never taken for a torn one.
    Returns the backup of the original, if anything changed.
    """
    if _repaired(path.read_bytes()) is None:
        return None  # the common case: no lock taken, nothing written (a full disk has no room for a lock)
    lock = JournalFileSymlinkLock(str(path))  # the lock JournalFileBackend takes to append
    lock.acquire()
    try:
        data = path.read_bytes()
        repaired = _repaired(data)
        if repaired is None:
            return None
        backup = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}.bak")
        write_atomic(backup, lambda file: file.write(data))
        write_atomic(path, lambda file: file.write(repaired))
    finally:
        lock.release()
    print(f"warning: dropped torn record(s) from {path}; the original is kept as {backup}", file=sys.stderr)
    return backup


def _repaired(data: bytes) -> bytes | None:
    """The journal without its torn records, or None if it has none."""
    lines = data.split(b"\n")  # whatever follows the last newline is torn
    repaired = b"".join(line + b"\n" for line in map(_salvage, lines[:-1]) if line is not None)
    return None if repaired == data else repaired


def _salvage(line: bytes) -> bytes | None:
    """The line if it is a whole record; else the whole record glued behind a torn one, if any."""
    for start in (0, line.rfind(b'{"op_code"')):
        if start < 0:
            continue
        try:
            json.loads(line[start:])
        except ValueError:
            continue
        return line[start:]
    return None


def artifact_store(path: Path = ARTIFACTS_DIR) -> FileSystemArtifactStore:
    """Optuna's file artifact store (learning curves, checkpoints) for the dashboard."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--artifacts {path} cannot be created ({error.strerror}); pass a writable folder") from None
    return FileSystemArtifactStore(str(path))


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
