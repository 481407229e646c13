"""PruneSpec: which parameters to prune, in which sparsity form, to which ratio.

A spec is data: an ordered list of rules, each a glob over parameter names with a form and a
ratio, plus exclusions.  The first rule that matches a parameter decides it.  Only weights of
convolution and linear layers are candidates; biases and normalisation layers always stay dense,
and the first and the last candidate (stem and classifier) stay dense unless asked for.
`resolve(model)` turns a spec into {parameter name: ConstraintSet} and fails loudly when a rule
or an exclusion matches nothing.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from torch import nn

from .errors import SpecError
from .sets import FORMS, ConstraintSet, TopKSet, check_ratio
from .utils import CONV_LINEAR

__all__ = ["Rule", "PruneSpec", "FORMS", "prunable_weights", "parse_ratios", "parse_form_options", "form_options",
           "describe_form_options", "check_form_options", "coerce", "type_name"]


@dataclass(frozen=True)
class Rule:
    """Parameters whose name matches `pattern` (fnmatch glob) get `form` at `ratio`.

    `form` is a registered form (`FORMS`), or "N:M" shorthand such as "2:4" (form "nm" with
    options n and m).  `options` are the form's own parameters (every field of its set besides
    ratio and scope, e.g. N:M's n and m or a block shape), checked against the form and converted
    to their annotated types (a YAML list becomes a tuple).  `scope="global"` gives every
    parameter this rule matches one shared budget (forms with the `global_budget` trait).  Forms
    without a ratio option (N:M, pattern) fix their own density and ignore `ratio` (the command
    line refuses one).
    """

    pattern: str
    form: str = "unstructured"
    ratio: float = 0.0
    scope: str = "layer"
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        where = f"rule {self.pattern!r}"
        if not isinstance(self.options, Mapping):
            raise SpecError(f"{where}: options must be a mapping of the form's parameters, got {self.options!r}")
        if ":" in self.form:
            object.__setattr__(self, "options", _nm_shorthand(self.form, self.options, where))
            object.__setattr__(self, "form", "nm")
        if self.form not in FORMS:
            raise SpecError(f"{where}: unknown form {self.form!r}; valid forms are {', '.join(FORMS)} or 'N:M'")
        object.__setattr__(self, "ratio", check_ratio(self.ratio, where))
        if self.scope not in ("layer", "global"):
            raise SpecError(f"{where}: scope {self.scope!r} is not 'layer' or 'global'")
        if self.scope == "global" and not FORMS[self.form].traits["global_budget"]:
            valid = ", ".join(repr(f) for f in FORMS.list(global_budget=True))
            raise SpecError(
                f"{where}: a global budget compares magnitudes across layers and is "
                f"defined for form {valid} only, not {self.form!r}"
            )
        object.__setattr__(self, "options", check_form_options(self.form, self.options, where))
        self.make_set()  # validates the option values (e.g. N:M's 0 < n < m)

    @property
    def has_ratio(self) -> bool:
        """Whether the form takes a prune ratio (N:M and pattern fix their own density)."""
        return form_has_ratio(self.form)

    def make_set(self) -> ConstraintSet:
        entry = FORMS[self.form]
        given = {"ratio": self.ratio, "scope": self.scope}
        common = {f.name: given[f.name] for f in fields(entry.options) if f.name in given}
        return entry.build(**common, **self.options)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (tuples as lists) that `from_dict`, YAML and JSON read back to an equal rule."""
        d: dict[str, Any] = {"pattern": self.pattern, "form": self.form, "ratio": self.ratio}
        if self.scope != "layer":
            d["scope"] = self.scope
        if self.options:
            d["options"] = {k: _plain(v) for k, v in self.options.items()}
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "rule") -> Rule:
        """A rule from a mapping; the form's own parameters may also be top-level keys (`n`, `m`)."""
        if not isinstance(data, Mapping) or "pattern" not in data:
            raise SpecError(f"{where} must be a mapping with a 'pattern', got {data!r}")
        keys = {"pattern", "form", "ratio", "scope", "options"}
        extra = {k: v for k, v in data.items() if k not in keys}
        name = "nm" if ":" in str(data.get("form", "")) else data.get("form", "unstructured")
        own = set(form_options(name)) if name in FORMS else set()
        if set(extra) - own:
            raise SpecError(f"{where} has unknown keys {sorted(set(extra) - own)}; valid: {sorted(keys | own)}")
        options = dict(data.get("options") or {})
        clash = sorted(set(options) & set(extra))
        if clash:
            raise SpecError(f"{where} gives {', '.join(clash)} both as a key and in 'options'")
        return cls(**{k: v for k, v in data.items() if k in keys and k != "options"}, options={**options, **extra})


