"""PruneSpec: which parameters to prune, in which sparsity form, to which ratio.

A spec is data: an ordered list of rules, each a glob over parameter names with a form and a
ratio, plus exclusions.  The first rule that matches a parameter decides it.  Only weights of
convolution and linear layers are candidates; biases and normalisation layers always stay dense,
and the first and the last candidate (stem and classifier) stay dense unless asked for.
`resolve(model)` turns a spec into {parameter name: ConstraintSet} and fails loudly when a rule
or an exclusion matches nothing.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from torch import nn

from .errors import SpecError
from .sets import FORMS, ConstraintSet, TopKSet, check_ratio
from .utils import CONV_LINEAR

__all__ = ["Rule", "PruneSpec", "FORMS", "prunable_weights", "parse_ratios"]


@dataclass(frozen=True)
class Rule:
    """Parameters whose name matches `pattern` (fnmatch glob) get `form` at `ratio`.

    `form` is a registered form (`FORMS`), or "N:M" shorthand such as "2:4".  `scope="global"`
    gives every parameter this rule matches one shared budget (forms with the `global_budget`
    trait).  Forms without a ratio option (N:M, pattern) fix their own density and ignore
    `ratio` (the command line refuses one).
    """

    pattern: str
    form: str = "unstructured"
    ratio: float = 0.0
    scope: str = "layer"
    n: int = 2
    m: int = 4

    def __post_init__(self) -> None:
        if ":" in self.form:
            n, _, m = self.form.partition(":")
            if not (n.isdigit() and m.isdigit()):
                raise SpecError(f"rule {self.pattern!r}: form {self.form!r} is not N:M like '2:4'")
            object.__setattr__(self, "form", "nm")
            object.__setattr__(self, "n", int(n))
            object.__setattr__(self, "m", int(m))
        if self.form not in FORMS:
            raise SpecError(
                f"rule {self.pattern!r}: unknown form {self.form!r}; valid forms are "
                f"{', '.join(FORMS)} or 'N:M'"
            )
        check_ratio(self.ratio, f"rule {self.pattern!r}")
        if self.scope not in ("layer", "global"):
            raise SpecError(f"rule {self.pattern!r}: scope {self.scope!r} is not 'layer' or 'global'")
        if self.scope == "global" and not FORMS[self.form].global_budget:
            valid = ", ".join(repr(f) for f in FORMS.list(global_budget=True))
            raise SpecError(
                f"rule {self.pattern!r}: a global budget compares magnitudes across layers and is "
                f"defined for form {valid} only, not {self.form!r}"
            )
        self.make_set()  # validates n, m

    @property
    def has_ratio(self) -> bool:
        """Whether the form takes a prune ratio (N:M and pattern fix their own density)."""
        return form_has_ratio(self.form)

    def make_set(self) -> ConstraintSet:
        entry = FORMS[self.form]
        given = {"ratio": self.ratio, "scope": self.scope, "n": self.n, "m": self.m}
        return entry.build(**{f.name: given[f.name] for f in fields(entry.options) if f.name in given})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.form != "nm":
            del d["n"], d["m"]
        if self.scope == "layer":
            del d["scope"]
        return d


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
        self.rules = [r if isinstance(r, Rule) else Rule(**r) for r in self.rules]
        if not self.rules:
            raise SpecError("a PruneSpec needs at least one rule")
        if isinstance(self.exclude, str):
            self.exclude = [self.exclude]
        self.exclude = list(self.exclude)

    # ---- constructors -------------------------------------------------------------------
    @classmethod
    def uniform(cls, ratio: float, form: str = "unstructured", exclude: Iterable[str] = (),
                **options: Any) -> PruneSpec:
        """Every candidate layer at the same ratio."""
        return cls([Rule("*", form=form, ratio=ratio)], exclude=list(exclude), **options)

    @classmethod
    def layerwise(cls, ratios: Mapping[str, float], form: str = "unstructured",
                  exclude: Iterable[str] = (), **options: Any) -> PruneSpec:
        """One rule per glob → ratio entry, in the mapping's order (e.g. a paper's yaml)."""
        return cls([Rule(g, form=form, ratio=r) for g, r in ratios.items()], exclude=list(exclude),
                   **options)

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
            form = f"{s.n}:{s.m}" if s.form == "nm" else s.form
            rows.append((name, _shape(p.shape), form, ratio, f"{numel:,}", kept))
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
        for key in ("include_first", "include_last"):
            if not isinstance(data.get(key, False), bool):
                raise SpecError(f"a spec's {key!r} must be true or false, got {data[key]!r}")
        rules = []
        for i, r in enumerate(data["rules"]):
            if not isinstance(r, Mapping) or "pattern" not in r:
                raise SpecError(f"rule {i} must be a mapping with a 'pattern', got {r!r}")
            fields = {"pattern", "form", "ratio", "scope", "n", "m"}
            if set(r) - fields:
                raise SpecError(f"rule {i} has unknown keys {sorted(set(r) - fields)}; valid: {sorted(fields)}")
            rules.append(Rule(**r))
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
