"""The `slr-prune` command (the parser, the commands and the error handling are in app.py).

`main` takes the run folder's lock from the raw arguments before anything heavy is imported, so a
second run on a folder in use is refused in a fraction of a second (runfolder.py).
"""

from __future__ import annotations

import sys
from typing import Any

from ..errors import DiskFullError, RunFolderBusyError
from .runfolder import RESUMABLE, disk_full_line, early_lock, release_all

__all__ = ["main", "build_parser"]


def main(argv: list[str] | None = None) -> int:
    """Run `slr-prune` with `argv` (default: the process's arguments); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        early_lock(argv)
    except (RunFolderBusyError, DiskFullError) as e:
        command = next(a for a in argv if not a.startswith("-"))
        line = disk_full_line(e, command in RESUMABLE) if isinstance(e, DiskFullError) else str(e)
        print(f"slr-prune {command}: error: {line}", file=sys.stderr)
        return 2
    try:
        from .app import main as run

        return run(argv)
    finally:
        release_all()


_FROM_APP = ("build_parser", "parse", "COMMANDS", "ERRORS", "RUN_FOLDER_COMMANDS")
"""The application's names, loaded with it on first use (submodules import as usual)."""


def __getattr__(name: str) -> Any:
    if name not in _FROM_APP:
        raise AttributeError(f"module 'slr_prune.cli' has no attribute {name!r}")
    from . import app

    return getattr(app, name)
