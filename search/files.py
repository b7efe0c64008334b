"""Everything mnist-search writes: inside its folder, under slugged names, atomically.

A kill or a full disk leaves either the old file or the new one under the final name, never a
truncated one: each file is written to a temporary name in the same folder, synced, then renamed.
The temporary name carries the writer's process id, so the next write to the same file removes
what a killed writer left. Files get the mode the umask allows (as ``open`` would), not mkstemp's 0600.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from search.processes import process_alive
from spaces.errors import UserError

MAX_SLUG = 80  # file systems allow 255 bytes a name; leave room for suffixes
MIN_FREE_BYTES = 64 * 2**20  # a retrain writes checkpoints and a ~4 MB confusion-matrix page per config


SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # kept as it is; anything else is changed and hashed


def slug(text: str) -> str:
    """A file-name-safe form of ``text``: letters, digits, ``_.-``. A safe name is kept as it is; one
    that had to change (or be cut short) ends in a hash of the original, so that "研究/ü", "..." and
    " " never give one file name."""
    text = str(text)
    if SAFE_NAME.fullmatch(text) and ".." not in text and len(text) <= MAX_SLUG:
        return text
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+|\.\.+", "-", text).strip(".-")[: MAX_SLUG - 11].strip(".-") or "x"
    return f"{cleaned}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def inside(folder: Path, *parts: object, suffix: str = "") -> Path:
    """``folder/part1-part2...suffix`` from slugged parts, refused unless it resolves inside ``folder``."""
    name = "-".join(slug(str(p)) for p in parts) + suffix
    path = folder / name
    if path.resolve().parent != folder.resolve():
        raise UserError(f"refusing to write {path}: it would land outside {folder}")
    return path


def check_writable_dir(folder: Path, flag: str) -> None:
    """Create ``folder`` if needed and prove a file can be written there, before any long work."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag} {folder} is a file, not a folder; pass a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as error:
        raise UserError(f"{flag} {folder} cannot be written ({error.strerror}); pass a writable folder") from None
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise UserError(
            f"{flag} {folder} has only {free // 2**20} MiB free (at least {MIN_FREE_BYTES // 2**20} MiB needed); "
            "free some space or pass another folder"
        )


def write_atomic(path: Path, write: Callable[[IO[bytes]], object], mode: int | None = None) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``.

    ``mode``: the file's permissions (default: 0o666 less the umask, as a plain ``open`` gives)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = _temporary_prefix(path)
    _remove_abandoned(path.parent, prefix)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f"{prefix}{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fchmod(file.fileno(), 0o666 & ~_umask() if mode is None else mode)
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    return write_atomic(path, lambda file: file.write(text.encode("utf-8")))


def _temporary_prefix(path: Path) -> str:
    return f".{path.name[:40]}."


def _remove_abandoned(folder: Path, prefix: str) -> None:
    """Temporaries of this file left by writers that are gone (killed mid-write)."""
    for leftover in folder.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = leftover.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            leftover.unlink(missing_ok=True)


@functools.cache
def _umask() -> int:
    """The process's umask, read once at the first write (reading it means setting it for a moment)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