def _nm_shorthand(form: str, options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The options of form "N:M" (n and m), merged with `options` (which may not restate them)."""
    n, _, m = form.partition(":")
    if not (n.isdigit() and m.isdigit()):
        raise SpecError(f"{where}: form {form!r} is not N:M like '2:4'")
    clash = sorted({"n", "m"} & set(options))
    if clash:
        raise SpecError(f"{where}: form {form!r} already sets {', '.join(clash)}; use form 'nm' with options")
    return {**options, "n": int(n), "m": int(m)}


_NOT_FORM_OPTIONS = frozenset({"ratio", "scope", "budget"})  # rule fields, and the key resolve() gives a budget


def form_options(form: str) -> dict[str, dataclasses.Field]:
    """The form's own parameters: the fields of its options besides ratio, scope and budget."""
    return {f.name: f for f in fields(FORMS[form].options) if f.name not in _NOT_FORM_OPTIONS}


def describe_form_options(form: str) -> str:
    """The form's own parameters as text, e.g. "n (int, default 2), m (int, default 4)"."""
    return ", ".join(f"{name} ({type_name(f.type)}{_default_text(f)})"
                     for name, f in form_options(form).items()) or "none"


def check_form_options(form: str, options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """`options` checked against the form's own parameters and converted to their types."""
    valid = form_options(form)
    for key in options:
        if key not in valid:
            offer = f"its options: {describe_form_options(form)}" if valid else "it takes none besides ratio/scope"
            raise SpecError(f"{where}: form {form!r} has no option {key!r}; {offer}")
    return {k: coerce(v, valid[k].type, f"{where}: form {form!r} option {k!r}") for k, v in options.items()}


def parse_form_options(form: str, items: Iterable[str], where: str = "--form-option") -> dict[str, Any]:
    """KEY=VALUE items (the command line's form options), each VALUE read as YAML ("4,1" is a list)."""
    import yaml

    name = "nm" if ":" in form else form
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise SpecError(f"{where} {item!r} is not KEY=VALUE")
        try:
            value = yaml.safe_load(text) if text.strip() else text
        except yaml.YAMLError:
            value = text
        if isinstance(value, str) and "," in value:
            value = [yaml.safe_load(v) for v in value.split(",")]
        out[key] = value
    return check_form_options(name, out, where) if name in FORMS else out


def coerce(value: Any, tp: Any, where: str) -> Any:
    """`value` (from Python, YAML or JSON) as a value of the annotation `tp`: a list becomes a tuple
    for a tuple annotation, an int a float for a float one; anything that does not fit raises."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return coerce(value, arg, where)
            except SpecError:
                continue
    elif origin is typing.Literal:
        if value in args:
            return value
    elif (origin in (tuple, list) or tp in (tuple, list)) and isinstance(value, list | tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise SpecError(f"{where}: {value!r} is not {type_name(tp)} ({len(args)} items)")
            items = [coerce(v, a, where) for v, a in zip(value, args, strict=True)]
        else:
            items = [coerce(v, args[0] if args else Any, where) for v in value]
        return list(items) if (origin or tp) is list else tuple(items)
    elif tp is type(None):
        if value is None:
            return None
    elif tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    elif isinstance(tp, type) and isinstance(value, tp) and (tp is bool or not isinstance(value, bool)):
        return value
    raise SpecError(f"{where}: {value!r} is not {type_name(tp)}")


def type_name(tp: Any) -> str:
    """An annotation as short text: "int", "tuple[int, int]", "str | None"."""
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    for prefix in ("typing.", "collections.abc.", "pathlib."):
        tp = str(tp).replace(prefix, "")
    return str(tp)


def _default_text(f: dataclasses.Field) -> str:
    return "" if f.default is dataclasses.MISSING else f", default {_plain(f.default)}"


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (what YAML and JSON write)."""
    return [_plain(v) for v in value] if isinstance(value, list | tuple) else value


def parse_ratios(text: str, where: str = "ratios") -> dict[str, float]:
    """'glob=ratio,glob=ratio' → {glob: ratio} (the command line's per-layer ratios)."""
    out: dict[str, float] = {}
    for item in text.split(","):
        glob, sep, value = item.partition("=")
        if not sep or not glob.strip():
            raise SpecError(f"{where} item {item!r} is not glob=ratio")
        try:
            out[glob.strip()] = float(value)
        except ValueError as e:
            raise SpecError(f"{where} item {item!r}: {value!r} is not a number") from e
    return out


def form_has_ratio(form: str) -> bool:
    """Whether the form (or "N:M") takes a prune ratio; an unknown name says True so that the rule
    reports it as unknown."""
    name = "nm" if ":" in form else form
    return name not in FORMS or any(f.name == "ratio" for f in fields(FORMS[name].options))


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Weights of conv and linear layers, in registration order: the candidates for pruning."""
    out = {}
    for mod_name, module in model.named_modules():
        if isinstance(module, CONV_LINEAR) and isinstance(module.weight, nn.Parameter):
            out[f"{mod_name}.weight" if mod_name else "weight"] = module.weight
    return out


@dataclass
class PruneSpec:
    """Ordered pruning rules plus exclusions; see the module docstring for the semantics."""

    rules: list[Rule]
    exclude: list[str] = field(default_factory=list)
    include_first: bool = False
    include_last: bool = False

    def __post_init__(self) -> None:
        self.rules = [r if isinstance(r, Rule) else Rule.from_dict(r, f"rule {i}") for i, r in enumerate(self.rules)]
        if not self.rules:
            raise SpecError("a PruneSpec needs at least one rule")
        if isinstance(self.exclude, str):
            self.exclude = [self.exclude]
        self.exclude = list(self.exclude)
        bad = [g for g in self.exclude if not isinstance(g, str)]
        if bad:
            raise SpecError(f"exclude must be a list of parameter globs (strings), got {bad[0]!r}")
        for key in ("include_first", "include_last"):
            value = getattr(self, key)
            if not isinstance(value, bool):  # "no" or 0 is not read as a boolean: a value is never reinterpreted
                raise SpecError(f"{key} must be true or false, got {value!r}")

    # ---- constructors -------------------------------------------------------------------
    @classmethod
    def uniform(cls, ratio: float, form: str = "unstructured", exclude: Iterable[str] = (),
                form_options: Mapping[str, Any] | None = None, **options: Any) -> PruneSpec:
        """Every candidate layer at the same ratio (`form_options`: the form's own parameters)."""
        return cls([Rule("*", form=form, ratio=ratio, options=dict(form_options or {}))], exclude=list(exclude),
                   **options)

    @classmethod
    def layerwise(cls, ratios: Mapping[str, float], form: str = "unstructured", exclude: Iterable[str] = (),
                  form_options: Mapping[str, Any] | None = None, **options: Any) -> PruneSpec:
        """One rule per glob → ratio entry, in the mapping's order (e.g. a paper's yaml)."""
        return cls([Rule(g, form=form, ratio=r, options=dict(form_options or {})) for g, r in ratios.items()],
                   exclude=list(exclude), **options)

    @classmethod
    def global_budget(cls, ratio: float, exclude: Iterable[str] = (), **options: Any) -> PruneSpec:
        """One magnitude threshold across all candidate layers, removing `ratio` of their weights."""
        return cls([Rule("*", ratio=ratio, scope="global")], exclude=list(exclude), **options)

    # ---- resolution ---------------------------------------------------------------------
    def resolve(self, model: nn.Module) -> dict[str, ConstraintSet]:
        """{parameter name: set} for every parameter this spec prunes, in model order."""
        candidates = prunable_weights(model)
        all_names = [n for n, _ in model.named_parameters()]
        for glob in self.exclude:
            if not fnmatch.filter(all_names, glob):
                raise SpecError(f"exclusion {glob!r} matches no parameter of the model" + _hint(glob, all_names))
        names = list(candidates)
        skipped = set()
        if names and not self.include_first:
            skipped.add(names[0])
        if names and not self.include_last:
            skipped.add(names[-1])
        eligible = [
            n for n in names
            if n not in skipped and not any(fnmatch.fnmatchcase(n, g) for g in self.exclude)
        ]
        global_sets: dict[int, ConstraintSet] = {}
        out: dict[str, ConstraintSet] = {}
        for i, rule in enumerate(self.rules):
            matched = [n for n in eligible if fnmatch.fnmatchcase(n, rule.pattern)]
            if not matched:
                raise SpecError(_no_match(rule.pattern, all_names, candidates, skipped, self.exclude))
            for n in matched:
                if n in out:
                    continue
                s = global_sets.setdefault(i, replace(rule.make_set(), budget=f"rule {i} ({rule.pattern})")) \
                    if rule.scope == "global" else rule.make_set()
                s.validate(n, candidates[n].shape)
                out[n] = s
        if not out:
            raise SpecError("the spec matches no prunable parameter of the model")
        return {n: out[n] for n in names if n in out}

    def describe(self, model: nn.Module) -> str:
        """A table of what will be pruned: name, shape, form, ratio, params, kept."""
        sets = self.resolve(model)
        params = prunable_weights(model)
        header = ("parameter", "shape", "form", "ratio", "params", "kept")
        rows = []
        total = kept_total = 0
        global_numel = sum(params[n].numel() for n, s in sets.items() if _is_global(s))
        for name, p in params.items():
            s = sets.get(name)
            numel = p.numel()
            total += numel
            if s is None:
                rows.append((name, _shape(p.shape), "dense", "-", f"{numel:,}", f"{numel:,}"))
                kept_total += numel
                continue
            if _is_global(s):
                kept, ratio = "global", f"{s.ratio:.3f}*"
                kept_total += numel * (1 - s.ratio)
            else:
                k = s.kept(p.shape)
                kept, ratio = f"{k:,}", f"{1 - k / numel:.3f}"
                kept_total += k
            rows.append((name, _shape(p.shape), s.label, ratio, f"{numel:,}", kept))
        rows.append(("total (conv/linear weights)", "", "", f"{1 - kept_total / total:.3f}",
                     f"{total:,}", f"{math.floor(kept_total):,}"))
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)) for r in [header, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        if global_numel:
            lines.append("* global budget: one threshold across the starred layers; per-layer "
                         "counts are known only after projection")
        return "\n".join(lines)

    # ---- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "rules": [r.to_dict() for r in self.rules],
            "exclude": list(self.exclude),
            "include_first": self.include_first,
            "include_last": self.include_last,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PruneSpec:
        if not isinstance(data, Mapping):
            raise SpecError(f"a spec must be a mapping with 'rules', got {type(data).__name__}")
        allowed = {"rules", "exclude", "include_first", "include_last"}
        unknown = set(data) - allowed
        if unknown:
            raise SpecError(f"unknown spec keys {sorted(unknown)}; valid keys are {sorted(allowed)}")
        if "rules" not in data:
            raise SpecError("a spec needs a 'rules' list")
        if not isinstance(data["rules"], list):
            raise SpecError(f"a spec's 'rules' must be a list of rules, got {type(data['rules']).__name__} "
                            f"{data['rules']!r}")
        exclude = data.get("exclude", [])
        globs = [exclude] if isinstance(exclude, str) else exclude
        if not isinstance(globs, list) or not all(isinstance(g, str) for g in globs):
            raise SpecError(f"a spec's 'exclude' must be a list of parameter globs, got {exclude!r}")
        for i, r in enumerate(data["rules"]):
            if not isinstance(r, Mapping) or "pattern" not in r:
                raise SpecError(f"rule {i} must be a mapping with a 'pattern', got {r!r}")
        rules = [Rule.from_dict(r, f"rule {i}") for i, r in enumerate(data["rules"])]
        return cls(rules, **{k: v for k, v in data.items() if k != "rules"})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> PruneSpec:
        return cls.from_dict(json.loads(text))

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> PruneSpec:
        import yaml

        return cls.from_dict(yaml.safe_load(text))

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.write_text(self.to_json() if path.suffix == ".json" else self.to_yaml())

    @classmethod
    def load(cls, path: str | Path) -> PruneSpec:
        """Read a spec from .yaml/.yml or .json."""
        path = Path(path)
        if not path.is_file():
            raise SpecError(f"spec file {str(path)!r} does not exist")
        if path.suffix not in (".yaml", ".yml", ".json"):
            raise SpecError(f"spec file {str(path)!r}: expected a .yaml, .yml or .json file")
        text = path.read_text()
        if path.suffix == ".json":
            try:
                json.loads(text)
            except json.JSONDecodeError as e:
                raise SpecError(f"spec file {str(path)!r} line {e.lineno}: not valid JSON ({e.msg})") from e
            return cls.from_json(text)
        import yaml

        try:
            yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise SpecError(f"spec file {str(path)!r}{where}: not valid YAML ({getattr(e, 'problem', e)})") from e
        return cls.from_yaml(text)


def _is_global(s: ConstraintSet) -> bool:
    return isinstance(s, TopKSet) and s.scope == "global"


def _shape(shape) -> str:
    return "×".join(str(d) for d in shape)


def _hint(glob: str, names: list[str]) -> str:
    close = difflib.get_close_matches(glob, names, n=3, cutoff=0.6)
    if close:
        return f"; did you mean {', '.join(close)}?"
    tops = list(dict.fromkeys(n.split(".")[0] for n in names))
    return f"; names start with: {', '.join(tops[:12])}{' ...' if len(tops) > 12 else ''}"


def _no_match(glob: str, all_names: list[str], candidates: Mapping[str, Any], skipped: set[str],
              exclude: list[str]) -> str:
    hits = fnmatch.filter(all_names, glob)
    if not hits:
        return f"rule {glob!r} matches no parameter of the model" + _hint(glob, list(candidates) or all_names)
    prunable = [h for h in hits if h in candidates]
    if not prunable:
        return (f"rule {glob!r} matches only parameters that are never pruned (biases, norm layers): "
                f"{', '.join(hits[:3])}; prunable weights are conv/linear weights like {next(iter(candidates), '')!r}")
    reasons = []
    if any(h in skipped for h in prunable):
        reasons.append("the first/last layer (set include_first/include_last)")
    if any(fnmatch.fnmatchcase(h, g) for h in prunable for g in exclude):
        reasons.append("an exclusion")
    return f"rule {glob!r} matches only parameters kept dense by {' and '.join(reasons)}: {', '.join(prunable[:3])}"
