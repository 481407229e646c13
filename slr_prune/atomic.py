"""Atomic file writes: a reader sees the old file or the whole new one, never a partial or empty one.

Kept free of torch so the command line can take its run-folder lock before the heavy imports.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .errors import DiskFullError

__all__ = ["write_atomic", "write_bytes_atomic", "write_text_atomic", "is_disk_full", "pid_alive"]


def write_bytes_atomic(data: bytes, path: str | Path) -> Path:
    """`data` written to `path` atomically (see `write_atomic`)."""
    return write_atomic(lambda f: f.write(data), path)


def write_text_atomic(text: str, path: str | Path) -> Path:
    """`text` written to `path` as UTF-8, atomically (see `write_atomic`)."""
    return write_bytes_atomic(text.encode("utf-8"), path)


def write_atomic(write: Callable[[BinaryIO], Any], path: str | Path) -> Path:
    """Write through `write` to a temporary file in the same folder, fsync, then rename over `path`:
    a reader sees the old file or the whole new one, never a partial or empty one.

    The temporary file's name carries the writer's pid (`.NAME.PID.XXXX`); temporary files of
    processes that are no longer alive (a killed earlier write) are removed first, those of a live
    process are left alone.  A write that fails for want of space raises `DiskFullError` naming
    `path`.  The file gets the permissions of a normally created one (the user's umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a folder; it cannot be written as a file (move it away)")
    _remove_orphans(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(e):
            raise DiskFullError(errno.ENOSPC, f"no space left on the device writing {path}", str(path)) from e
        raise
    return path


def is_disk_full(e: BaseException) -> bool:
    """Whether `e` is a failed write for want of space: ENOSPC/EDQUOT, or torch.save's RuntimeError
    wrapping one (`[enforce fail at inline_container.cc] unexpected pos`)."""
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(e)
    return isinstance(e, RuntimeError) and ("unexpected pos" in text or "No space left" in text)


def _remove_orphans(path: Path) -> None:
    """Remove the temporary files of `path` whose writer process is dead (or unnamed: an older
    layout without a pid); another live process's file is its own write in progress."""
    for orphan in path.parent.glob(f".{path.name}.*"):
        pid = orphan.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and pid_alive(int(pid)):
            continue
        orphan.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
