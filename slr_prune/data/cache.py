"""The cache of generated datasets: where it lives, and folders in it written once.

The generators are deterministic in their parameters, so a folder named after them is written
once and reused.  It is written into a temporary sibling and renamed into place, so an
interrupted run never leaves a half-written folder under the final name, and of two runs racing
to write it the second uses the first's copy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["cache_root", "cached_folder"]


def cache_root() -> Path:
    """$SLR_PRUNE_CACHE, else $XDG_CACHE_HOME/slr_prune, else ~/.cache/slr_prune; a per-user
    folder in the temp folder when the default cannot be created or written."""
    env = os.environ.get("SLR_PRUNE_CACHE")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "slr_prune"
    try:
        base.mkdir(parents=True, exist_ok=True)
        if os.access(base, os.W_OK):
            return base
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"slr_prune-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def cached_folder(name: str, write: Callable[[Path], object], required: Sequence[str],
                  cache_dir: str | Path | None = None,
                  announce: Callable[[Path, bool], None] | None = None) -> Path:
    """The folder `name` under `cache_dir` (default `cache_root()`), written once by `write(folder)`.

    The folder is complete when it holds every file in `required`; otherwise `write` fills a
    temporary sibling that is then renamed into place.  `announce(folder, writing)` runs first,
    with writing=True when the folder is about to be written, False when it is reused.
    """
    target = (Path(cache_dir) if cache_dir else cache_root()) / name

    def complete() -> bool:
        return all((target / f).is_file() for f in required)

    if complete():
        if announce is not None:
            announce(target, False)
        return target
    if announce is not None:
        announce(target, True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first: use its copy
            if not complete():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
