"""Self-describing registries (timm-style) for solvers, criteria, sparsity forms, tasks and models.

An entry is registered where it is defined, with a decorator, and carries everything the outer
layers need to offer it: the builder, its options dataclass (a config class given explicitly, as
solvers do, or else derived from the builder's keyword signature, so defaults live in one place),
keyword arguments fixed by the entry (``l1`` is ``WeightNorm(p=1)``) and traits (each registry
declares its own: ``trains``, ``penalty`` and ``needs_task`` for solvers, ``workflow`` for
criteria, ``global_budget`` for forms).  The CLI's choices and help, ``prune()``,
``structured_prune()`` and ``PruneSpec`` read the registries.

Adding a built-in method takes its module with the decorator plus the import that runs it
(``solvers/__init__.py``, ``adapters/__init__.py``, ``structured/__init__.py``).  There are no
entry points: an out-of-tree entry reaches ``slr-prune`` only if its module is imported first.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["Entry", "Registry", "UnknownNameError", "options_dataclass"]

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A name that no registry entry has; the message lists the valid names."""


def options_dataclass(builder: Callable[..., Any], name: str, *, skip: frozenset[str] = frozenset(),
                      help: Mapping[str, str] | None = None, flags: Mapping[str, str] | None = None) -> type:
    """A dataclass of `builder`'s options: its keyword parameters, annotations and defaults kept.

    Positional parameters without a default (a solver's model and spec) are inputs, not options;
    parameters in `skip` (fixed by the entry, or supplied by the workflow) are left out too.
    `help` and `flags` become each field's ``metadata["help"]`` and ``metadata["flag"]`` (the
    command-line name when it differs from the field's).
    """
    target = builder.__init__ if inspect.isclass(builder) else builder
    hints = typing.get_type_hints(target)
    fields = []
    for p in inspect.signature(target).parameters.values():
        positional_input = p.kind is not p.KEYWORD_ONLY and p.default is p.empty
        if p.name in ("self", *skip) or positional_input or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = p.default if p.default is not p.empty else dataclasses.MISSING
        meta = {"help": (help or {}).get(p.name, ""), "flag": (flags or {}).get(p.name, p.name.replace("_", "-"))}
        fields.append((p.name, hints.get(p.name, Any), field(default=default, metadata=meta)))
    options = dataclasses.make_dataclass(name, fields, frozen=True)
    options.__module__ = getattr(builder, "__module__", __name__)
    return options


def _class_dicts(obj: Any, attr: str) -> dict[str, str]:
    """`attr` merged along the class hierarchy (subclasses win): option help and flag names."""
    out: dict[str, str] = {}
    for klass in reversed(obj.__mro__ if inspect.isclass(obj) else (obj,)):
        out.update(vars(klass).get(attr, {}) if inspect.isclass(klass) else getattr(klass, attr, {}))
    return out


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered builder: `build(*args, **options)` merges the entry's fixed arguments."""

    name: str
    builder: Callable[..., T]
    options: type
    fixed: Mapping[str, Any] = field(default_factory=dict)
    traits: Mapping[str, Any] = field(default_factory=dict)
    help: str = ""

    def build(self, *args: Any, **options: Any) -> T:
        clash = sorted(set(options) & set(self.fixed))
        if clash:
            raise TypeError(f"{self.name}: {', '.join(clash)} is fixed by the entry")
        return self.builder(*args, **self.fixed, **options)

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """`options` as a plain dict; unknown names raise TypeError naming the valid ones."""
        if dataclasses.is_dataclass(options) and not isinstance(options, type):
            options = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
        valid = {f.name for f in dataclasses.fields(self.options)}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise TypeError(f"{self.name}: unknown option {', '.join(map(repr, unknown))}; "
                            f"valid: {', '.join(sorted(valid)) or 'none'}")
        return dict(options)


class Registry(Generic[T]):
    """Named entries of one kind (`kind` names them in errors: "unknown solver 'x'")."""

    def __init__(self, kind: str, defaults: Mapping[str, Any] | None = None):
        self.kind = kind
        self.defaults = dict(defaults or {})
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, builder: Callable[..., T] | None = None, *, help: str | None = None,
                 fixed: Mapping[str, Any] | None = None, skip: tuple[str, ...] = (),
                 option_help: Mapping[str, str] | None = None, config: type | None = None,
                 **traits: Any) -> Any:
        """Register `builder` as `name` (or decorate it).

        `config`, a dataclass, is the entry's options as it is; without one they are derived from
        the builder's signature: `skip` names keyword parameters the workflow supplies (not user
        options), and help comes from `option_help` and the class attributes `option_help` /
        `option_flags` along the builder's hierarchy.  Options without help are API-only (the
        command line does not offer them).  Traits not given take the registry's defaults.
        """

        def add(obj: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            fixed_ = dict(fixed or {})
            doc = help if help is not None else (inspect.getdoc(obj) or "").split("\n")[0]
            hints = {**_class_dicts(obj, "option_help"), **(option_help or {})}
            options = config or options_dataclass(obj, f"{_camel(name)}Options",
                                                  skip=frozenset(fixed_) | frozenset(skip),
                                                  help=hints, flags=_class_dicts(obj, "option_flags"))
            self._entries[name] = Entry(name, obj, options, fixed_, {**self.defaults, **traits}, doc)
            return obj

        return add(builder) if builder is not None else add

    def unregister(self, name: str) -> None:
        self.get(name)
        del self._entries[name]

    def get(self, name: str) -> Entry[T]:
        if name not in self._entries:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self._entries)}")
        return self._entries[name]

    def list(self, pattern: str = "*", **traits: Any) -> list[str]:
        """Names matching the glob `pattern` whose traits equal the given ones, in registration order."""
        return [n for n, e in self._entries.items() if fnmatch.fnmatchcase(n, pattern)
                and all(e.traits.get(k) == v for k, v in traits.items())]

    def build(self, name: str, *args: Any, **options: Any) -> T:
        entry = self.get(name)
        return entry.build(*args, **entry.check_options(options))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> Entry[T]:
        return self.get(name)

    def entries(self) -> list[Entry[T]]:
        return list(self._entries.values())


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace(":", "_").replace("-", "_").split("_") if part)
