"""Everything mnist-search writes: inside its folder, under slugged names, atomically.

A kill or a full disk leaves either the old file or the new one under the final name, never a
truncated one: each file is written to a temporary name in the same folder, synced, then renamed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from search.errors import UserError

MAX_SLUG = 80  # file systems allow 255 bytes a name; leave room for suffixes
MIN_FREE_BYTES = 64 * 2**20  # a retrain writes checkpoints and a ~4 MB confusion-matrix page per config


def slug(text: str) -> str:
    """A file-name-safe form of ``text``: letters, digits, ``_.-``; long names keep a hash of the rest."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+|\.\.+", "-", str(text)).strip(".-") or "x"
    if len(cleaned) > MAX_SLUG:
        digest = hashlib.sha1(str(text).encode()).hexdigest()[:10]
        cleaned = f"{cleaned[: MAX_SLUG - 11]}-{digest}"
    return cleaned


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


def write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:40]}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    return write_atomic(path, lambda file: file.write(text.encode("utf-8")))
