"""Atomic file writes: a file nnx writes is either the old one or the complete new one.

A save interrupted by a full disk, a quota, a file-size limit or Ctrl-C must
never leave a truncated model, checkpoint or result behind. Everything is
written to a temporary file in the destination's folder, flushed and fsynced,
then renamed over the destination with ``os.replace`` (atomic on POSIX and
Windows), and the folder is fsynced so the rename itself survives a crash.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _new_file_mode(target: Path) -> int:
    """The mode a plain ``open(path, "w")`` would give: the old file's, else 0o666 less the umask
    (``mkstemp`` makes 0o600 files, which would surprise anyone sharing a model)."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":  # folders cannot be opened for fsync on Windows
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path``.

    On any exception (``KeyboardInterrupt`` included) the temporary file is
    removed and ``path`` is left exactly as it was.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write writes whole files: mode must be 'wb' or 'w', got {mode!r}")
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, _new_file_mode(target))
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_folder(folder)
