"""Physical removal of output channels through Torch-Pruning's dependency graph.

`ChannelGraph(model, example_input)` traces the model once with Torch-Pruning's DependencyGraph and
turns every prunable coupled group (a conv/linear output and everything that must shrink with it:
batch norms, residual partners, concatenation consumers, depthwise convolutions) into a
`ChannelGroup` with one channel numbering.  A *plan* is a boolean keep-vector per group; the
graph can

- predict the exact MACs and parameters of the model after a plan (`CostModel`), without surgery;
- emulate the plan on the dense model, either by zeroing the pruned filters *and* their batch-norm
  affine parameters (`zero_pruned_`, the masked reference a physically pruned model must equal) or
  by multiplying the group's feature maps by the mask in forward hooks (`SiteMasker`, used by the
  linear-filter-ensemble criterion and the sensitivity estimates);
- remove the pruned channels for real (`prune`), leaving a smaller dense model.

Why a batch norm's affine parameters are zeroed too: zeroing a filter leaves BN(0) = β − γμ/σ,
a constant the next layer still sees; removing the channel removes that constant.  With γ = β = 0
the masked channel outputs exactly zero, which is what removal means for every consumer.  The
equivalence holds for per-channel normalisation (batch norm) and activations with act(0) = 0
(ReLU, ReLU6, SiLU, GELU, Hardswish); a GroupNorm/LayerNorm across pruned channels would break it.

Groups whose channels reach no consumer layer (the classifier's outputs, a detection head's
outputs) are never pruned: removing them would change what the model returns.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..allocate import Monomials
from ..metrics.flops import layer_costs
from ..utils import CONV_LINEAR, model_mode

__all__ = [
    "Member", "ChannelGroup", "ChannelGraph", "CostModel", "SiteMasker", "Monomials",
    "plan_from_scores", "CONV_LINEAR",
]

NORMS = (nn.modules.batchnorm._BatchNorm,)


def is_depthwise(module: nn.Module) -> bool:
    """A convolution with one filter per input channel (groups == in == out > 1)."""
    return (isinstance(module, CONV_LINEAR[:3]) and module.groups > 1
            and module.groups == module.in_channels == module.out_channels)


@dataclass(eq=False)
class Member:
    """One layer of a group: which of its channels (`idxs`) carry which group channels (`root_idxs`).

    role: "producer" (conv/linear output), "depthwise" (a depthwise conv, in and out at once),
    "consumer" (conv/linear input), "norm" (batch norm) or "other" (any other layer with weights).
    """

    name: str
    module: nn.Module
    role: str
    idxs: Tensor
    root_idxs: Tensor


@dataclass(eq=False)
class ChannelGroup:
    """Coupled channels that are kept or removed together, numbered 0..size-1 like the root layer."""

    name: str
    root: nn.Module
    handler: Any
    size: int
    members: list[Member]
    sites: list[Member] = field(default_factory=list)

    @property
    def producers(self) -> list[Member]:
        """Layers whose output filters are these channels (the filters a criterion scores)."""
        return [m for m in self.members if m.role in ("producer", "depthwise")]

    def member_names(self) -> list[str]:
        return list(dict.fromkeys(m.name for m in self.members))


def _resolve_modules(model: nn.Module, items: Iterable[nn.Module | str], names: Mapping[nn.Module, str]
                     ) -> list[nn.Module]:
    """Modules (and all their submodules) named by objects or fnmatch globs over module names."""
    out: list[nn.Module] = []
    all_names = [n for n in names.values() if n]
    for item in items:
        if isinstance(item, nn.Module):
            out.extend(item.modules())
            continue
        if not isinstance(item, str):
            raise TypeError(f"ignored layer {item!r}: give a module or a module-name glob (str)")
        hits = [n for n in all_names if fnmatch.fnmatchcase(n, item)]
        if not hits:
            close = [n for n in all_names if item.split(".")[0] in n][:5]
            raise ValueError(f"ignored layer {item!r} matches no module of the model"
                             + (f"; similar names: {', '.join(close)}" if close else ""))
        for n in hits:
            out.extend(model.get_submodule(n).modules())
    return list({id(m): m for m in out}.values())


class ChannelGraph:
    """The prunable channel groups of `model`, traced once on `example_input`.

    `ignored_layers` (modules or module-name globs) keep their output channels; their inputs may
    still shrink when the producing layer is pruned.  The model is traced in eval mode, so batch
    norm statistics are not touched.  After `prune()` the graph is spent: build a new one to prune
    again.
    """

    def __init__(self, model: nn.Module, example_input: Tensor | Sequence[Tensor],
                 ignored_layers: Iterable[nn.Module | str] = ()):
        import torch_pruning as tp

        self.model = model
        self.names: dict[nn.Module, str] = {m: n for n, m in model.named_modules()}
        self.ignored = _resolve_modules(model, ignored_layers, self.names)
        device = _device_of(model)
        self.example_input = _to(example_input, device)
        with model_mode(model, train=False), torch.enable_grad():
            self.dg = tp.DependencyGraph().build_dependency(model, example_inputs=self.example_input)
        self.groups: dict[str, ChannelGroup] = {}
        self.output_layers: list[nn.Module] = []
        for group in self.dg.get_all_groups(ignored_layers=self.ignored, root_module_types=list(CONV_LINEAR)):
            converted = self._convert(group)
            if converted is None:
                root = group[0].dep.target.module
                self.output_layers.append(root)
                continue
            self.groups[converted.name] = converted
        if not self.groups:
            raise ValueError("the model has no prunable channel group: every conv/linear output is either "
                             "ignored or a model output")
        self.costs = CostModel(self)
        self.pruned = False

    # ---- construction -------------------------------------------------------------------
    def _role(self, module: nn.Module, handler: Any) -> str | None:
        if isinstance(module, CONV_LINEAR):
            if is_depthwise(module):
                return "depthwise"
            if self.dg.is_out_channel_pruning_fn(handler):
                return "producer"
            if self.dg.is_in_channel_pruning_fn(handler):
                return "consumer"
            return None
        if isinstance(module, NORMS):
            return "norm"
        if isinstance(module, nn.Module) and any(True for _ in module.parameters(recurse=False)):
            return "other"
        return None

    def _convert(self, group: Any) -> ChannelGroup | None:
        root, handler = group[0].dep.target.module, group[0].dep.handler
        members: dict[tuple[int, str], Member] = {}
        for item in group:
            module = item.dep.target.module
            role = self._role(module, item.dep.handler) if isinstance(module, nn.Module) else None
            if role is None or any(r is None for r in item.root_idxs):
                continue
            key = (id(module), role)
            idxs = torch.as_tensor(list(item.idxs), dtype=torch.long)
            roots = torch.as_tensor(list(item.root_idxs), dtype=torch.long)
            if key in members:  # the same layer reached twice: merge the index lists
                old = members[key]
                idxs, roots = torch.cat([old.idxs, idxs]), torch.cat([old.root_idxs, roots])
                idxs, first = _unique_first(idxs)
                roots = roots[first]
            members[key] = Member(self.names.get(module, ""), module, role, idxs, roots)
        if not any(m.role == "consumer" for m in members.values()):
            return None  # the channels reach no layer: a model output, never pruned
        size = self.dg.get_out_channels(root)
        g = ChannelGroup(self.names[root], root, handler, int(size), list(members.values()))
        g.sites = self._sites(g)
        return g

    def _sites(self, group: ChannelGroup) -> list[Member]:
        """Where the group's feature maps are read and masked: the batch norm right after each
        producer, else the producer's own output."""
        norms = [m for m in group.members if m.role == "norm"]
        sites: dict[int, Member] = {}
        for p in group.producers:
            node = self.dg.module2node[p.module]
            follower = next((n for n in norms if any(i is node for i in self.dg.module2node[n.module].inputs)), None)
            site = follower or p
            sites[id(site.module)] = site
        return list(sites.values())

    # ---- plans --------------------------------------------------------------------------
    def sizes(self) -> dict[str, int]:
        return {name: g.size for name, g in self.groups.items()}

    def check_plan(self, keep: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Validate a plan (group name → bool keep vector) and return it on the CPU."""
        out = {}
        for name, k in keep.items():
            if name not in self.groups:
                raise ValueError(f"plan names group {name!r}, which the graph does not have; groups are "
                                 f"{', '.join(list(self.groups)[:8])}{' ...' if len(self.groups) > 8 else ''}")
            k = torch.as_tensor(k).bool().cpu().flatten()
            if k.numel() != self.groups[name].size:
                raise ValueError(f"plan for group {name!r} has {k.numel()} entries; the group has "
                                 f"{self.groups[name].size} channels")
            if not k.any():
                raise ValueError(f"plan for group {name!r} keeps no channel; keep at least one")
            out[name] = k
        return out

    @torch.no_grad()
    def zero_pruned_(self, keep: Mapping[str, Tensor], model: nn.Module | None = None) -> nn.Module:
        """The masked reference: zero every pruned filter (weight rows, bias) and the affine
        parameters of its batch norm, in place.  The model's output then equals the pruned model's.

        `model` (default: the graph's) may be another instance of the same architecture, e.g. a
        copy taken before pruning; layers are matched by name.
        """
        target = self.model if model is None else model
        for name, k in self.check_plan(keep).items():
            for m in self.groups[name].members:
                if m.role not in ("producer", "depthwise", "norm"):
                    continue
                local = m.idxs[~k[m.root_idxs]]
                if local.numel() == 0:
                    continue
                module = m.module if model is None else target.get_submodule(m.name)
                for attr in ("weight", "bias"):
                    t = getattr(module, attr, None)
                    if isinstance(t, Tensor):
                        t.index_fill_(0, local.to(t.device), 0.0)
        return target

    def prune(self, keep: Mapping[str, Tensor]) -> nn.Module:
        """Remove the channels each plan entry marks False, for real (in place); returns the model."""
        if self.pruned:
            raise RuntimeError("this ChannelGraph has already pruned its model; build a new graph")
        plan = self.check_plan(keep)
        for name, k in plan.items():
            group = self.groups[name]
            removed = (~k).nonzero().flatten().tolist()
            if removed:
                self.dg.get_pruning_group(group.root, group.handler, removed).prune()
        self.pruned = True
        return self.model

    def pruning_history(self) -> list[list[Any]]:
        """Torch-Pruning's replayable history: [root module name, is-output pruning, indices]."""
        return [[n, bool(o), [int(i) for i in idx]] for n, o, idx in self.dg.pruning_history()]


def plan_from_scores(scores: Mapping[str, Tensor], counts: Mapping[str, int]) -> dict[str, Tensor]:
    """Keep the `counts[g]` highest-scoring channels of every group (ties to the lower index)."""
    from ..sets import topk_mask

    plan = {}
    for name, k in counts.items():
        if name not in scores:
            raise ValueError(f"no scores for group {name!r}")
        s = scores[name].detach().double().cpu()
        if not torch.isfinite(s).all():
            raise FloatingPointError(f"scores of group {name!r} hold NaN or Inf")
        plan[name] = topk_mask(s, int(k))
    return plan


@dataclass
class _LayerCost:
    macs: int
    weight: int
    bias: int
    out_channels: int
    in_channels: int
    depthwise: bool
    out_parts: list[tuple[str, Tensor]] = field(default_factory=list)
    in_parts: list[tuple[str, Tensor]] = field(default_factory=list)


class CostModel:
    """MACs and parameters of the graph's model as a function of a plan.

    Per conv/linear layer: MACs = dense MACs · (kept outputs / outputs) · (kept inputs / inputs)
    (depthwise: · kept/outputs only); its weight scales the same way, its bias and every batch
    norm with the kept outputs.  `cost(plan)` is exact for any plan; `polynomial()` writes the
    same quantity as a polynomial in per-group keep fractions (exact when no layer sees only part
    of a group), the form the convex allocation needs.
    """

    def __init__(self, graph: ChannelGraph):
        model = graph.model
        rows = {r["name"]: r for r in layer_costs(model, _first(graph.example_input))}
        self.total_params = sum(p.numel() for p in model.parameters())
        self.total_macs = sum(r["macs"] for r in rows.values())
        self.layers: dict[str, _LayerCost] = {}
        self.norms: dict[str, tuple[int, int, list[tuple[str, Tensor]]]] = {}
        for name, module in model.named_modules():
            if isinstance(module, CONV_LINEAR) and name in rows:
                out_ch = module.out_channels if not isinstance(module, nn.Linear) else module.out_features
                in_ch = module.in_channels if not isinstance(module, nn.Linear) else module.in_features
                bias = module.bias.numel() if module.bias is not None else 0
                self.layers[name] = _LayerCost(rows[name]["macs"], module.weight.numel(), bias, out_ch, in_ch,
                                               is_depthwise(module))
        for gname, group in graph.groups.items():
            for m in group.members:
                if m.name in self.layers and m.role in ("producer", "depthwise"):
                    self.layers[m.name].out_parts.append((gname, m.root_idxs))
                elif m.name in self.layers and m.role == "consumer":
                    self.layers[m.name].in_parts.append((gname, m.root_idxs))
                elif m.role == "norm":
                    numel = sum(p.numel() for p in m.module.parameters(recurse=False))
                    entry = self.norms.setdefault(m.name, (numel, m.module.num_features, []))
                    entry[2].append((gname, m.root_idxs))
        self.sizes = graph.sizes()

    def total(self, kind: str) -> int:
        return self.total_macs if _kind(kind) == "macs" else self.total_params

    def cost(self, keep: Mapping[str, Tensor], kind: str = "macs") -> int:
        """Exact MACs or params after removing what `keep` marks False (groups absent: kept)."""
        kind = _kind(kind)

        def kept(n: int, parts: list[tuple[str, Tensor]]) -> int:
            return n - sum(int((~keep[g][r]).sum()) for g, r in parts if g in keep)

        total = 0.0
        for layer in self.layers.values():
            fo = kept(layer.out_channels, layer.out_parts) / layer.out_channels
            fi = 1.0 if layer.depthwise else kept(layer.in_channels, layer.in_parts) / layer.in_channels
            if kind == "macs":
                total += layer.macs * fo * fi
            else:
                total += layer.weight * fo * fi + layer.bias * fo
        if kind == "macs":
            return round(total)
        dense_layers = sum(c.weight + c.bias for c in self.layers.values())
        norms_dense = sum(numel for numel, _, _ in self.norms.values())
        norms = sum(numel * kept(n, parts) / n for numel, n, parts in self.norms.values())
        return round(self.total_params - dense_layers - norms_dense + total + norms)

    def polynomial(self, kind: str = "macs") -> Monomials:
        """{sorted tuple of group names: coefficient}: cost(x) = Σ c · Π x_g over the tuple."""
        kind = _kind(kind)
        poly: Monomials = {}

        def add(key: tuple[str, ...], c: float) -> None:
            if c:
                key = tuple(sorted(key))
                poly[key] = poly.get(key, 0.0) + c

        def affine(n: int, parts: list[tuple[str, Tensor]]) -> dict[tuple[str, ...], float]:
            terms: dict[tuple[str, ...], float] = {}
            covered = 0
            for g, r in parts:
                terms[(g,)] = terms.get((g,), 0.0) + r.numel() / n
                covered += r.numel()
            terms[()] = 1.0 - covered / n
            return terms

        for layer in self.layers.values():
            out = affine(layer.out_channels, layer.out_parts)
            inp = {(): 1.0} if layer.depthwise else affine(layer.in_channels, layer.in_parts)
            for ko, co in out.items():
                for ki, ci in inp.items():
                    add(ko + ki, (layer.macs if kind == "macs" else layer.weight) * co * ci)
                if kind == "params":
                    add(ko, layer.bias * co)
        if kind == "params":
            for numel, n, parts in self.norms.values():
                for k, c in affine(n, parts).items():
                    add(k, numel * c)
            rest = self.total_params - sum(c.weight + c.bias for c in self.layers.values()) \
                - sum(numel for numel, _, _ in self.norms.values())
            add((), float(rest))
        return poly


class SiteMasker:
    """Forward hooks that multiply each group's feature maps by a 0/1 channel mask.

    Use as a context manager; `set(plan)` changes the masks between forward passes (groups not in
    the plan are left whole).  With batch norms at the sites this is exactly the pruned network.
    """

    def __init__(self, graph: ChannelGraph):
        self.graph = graph
        self._sites: dict[int, tuple[nn.Module, Tensor]] = {}
        for group in graph.groups.values():
            for site in group.sites:
                if id(site.module) not in self._sites:
                    n = _out_channels(site.module)
                    ref = next(site.module.parameters(), None)
                    dev = ref.device if ref is not None else torch.device("cpu")
                    self._sites[id(site.module)] = (site.module, torch.ones(n, device=dev))
        self._handles: list[Any] = []

    def set(self, keep: Mapping[str, Tensor]) -> None:
        for _, mult in self._sites.values():
            mult.fill_(1.0)
        for name, k in keep.items():
            k = k.bool()
            for site in self.graph.groups[name].sites:
                _, mult = self._sites[id(site.module)]
                mult[site.idxs.to(mult.device)] = k[site.root_idxs].to(mult.device, mult.dtype)

    def __enter__(self) -> SiteMasker:
        for module, mult in self._sites.values():
            def hook(mod: nn.Module, args: Any, out: Tensor, mult: Tensor = mult) -> Tensor:
                return out * mult.to(out.dtype).view(1, -1, *([1] * (out.dim() - 2)))
            self._handles.append(module.register_forward_hook(hook))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


# ---- helpers ------------------------------------------------------------------------------
def _kind(kind: str) -> str:
    if kind not in ("macs", "flops", "params"):
        raise ValueError(f"cost kind {kind!r} is not one of 'macs' (= 'flops') or 'params'")
    return "params" if kind == "params" else "macs"


def _unique_first(idxs: Tensor) -> tuple[Tensor, Tensor]:
    seen: dict[int, int] = {}
    for pos, i in enumerate(idxs.tolist()):
        seen.setdefault(i, pos)
    first = torch.tensor(list(seen.values()), dtype=torch.long)
    return idxs[first], first


def _out_channels(module: nn.Module) -> int:
    for attr in ("out_channels", "out_features", "num_features"):
        if hasattr(module, attr):
            return int(getattr(module, attr))
    raise ValueError(f"cannot tell the output channels of {type(module).__name__}")


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, Tensor):
        return x.to(device)
    if isinstance(x, list | tuple):
        return type(x)(_to(v, device) for v in x)
    return x


def _first(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else x[0]
