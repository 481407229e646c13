"""Console manners: progress bars only where someone watches them, epoch lines always.

A tqdm bar redraws itself with carriage returns; written to a log file (`make demo > log 2>&1`,
a batch job, CI) every redraw stays in the file.  So bars are drawn only when the stream they
write to, stderr, is a terminal (or tqdm.auto chose its notebook widget, which writes no
frames), while the one-line-per-epoch summaries print in every case.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["bars_wanted", "progress_bar", "print_line"]


def bars_wanted(enabled: bool = True) -> bool:
    """True when progress bars are `enabled` and would land on a terminal (or a notebook widget)."""
    if not enabled:
        return False
    from tqdm.auto import tqdm

    is_tty = getattr(sys.stderr, "isatty", None)
    return bool(is_tty and is_tty()) or tqdm.__module__.startswith("tqdm.notebook")


def progress_bar(iterable: Iterable[Any], *, enabled: bool = True, **options: Any) -> Any:
    """`iterable` wrapped in a tqdm bar, silent (no frames at all) unless `bars_wanted(enabled)`."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not bars_wanted(enabled), **options)


def print_line(line: str) -> None:
    """Print one summary line to stdout, above a live bar when one is drawn."""
    from tqdm.auto import tqdm

    tqdm.write(line)
    sys.stdout.flush()  # a log file shows each epoch as it ends
