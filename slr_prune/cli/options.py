"""Command-line flags generated from dataclasses: one generator for every config.

A field with help (``metadata["help"]``, see `slr_prune.config.option`) becomes
`--<prefix><flag>` with its type, choices (from a `Literal` annotation) and help; a field without
help is API-only.  A bool field is a switch that sets the opposite of its default (``amp`` is
``--no-amp``); a tuple field takes a comma-separated list.  Two uses:

* `add_config_flags` / `config_values`: one config (TrainConfig, SearchConfig, LatencyOptions),
  its flags defaulting to its own defaults;
* `add_entry_options` / `entry_options`: the options of many registry entries (solvers,
  criteria) in one group, each flag once, defaulting to None so that a run passes only what the
  user gave and every entry keeps its own default (the help lists them per entry).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..config import Config, flag_name
from ..registry import Entry

__all__ = ["add_config_flags", "config_values", "add_entry_options", "entry_options", "given_entry_flags",
           "unused_flags", "convert"]


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotations of dataclass `cls` (string annotations evaluated)."""
    return typing.get_type_hints(cls)


def _flagged(cls: type, only: Iterable[str] | None = None) -> list[dataclasses.Field]:
    """The fields of `cls` the command line offers (those with help), optionally only some."""
    keep = set(only) if only is not None else None
    return [f for f in dataclasses.fields(cls)
            if f.metadata.get("help") and (keep is None or f.name in keep)]


def _base_type(tp: Any) -> Any:
    """`float | None` → float; Literal stays; Optional unwraps."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


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


def _argument(tp: Any, default: Any, help: str, dest: str,
              choices: Callable[[], Sequence[str]] | None = None) -> dict[str, Any]:
    """add_argument keywords for a field of annotation `tp` whose flag defaults to `default`
    (`choices`, from the field's metadata, gives its valid values now)."""
    tp = _base_type(tp)
    kwargs: dict[str, Any] = {"default": default, "help": help.replace("%", "%%"), "dest": dest}
    if choices is not None:
        kwargs["choices"] = list(choices())
    elif tp is bool:
        kwargs["action"] = "store_true"
    elif typing.get_origin(tp) is typing.Literal:
        kwargs["choices"] = list(typing.get_args(tp))
    elif typing.get_origin(tp) is tuple:
        kwargs.update(type=_comma_list, metavar="A,B,...",
                      default=",".join(default) if isinstance(default, tuple) else default)
    else:
        kwargs["type"] = tp if tp in (int, float, str) else str
        kwargs["metavar"] = {int: "N", float: "X"}.get(tp, "VALUE")
    return kwargs


def _dest(f: dataclasses.Field, prefix: str = "") -> str:
    return (prefix + flag_name(f)).replace("-", "_")


def add_config_flags(group: argparse._ArgumentGroup, cls: type, *, prefix: str = "",
                     only: Iterable[str] | None = None, defaults: Mapping[str, Any] | None = None,
                     help: Mapping[str, str] | None = None) -> None:
    """Add a flag `--<prefix><flag>` for each offered field of dataclass `cls` (or those in `only`),
    defaulting to the field's default or to `defaults[name]`; `help` overrides a field's help."""
    types_ = field_types(cls)
    for f in _flagged(cls, only):
        default = (defaults or {}).get(f.name, f.default)
        text = (help or {}).get(f.name, f.metadata["help"])
        if types_[f.name] is bool:  # a switch sets the opposite of the default (amp: --no-amp)
            kwargs = {"action": "store_true", "dest": _dest(f, prefix), "help": text.replace("%", "%%")}
        else:
            kwargs = _argument(types_[f.name], default, text, _dest(f, prefix), f.metadata.get("choices"))
        group.add_argument(f"--{prefix}{flag_name(f)}", **kwargs)


def config_values(args: argparse.Namespace, cls: type, *, prefix: str = "",
                  only: Iterable[str] | None = None) -> dict[str, Any]:
    """The values of `cls`'s flags that the parser defined, by field name (switches of a True
    default turned back into the field's value)."""
    types_ = field_types(cls)
    out: dict[str, Any] = {}
    for f in _flagged(cls, only):
        value = getattr(args, _dest(f, prefix), dataclasses.MISSING)
        if value is dataclasses.MISSING:
            continue
        out[f.name] = (not value) if types_[f.name] is bool and f.default else value
    return out


def _shown_default(entry: Entry, f: dataclasses.Field) -> Any:
    """The value a run gets when the flag is not given: the config's recommended one, else the field's."""
    if issubclass(entry.options, Config):
        return getattr(entry.options.recommended(), f.name)
    return f.default


def add_entry_options(group: argparse._ArgumentGroup, entries: Iterable[Entry], what: str) -> None:
    """Add the options of `entries` to `group`, each flag once, saying which entries use it."""
    by_flag: dict[str, list[tuple[Entry, dataclasses.Field]]] = {}
    for entry in entries:
        for f in _flagged(entry.options):
            by_flag.setdefault(flag_name(f), []).append((entry, f))
    for flag, users in by_flag.items():
        entry, f = users[0]
        defaults = {e.name: _shown_default(e, g) for e, g in users}
        shown = (f"{next(iter(defaults.values()))}" if len(set(map(repr, defaults.values()))) == 1
                 else ", ".join(f"{n} {v}" for n, v in defaults.items()))
        names = ", ".join(e.name for e, _ in users)
        help_ = f"{f.metadata['help']} [{what} {names}; default: {shown}]"
        group.add_argument(f"--{flag}", **_argument(field_types(entry.options)[f.name], None, help_, _dest(f),
                                                    f.metadata.get("choices")))


def entry_options(args: argparse.Namespace, entry: Entry) -> dict[str, Any]:
    """The options of `entry` the user gave (flags left at None or False keep the entry's default)."""
    given = {}
    for f in _flagged(entry.options):
        value = getattr(args, _dest(f), None)
        if value is not None:  # flags default to None: only what the user gave
            given[f.name] = value
    return given


def given_entry_flags(args: argparse.Namespace, entries: Iterable[Entry]) -> dict[str, str]:
    """{flag: field name} of the entries' options the user gave (flags default to None: a flag that
    is not None was given, on the command line or in --config)."""
    given = {}
    for entry in entries:
        for f in _flagged(entry.options):
            if getattr(args, _dest(f), None) is not None:
                given[flag_name(f)] = f.name
    return given


def unused_flags(args: argparse.Namespace, entries: Iterable[Entry], chosen: Entry | None) -> list[str]:
    """The flags of `entries` the user gave that `chosen` (None: no entry) has no option for."""
    mine = {f.name for f in dataclasses.fields(chosen.options)} if chosen is not None else set()
    return [flag for flag, name in given_entry_flags(args, entries).items() if name not in mine]
