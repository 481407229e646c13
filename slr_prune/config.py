"""Typed, versioned method configs: frozen dataclasses, validated without a model.

A method's options are one `Config` subclass; a method that extends another extends its config
(fields are inherited, never re-declared).  Validation lives in `__post_init__`, so a bad value is
refused before a model exists.  `option(default, help)` records the help (and, where it differs
from the field's name, the flag) that `cli/options.py` turns into a command-line flag; a field
without help is API-only.  `recommended()` is the setting a new run gets (the Python API and the
command line share it); `to_dict`/`from_dict` are the JSON form, stamped with `VERSION`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

__all__ = ["Config", "option", "flag_name", "is_int"]

C = TypeVar("C", bound="Config")


def option(default: Any, help: str = "", *, flag: str | None = None,
           choices: Callable[[], Sequence[str]] | None = None) -> Any:
    """A config field with its help text (and its flag name when not the field's, dashed).

    `choices` returns the valid values when the command line is built (e.g. a registry's names,
    so an entry registered after import is offered too); a `Literal` annotation fixes them instead.
    """
    metadata = {"help": help, **({"flag": flag} if flag else {}), **({"choices": choices} if choices else {})}
    if isinstance(default, list | dict | set):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def is_int(value: Any) -> bool:
    """Whether `value` is an integer and not a bool (True is not read as 1: never reinterpreted)."""
    return isinstance(value, int) and not isinstance(value, bool)


def flag_name(f: dataclasses.Field) -> str:
    """The command-line name of a field: `metadata["flag"]`, else the field's name with dashes."""
    return f.metadata.get("flag") or f.name.replace("_", "-")


@dataclass(frozen=True)
class Config:
    """Base of method configs: frozen, validated on construction, versioned JSON."""

    VERSION: ClassVar[int] = 1
    """Bumped when a field changes meaning; `from_dict` refuses other versions."""

    @classmethod
    def recommended(cls: type[C]) -> C:
        """The setting a new run gets when the user chooses none (subclasses override)."""
        return cls()

    @classmethod
    def given(cls: type[C], config: Config | None, options: Mapping[str, Any], owner: str) -> C:
        """What a method built as `owner(config)` or `owner(**options)` runs with: `config` (an
        instance of `cls`), or `cls` built from `options` (which validates them); not both."""
        if config is None:
            return cls(**options)
        if options:
            raise TypeError(f"{owner}: give a config or options ({', '.join(options)}), not both")
        if not isinstance(config, cls):
            raise TypeError(f"{owner} takes a {cls.__name__}, got {type(config).__name__}")
        return config

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain data, with the config's version."""
        return {"version": self.VERSION, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """The config `to_dict` wrote (a missing version is taken as the current one)."""
        values = dict(data)
        version = values.pop("version", cls.VERSION)
        if version != cls.VERSION:
            raise ValueError(f"{cls.__name__} version {version!r} cannot be read (this is version {cls.VERSION})")
        return cls(**values)
