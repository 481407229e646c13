"""The run folder: checked before any compute and locked for one run at a time.

A second run on a folder in use is refused at once, naming the holder.  The command line takes
the lock before its heavy imports (`early_lock`), so the refusal comes in a fraction of a second;
the lock is held until the process ends and `run_folder_lock` reuses it.  Nothing here imports
torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..atomic import pid_alive, write_text_atomic
from ..errors import RunFolderBusyError

__all__ = ["check_out", "run_folder_lock", "early_lock", "release_all", "disk_full_line", "DEFAULT_OUT", "LOCK_NAME"]

DEFAULT_OUT = {"demo": "runs/demo", "train": "runs/dense", "prune": "runs/prune", "compare": "runs/compare",
               "finetune": "runs/finetune", "structured": "runs/structured", "search": "runs/search",
               "export": "runs/export"}
"""The commands that write into --out, and their default folders (each command's --out default)."""
RESUMABLE = frozenset({"train", "prune", "compare", "finetune", "search"})
"""The commands with --resume (run_folder_args)."""


def check_out(out: str | Path, flag: str = "--out") -> Path:
    """The run folder, checked before any compute: a folder, or a path that can become one (no
    name over 255 bytes, no regular file among its parents, writable: a probe file is created and
    removed), with no output file name inside it taken by a folder."""
    path = Path(out)
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise ValueError(f"{flag} {str(out)!r}: the name {part[:24]!r}... is {len(os.fsencode(part))} bytes; "
                             f"a file or folder name has at most {NAME_MAX}")
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        where = "exists and" if existing == path else f"lies below {str(existing)!r}, which"
        raise FileExistsError(f"{flag} {str(out)!r} {where} is a file, not a folder; {flag} names a run folder")
    _probe_writable(existing, flag, out)
    if path.is_dir():
        taken = [p for p in (*path.glob("*"), *path.glob("*/*")) if p.is_dir() and p.suffix in OUTPUT_SUFFIXES]
        if taken:
            raise IsADirectoryError(f"{flag} {str(out)!r}: {str(taken[0])!r} is a folder where the run writes a "
                                    "file; move it away")
    return path


NAME_MAX = 255
"""Bytes in one file or folder name (ext4, xfs, btrfs, APFS, NTFS)."""
OUTPUT_SUFFIXES = (".pt", ".json", ".yaml", ".png", ".onnx", ".safetensors")
"""Suffixes of the files a run writes; a folder with one inside a run folder would block a write."""


def _probe_writable(folder: Path, flag: str, out: str | Path) -> None:
    """Create and remove a file in `folder`: a read-only folder or file system is refused now, not
    after the compute."""
    probe = folder / f".slr_prune.probe.{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"{flag} {str(out)!r}: cannot write in {str(folder)!r} "
                              f"({e.strerror or e}); choose a writable folder") from e


def disk_full_line(e: OSError, resume: bool) -> str:
    """The one line for a write that failed for want of space."""
    where = getattr(e, "filename", None) or "a file"
    return f"no space left on the device writing {where}; free space and rerun{' with --resume' if resume else ''}"


LOCK_NAME = ".slr_prune.lock"
"""The lock file in a run folder, and its holder record (`.slr_prune.lock.json`)."""

_HELD: dict[Path, tuple[object, list[Path], Path]] = {}
"""Run folders this process holds: {absolute path: (lock, folders the lock created, path as given)}."""


def acquire(out: str | Path, command: str) -> Path:
    """Check run folder `out` (`check_out`) and lock it for this process (see `_lock`)."""
    return _lock(check_out(out), command)


def _lock(path: Path, command: str) -> Path:
    """Lock the checked run folder `path` for this process (an OS file lock, released when the
    process ends however it ends) and write the holder record; a folder another live run holds is
    refused."""
    from filelock import FileLock, Timeout

    key = path.absolute()
    if key in _HELD:
        return path
    created = [p for p in (path, *key.parents) if not p.exists()]  # leaf first
    path.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path / LOCK_NAME, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunFolderBusyError(f"run folder {str(path)!r} is in use by {_holder(path)}; wait for it to end or "
                                 "choose another --out") from None
    _HELD[key] = (lock, created, path)
    try:
        write_text_atomic(json.dumps({"pid": os.getpid(), "host": platform.node(), "command": command,
                                      "argv": sys.argv, "since": time.strftime("%Y-%m-%d %H:%M:%S")}),
                          path / f"{LOCK_NAME}.json")
    except BaseException:
        release(key)
        raise
    return path


def release(key: Path) -> None:
    """Give run folder `key` (absolute) back; folders its lock created are removed if left empty."""
    lock, created, path = _HELD.pop(key)
    (path / f"{LOCK_NAME}.json").unlink(missing_ok=True)
    if created and {p.name for p in path.iterdir()} <= {LOCK_NAME}:
        (path / LOCK_NAME).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # another run has just begun in it
            for folder in created:
                folder.rmdir()
    lock.release()  # type: ignore[attr-defined]


def release_all() -> None:
    for key in list(_HELD):
        release(key)


@contextlib.contextmanager
def run_folder_lock(out: str | Path, command: str) -> Iterator[Path]:
    """Hold run folder `out` for the block (see `acquire`); a folder this process already holds
    (taken by `early_lock`) is used as it is, and any other early guess is given back.  Only
    rank 0 of a torchrun job locks; the other ranks share its folder."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield check_out(out)
        return
    key = Path(out).absolute()
    for other in [k for k in _HELD if k != key]:
        release(other)
    held = key in _HELD  # taken by early_lock, after the same checks
    path = Path(out) if held else acquire(out, command)
    try:
        yield path
    finally:
        if not held:
            release(key)


def early_lock(argv: Sequence[str]) -> None:
    """Take the run folder's lock from the raw arguments, before the heavy imports: --out, or the
    command's default; with --config the full parse decides (a file may set --out).  A busy folder
    raises RunFolderBusyError and a full disk DiskFullError; a bad --out is left to the full parse."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in DEFAULT_OUT or int(os.environ.get("RANK", "0")) != 0:
        return
    if any(a == "--config" or a.startswith("--config=") for a in argv):
        return
    outs = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--out"]
    outs += [a.split("=", 1)[1] for a in argv if a.startswith("--out=")]
    if any(a.startswith("--ou") and a.split("=", 1)[0] != "--out" for a in argv):
        return  # an abbreviated --out: the full parse resolves it
    try:
        path = check_out(outs[-1] if outs else DEFAULT_OUT[command])
    except (OSError, ValueError):
        return  # a bad --out: the full parse reports it in its own words
    _lock(path, command)


def _holder(path: Path) -> str:
    """Who holds the lock of run folder `path`, from its holder record (read for up to 0.3 s: the
    holder writes it right after taking the lock; a record of a dead process on this host is a
    killed earlier holder's, about to be replaced)."""
    for _ in range(6):
        try:
            h = json.loads((path / f"{LOCK_NAME}.json").read_text())
            if h["host"] != platform.node() or pid_alive(int(h["pid"])):
                return (f"another slr-prune run (pid {h['pid']} on {h['host']}, slr-prune {h['command']}, "
                        f"since {h['since']})")
        except (OSError, ValueError, KeyError, TypeError):
            pass
        time.sleep(0.05)
    return "another slr-prune run (its holder record is not readable yet)"


