"""Optuna's journal file: telling one from other files by its content, and repairing a torn record."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from optuna.storages.journal import JournalFileSymlinkLock

from search.files import write_atomic

SNIFF_BYTES = 64 * 1024  # a journal's first record (a study's creation) is far shorter


def looks_like_journal(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) starts with a journal record: a JSON object with an op_code."""
    first = head.split(b"\n", 1)[0]
    try:
        record = json.loads(first)
    except ValueError:
        # A first record cut short by a full disk, with nothing behind it, is still a journal's.
        return b"\n" not in head and head.startswith(b'{"op_code":')
    return isinstance(record, dict) and isinstance(record.get("op_code"), int)


def repair_journal(path: Path) -> Path | None:
    """Drop a torn record (a write cut by a full disk or a kill) so the journal opens again.

    Only for a file already known to be a journal, opened for writing. Optuna skips one torn last
    line, but the next append lands behind it and from then on the file cannot be read. A whole
    record glued behind a torn one is kept. The rewrite happens under the journal's own write lock,
    so a record still being written is never taken for a torn one, and keeps the file's mode.
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
        mode = path.stat().st_mode & 0o7777
        backup = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}.bak")
        write_atomic(backup, lambda file: file.write(data), mode=mode)
        write_atomic(path, lambda file: file.write(repaired), mode=mode)
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
