"""Command-line options generated from registry entries: one flag per option field, added once.

A field becomes `--<metadata["flag"]>` with its type, choices (from a `Literal` annotation) and
help; a field without help is API-only.  Flags default to None, so a run passes only what the
user gave and every entry keeps its own default (the help lists them per entry when they differ).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import Any

from ..registry import Entry

__all__ = ["add_entry_options", "entry_options", "convert"]


def _base_type(tp: Any) -> Any:
    """`float | None` → float; Literal stays; Optional unwraps."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp


def convert(text: str, tp: Any, where: str) -> Any:
    """`text` as a value of annotation `tp` (int, float, bool, str, a Literal, optionally None)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and text.lower() in ("none", "null"):
        return None
    base = _base_type(tp)
    if typing.get_origin(base) is typing.Literal:
        choices = [str(c) for c in typing.get_args(base)]
        if text not in choices:
            raise ValueError(f"{where}: {text!r} is not one of {', '.join(choices)}")
        return text
    if base is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{where}: {text!r} is not true or false")
        return text.lower() in ("true", "1", "yes")
    if base in (int, float):
        try:
            return base(text)
        except ValueError as e:
            raise ValueError(f"{where}: {text!r} is not {'an integer' if base is int else 'a number'}") from e
    if base is str or base is Any:
        return text
    raise ValueError(f"{where}: this option takes a structured value; set it from Python")


def _dest(f: dataclasses.Field) -> str:
    return f.metadata["flag"].replace("-", "_")


def _shown_default(entry: Entry, f: dataclasses.Field) -> Any:
    """The value a run gets when the flag is not given: the entry's run default, else the field's."""
    run_defaults = getattr(entry.builder, "run_defaults", None)
    return run_defaults({}).get(f.name, f.default) if run_defaults is not None else f.default


def add_entry_options(group: argparse._ArgumentGroup, entries: Iterable[Entry], what: str) -> None:
    """Add the options of `entries` to `group`, each flag once, saying which entries use it."""
    by_flag: dict[str, list[tuple[Entry, dataclasses.Field]]] = {}
    for entry in entries:
        for f in dataclasses.fields(entry.options):
            if f.metadata.get("help"):
                by_flag.setdefault(f.metadata["flag"], []).append((entry, f))
    for flag, users in by_flag.items():
        entry, f = users[0]
        tp = _base_type(f.type)
        defaults = {e.name: _shown_default(e, g) for e, g in users}
        shown = (f"{next(iter(defaults.values()))}" if len(set(map(repr, defaults.values()))) == 1
                 else ", ".join(f"{n} {v}" for n, v in defaults.items()))
        names = ", ".join(e.name for e, _ in users)
        help_ = f"{f.metadata['help']} [{what} {names}; default: {shown}]".replace("%", "%%")
        kwargs: dict[str, Any] = {"default": None, "help": help_, "dest": _dest(f)}
        if tp is bool:
            kwargs["action"] = "store_true"
        elif typing.get_origin(tp) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(tp))
        else:
            kwargs["type"] = tp if tp in (int, float, str) else str
            kwargs["metavar"] = {int: "N", float: "X"}.get(tp, "VALUE")
        group.add_argument(f"--{flag}", **kwargs)


def entry_options(args: argparse.Namespace, entry: Entry) -> dict[str, Any]:
    """The options of `entry` the user gave (flags left at None or False keep the entry's default)."""
    given = {}
    for f in dataclasses.fields(entry.options):
        value = getattr(args, _dest(f), None) if f.metadata.get("help") else None
        if value is not None:  # flags default to None: only what the user gave
            given[f.name] = value
    run_defaults = getattr(entry.builder, "run_defaults", None)
    return run_defaults(given) if run_defaults is not None else given
