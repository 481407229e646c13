"""Filter-importance criteria: one score per channel of every coupled group (higher = keep).

Every criterion answers `scores(graph, calibration, counts) -> {group name: 1-D tensor}`:

- `l1`, `l2` (`WeightNorm`): the norm of each producer's filter (Li et al. 2017), averaged over
  the layers that produce the group's channels.  The baseline; no data.
- `nuclear` (`NuclearNorm`, Yeom et al. 2021, energy-aware pruning): the nuclear norm of each
  channel's feature maps.  Default reading "batch": the N images of a batch stacked as an
  N × HW matrix per channel, scored by its sum of singular values, averaged over batches;
  reading "image" scores each H × W map and averages over images.  See docs/structured.md.
- `chip` (`CHIP`, Sui et al. 2021): channel independence, the drop of the nuclear norm of the
  C × HW feature-map matrix of one image when that channel's row is removed, averaged over all
  images of all calibration batches.
- `lfe` (`LinearFilterEnsemble`, Sándor et al. 2020): random keep-masks over filters, the loss of
  each masked network, a linear additive model loss ≈ β₀ + Σ β_i z_i fitted by ridge least squares
  (closed form, or cvxpy), importance −β_i.
- `slr`, `admm` (`SolverCriterion`): train with the project's SLR / ADMM solver under filter
  constraints at the allocated per-layer ratios, hard-prune, score the surviving filter norms.

Feature-map criteria read the output of the batch norm after each producer (else the producer's
output), pass it through `activation` (ReLU by default, as CHIP and HRank hook ReLU outputs), and
reduce each batch to per-channel sums inside the forward hook, on the model's device: no
activation outlives its hook.  `tp_importance` wraps any score table as a Torch-Pruning
`Importance`, so its own pruners can use these criteria.
"""

from __future__ import annotations

import glob
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.trainer import TrainConfig
from ..registry import Registry
from ..solvers import SOLVERS
from ..task import Task
from ..utils import model_mode
from .surgery import ChannelGraph, ChannelGroup, Member, SiteMasker

__all__ = [
    "Calibration", "Criterion", "WeightNorm", "NuclearNorm", "CHIP", "LinearFilterEnsemble",
    "SolverCriterion", "CRITERIA", "register_criterion", "make_criterion", "chip_scores", "nuclear_scores",
    "fit_linear_model", "tp_importance", "reduce_to_group",
]


# ---- calibration data ---------------------------------------------------------------------
def default_inputs(batch: Any) -> Any:
    """The model input of a plain batch: the first item of a tuple/list, or the batch itself."""
    if isinstance(batch, list | tuple):
        return batch[0]
    return batch


@dataclass
class Calibration:
    """Fixed batches for data-driven criteria, with how to run the model and (optionally) its loss.

    `run(model, batch)` runs the model on a batch (a task's `forward`); without it the model gets
    `inputs(batch)` moved to `device`.
    """

    batches: list[Any]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    inputs: Callable[[Any], Any] = default_inputs
    loss: Callable[[nn.Module, Any], Tensor] | None = None
    run: Callable[[nn.Module, Any], Any] | None = None

    def __post_init__(self) -> None:
        self.batches = list(self.batches)
        if not self.batches:
            raise ValueError("calibration needs at least one batch")
        self.device = torch.device(self.device)

    @classmethod
    def from_task(cls, task: Task, n_batches: int, device: torch.device | str) -> Calibration:
        """The task's first `n_batches` probe batches (fixed order) and its training loss."""
        if n_batches < 1:
            raise ValueError(f"calibration batches must be ≥ 1, got {n_batches}")
        device = torch.device(device)
        return cls(task.probe_batches(n_batches), device, loss=lambda m, b: task.loss(m, b, device),
                   run=lambda m, b: task.forward(m, b, device))

    def forward(self, model: nn.Module, batch: Any) -> Any:
        if self.run is not None:
            return self.run(model, batch)
        x = self.inputs(batch)
        return model(x.to(self.device) if isinstance(x, Tensor) else x)

    @torch.no_grad()
    def mean_loss(self, model: nn.Module) -> float:
        """Mean loss over the batches in eval mode (batch norms read, never updated)."""
        if self.loss is None:
            raise ValueError("this criterion needs a loss: build the Calibration with loss=... or from a task")
        with model_mode(model, train=False):
            return sum(float(self.loss(model, b)) for b in self.batches) / len(self.batches)


# ---- reductions ---------------------------------------------------------------------------
def reduce_to_group(group: ChannelGroup, per_module: Mapping[int, Tensor], members: Iterable[Member]) -> Tensor:
    """Average per-layer channel scores over `members`, mapped into the group's numbering."""
    total = torch.zeros(group.size, dtype=torch.float64)
    count = torch.zeros(group.size, dtype=torch.float64)
    for m in members:
        if id(m.module) not in per_module:
            continue
        values = per_module[id(m.module)].detach().double().cpu()[m.idxs]
        total.index_add_(0, m.root_idxs, values)
        count.index_add_(0, m.root_idxs, torch.ones_like(values))
    if not (count > 0).all():
        missing = int((count == 0).sum())
        raise RuntimeError(f"group {group.name!r}: {missing} channels got no score; were the sites run?")
    return total / count


# ---- exact per-batch formulas -------------------------------------------------------------
def nuclear_scores(fmap: Tensor, reading: str = "batch") -> Tensor:
    """Per-channel nuclear norms of a batch of feature maps (N, C, *spatial) → (C,).

    "batch": channel c's maps of all N images as an N × HW matrix, ‖·‖_* of it.
    "image": each H × W map (a 1 × L row for 1-D maps, a scalar for linear outputs), ‖·‖_*
    averaged over the N images.
    """
    n, c = fmap.shape[:2]
    if reading == "batch":
        mats = fmap.reshape(n, c, -1).transpose(0, 1)  # (C, N, HW)
        return torch.linalg.svdvals(mats).sum(-1)
    if reading == "image":
        if fmap.dim() == 4:
            mats = fmap
        else:
            mats = fmap.reshape(n, c, 1, -1)
        return torch.linalg.svdvals(mats).sum(-1).mean(0)
    raise ValueError(f"nuclear-norm reading {reading!r} is not 'batch' or 'image'")


def chip_scores(fmap: Tensor, max_elements: int = 1 << 24) -> Tensor:
    """CHIP channel independence per image: ‖A_n‖_* − ‖A_n with row c removed‖_*  → (N, C).

    A_n is image n's C × HW matrix.  With the SVD A = U S Vᵀ (rank r = min(C, HW)), removing row c
    leaves the singular values of P S (r × r), P = I − α u uᵀ, u = row c of the first r columns of
    U, α = 1/(1 + w), w² = 1 − ‖u‖² (so P² = I − u uᵀ).  That is C SVDs of r × r matrices per
    image instead of C of (C−1) × HW.  w² is taken as the squared norm of row c of U's remaining
    columns (0 when C ≤ HW), never as 1 − ‖u‖², whose cancellation would cost half the digits.
    """
    n, c = fmap.shape[:2]
    a = fmap.reshape(n, c, -1)
    m = a.shape[-1]
    r = min(c, m)
    out = torch.empty(n, c, dtype=a.dtype, device=a.device)
    chunk = max(1, max_elements // max(1, c * max(r * r, c if c > m else 0)))
    for start in range(0, n, chunk):
        part = a[start:start + chunk]
        u, s, _ = torch.linalg.svd(part, full_matrices=c > m)  # u (n', C, r) or (n', C, C)
        w2 = u[..., r:].pow(2).sum(-1) if c > m else torch.zeros(u.shape[:2], dtype=a.dtype, device=a.device)
        u = u[..., :r]
        alpha = 1.0 / (1.0 + torch.sqrt(w2))  # (n', C)
        us = u * s[:, None, :]  # u ∘ s
        mats = torch.diag_embed(s)[:, None] - alpha[..., None, None] * u[..., :, None] * us[..., None, :]
        out[start:start + chunk] = s.sum(-1)[:, None] - torch.linalg.svdvals(mats).sum(-1)
    return out


# ---- the criteria ------------------------------------------------------------------------
CRITERIA: Registry[Criterion] = Registry("criterion", defaults={"workflow": ()})
"""Filter criteria by name.  Trait `workflow`: keyword arguments the structured workflow supplies
(a solver criterion's task, training config and solver options), not user options; `solver`:
the registered solver a criterion trains with."""
register_criterion = CRITERIA.register


class Criterion(ABC):
    """Scores every channel of every group; higher means more worth keeping."""

    name = "criterion"
    needs_data = False
    needs_loss = False
    needs_counts = False

    @abstractmethod
    def scores(self, graph: ChannelGraph, calibration: Calibration | None = None,
               counts: Mapping[str, int] | None = None) -> dict[str, Tensor]:
        """{group name: float64 tensor of the group's size}."""

    def _need(self, calibration: Calibration | None) -> Calibration:
        if calibration is None:
            raise ValueError(f"criterion {self.name!r} reads feature maps or losses: give calibration batches")
        if self.needs_loss and calibration.loss is None:
            raise ValueError(f"criterion {self.name!r} measures the loss: the Calibration needs loss=...")
        return calibration

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


@register_criterion("l2", fixed={"p": 2}, help="L2 norm of each filter")
@register_criterion("l1", fixed={"p": 1}, help="L1 norm of each filter")
class WeightNorm(Criterion):
    """L_p norm of each filter (weight row and, with `bias=True`, its bias), averaged over producers."""

    def __init__(self, p: int = 1, bias: bool = False):
        if p not in (1, 2):
            raise ValueError(f"weight-norm order p must be 1 or 2, got {p!r}")
        self.p, self.bias = p, bias
        self.name = f"l{p}"

    def scores(self, graph: ChannelGraph, calibration: Calibration | None = None,
               counts: Mapping[str, int] | None = None) -> dict[str, Tensor]:
        out = {}
        for name, group in graph.groups.items():
            per: dict[int, Tensor] = {}
            for m in group.producers:
                w = m.module.weight.detach().flatten(1).abs().pow(self.p).sum(1)
                if self.bias and m.module.bias is not None:
                    w = w + m.module.bias.detach().abs().pow(self.p)
                per[id(m.module)] = w.pow(1.0 / self.p)
            out[name] = reduce_to_group(group, per, group.producers)
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "p": self.p, "bias": self.bias}


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "none": lambda t: t}
Activation = Literal["relu", "none"]


class FeatureCriterion(Criterion):
    """Base of feature-map criteria: hooks at the group sites, streaming per-channel sums."""

    needs_data = True
    option_help = {"activation": "applied to the feature maps before scoring"}

    def __init__(self, activation: Activation = "relu", dtype: torch.dtype = torch.float32):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.activation, self.dtype = activation, dtype

    @abstractmethod
    def batch_scores(self, fmap: Tensor) -> tuple[Tensor, int]:
        """(per-channel sum over this batch's units, number of units) for one site output."""

    @torch.no_grad()
    def scores(self, graph: ChannelGraph, calibration: Calibration | None = None,
               counts: Mapping[str, int] | None = None) -> dict[str, Tensor]:
        calibration = self._need(calibration)
        act = ACTIVATIONS[self.activation]
        sums: dict[int, Tensor] = {}
        units: dict[int, int] = {}
        sites = {id(s.module): s.module for g in graph.groups.values() for s in g.sites}

        def hook(key: int) -> Callable[..., None]:
            def run(module: nn.Module, args: Any, out: Tensor) -> None:
                total, n = self.batch_scores(act(out.detach()).to(self.dtype))
                sums[key] = sums[key] + total if key in sums else total
                units[key] = units.get(key, 0) + n
            return run

        handles = [m.register_forward_hook(hook(k)) for k, m in sites.items()]
        model = graph.model
        try:
            with model_mode(model, train=False):
                for batch in calibration.batches:
                    calibration.forward(model, batch)
        finally:
            for h in handles:
                h.remove()
        per = {k: sums[k] / units[k] for k in sums}
        return {name: reduce_to_group(g, per, g.sites) for name, g in graph.groups.items()}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "activation": self.activation, "dtype": str(self.dtype)}


@register_criterion("nuclear")
class NuclearNorm(FeatureCriterion):
    """Energy-aware pruning (Yeom et al.): the nuclear norm of each channel's feature maps."""

    name = "nuclear"
    option_help = {"reading": "one N×HW matrix per channel over the batch, or one HW matrix per image"}
    option_flags = {"reading": "nuclear-reading"}

    def __init__(self, reading: Literal["batch", "image"] = "batch", activation: Activation = "relu",
                 dtype: torch.dtype = torch.float32):
        super().__init__(activation, dtype)
        if reading not in ("batch", "image"):
            raise ValueError(f"nuclear-norm reading {reading!r} is not 'batch' (N×HW per channel) or 'image'")
        self.reading = reading

    def batch_scores(self, fmap: Tensor) -> tuple[Tensor, int]:
        s = nuclear_scores(fmap, self.reading)
        return (s, 1) if self.reading == "batch" else (s * fmap.shape[0], fmap.shape[0])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "reading": self.reading}


@register_criterion("chip")
class CHIP(FeatureCriterion):
    """CHIP channel independence (Sui et al., NeurIPS 2021), averaged over every calibration image."""

    name = "chip"

    def batch_scores(self, fmap: Tensor) -> tuple[Tensor, int]:
        return chip_scores(fmap).sum(0), fmap.shape[0]


def fit_linear_model(z: Tensor, y: Tensor, ridge: float = 1e-3, solver: str = "ridge",
                     nonpositive: bool = False) -> tuple[Tensor, float]:
    """Fit y ≈ β₀ + z β (z: K × F in {0, 1}) by ridge least squares; returns (β, β₀).

    The penalty is `ridge` · K · p(1 − p) · ‖β‖² (scaled like the diagonal of the centred Gram
    matrix, p the mean keep rate).  "ridge" solves it in closed form in float64 (through the K × K
    or F × F system, whichever is smaller); "cvxpy" solves the same problem with cvxpy, optionally
    with β ≤ 0 (a filter's presence never raises the loss).
    """
    z = z.double()
    y = y.double().flatten()
    if z.dim() != 2 or z.shape[0] != y.numel():
        raise ValueError(f"z must be K × F with K = len(y); got z {tuple(z.shape)} and y {tuple(y.shape)}")
    k, f = z.shape
    zm, ym = z.mean(0), y.mean()
    zc, yc = z - zm, y - ym
    p = float(zm.mean())
    lam = ridge * k * max(p * (1 - p), 1e-12)
    if solver == "ridge":
        if nonpositive:
            raise ValueError("nonpositive=True needs solver='cvxpy'")
        if k < f:
            beta = zc.T @ torch.linalg.solve(zc @ zc.T + lam * torch.eye(k, dtype=z.dtype), yc)
        else:
            beta = torch.linalg.solve(zc.T @ zc + lam * torch.eye(f, dtype=z.dtype), zc.T @ yc)
    elif solver == "cvxpy":
        import cvxpy as cp

        b = cp.Variable(f)
        constraints = [b <= 0] if nonpositive else []
        problem = cp.Problem(cp.Minimize(cp.sum_squares(yc.numpy() - zc.numpy() @ b) + lam * cp.sum_squares(b)),
                             constraints)
        problem.solve()
        if b.value is None:
            raise RuntimeError(f"cvxpy could not fit the linear filter model (status {problem.status})")
        beta = torch.as_tensor(b.value, dtype=torch.float64)
    else:
        raise ValueError(f"solver {solver!r} is not 'ridge' or 'cvxpy'")
    return beta, float(ym - zm @ beta)


@register_criterion("lfe")
class LinearFilterEnsemble(Criterion):
    """Linear filter ensembles (Sándor et al.): importance = −β_i of a linear model of the loss.

    `samples` random masks z ~ Bernoulli(`keep_prob`) over all filters of all groups
    (`scope="network"`), or per group with the others whole (`scope="group"`, `samples` per
    group); each masked network's mean loss on the calibration batches is one observation.
    """

    name = "lfe"
    needs_data = True
    needs_loss = True
    option_help = {"samples": "random filter masks (loss observations)",
                   "keep_prob": "keep probability of each filter in a mask",
                   "solver": "least squares in closed form, or with cvxpy"}
    option_flags = {"samples": "lfe-samples", "keep_prob": "lfe-keep", "solver": "lfe-solver"}

    def __init__(self, samples: int = 256, keep_prob: float = 0.75, ridge: float = 1e-3,
                 solver: Literal["ridge", "cvxpy"] = "ridge",
                 scope: str = "network", nonpositive: bool = False, seed: int = 0):
        if samples < 2:
            raise ValueError(f"samples must be ≥ 2, got {samples}")
        if not 0 < keep_prob < 1:
            raise ValueError(f"keep_prob must lie in (0, 1), got {keep_prob}")
        if scope not in ("network", "group"):
            raise ValueError(f"scope {scope!r} is not 'network' or 'group'")
        if solver not in ("ridge", "cvxpy"):
            raise ValueError(f"solver {solver!r} is not 'ridge' or 'cvxpy'")
        self.samples, self.keep_prob, self.ridge, self.solver = samples, keep_prob, ridge, solver
        self.scope, self.nonpositive, self.seed = scope, nonpositive, seed
        self.history: dict[str, Any] = {}

    def _sample(self, graph: ChannelGraph, calibration: Calibration, names: list[str]
                ) -> tuple[Tensor, Tensor]:
        gen = torch.Generator().manual_seed(self.seed)
        sizes = [graph.groups[n].size for n in names]
        zs, ys = [], []
        with SiteMasker(graph) as masker:
            for _ in range(self.samples):
                z = torch.rand(sum(sizes), generator=gen) < self.keep_prob
                masker.set(dict(zip(names, z.split(sizes), strict=True)))
                zs.append(z)
                ys.append(calibration.mean_loss(graph.model))
        return torch.stack(zs).double(), torch.tensor(ys, dtype=torch.float64)

    def scores(self, graph: ChannelGraph, calibration: Calibration | None = None,
               counts: Mapping[str, int] | None = None) -> dict[str, Tensor]:
        calibration = self._need(calibration)
        names = list(graph.groups)
        out: dict[str, Tensor] = {}
        blocks = [names] if self.scope == "network" else [[n] for n in names]
        self.history = {}
        for block in blocks:
            z, y = self._sample(graph, calibration, block)
            beta, intercept = fit_linear_model(z, y, self.ridge, self.solver, self.nonpositive)
            sizes = [graph.groups[n].size for n in block]
            for n, b in zip(block, beta.split(sizes), strict=True):
                out[n] = -b
            self.history["/".join(block) if len(block) < 4 else "network"] = {
                "intercept": intercept, "loss_mean": float(y.mean()), "loss_std": float(y.std())}
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "samples": self.samples, "keep_prob": self.keep_prob, "ridge": self.ridge,
                "solver": self.solver, "scope": self.scope}


_WORKFLOW = ("task", "train", "solver_options")


@register_criterion("admm", fixed={"method": "admm"}, skip=_WORKFLOW, workflow=_WORKFLOW, solver="admm",
                    help="ADMM under filter constraints at the allocated ratios, then filter norms")
@register_criterion("slr", fixed={"method": "slr"}, skip=_WORKFLOW, workflow=_WORKFLOW, solver="slr",
                    help="SLR under filter constraints at the allocated ratios, then filter norms")
class SolverCriterion(Criterion):
    """SLR or ADMM under filter constraints at the allocated ratios, then hard-pruned filter norms.

    Trains the model in place with `slr_prune.engine.prune` (the solver loop of the core), one
    `Filter` rule per producer at ratio 1 − k_g / size_g; the filters the hard prune zeroes score 0
    and go first.  Needs the task (data, loss) and the per-group counts from the allocation.
    """

    needs_counts = True

    def __init__(self, method: str = "slr", task: Task | None = None, train: TrainConfig | None = None,
                 solver_options: Mapping[str, Any] | None = None):
        if not SOLVERS.get(method).traits["trains"]:
            raise ValueError(f"solver criterion method {method!r} does not train; choose one of "
                             f"{', '.join(SOLVERS.list(trains=True))}")
        self.name = method
        self.task, self.train, self.solver_options = task, train, dict(solver_options or {})
        self.result: Any = None

    def spec(self, graph: ChannelGraph, counts: Mapping[str, int]):
        """The PruneSpec of filter constraints the solver trains under."""
        from ..spec import PruneSpec, Rule

        rules = []
        for name, k in counts.items():
            group = graph.groups[name]
            ratio = 1.0 - int(k) / group.size
            if ratio <= 0:
                continue
            for m in group.producers:
                if m.idxs.numel() == _out_features(m.module):
                    rules.append(Rule(glob.escape(f"{m.name}.weight"), form="filter", ratio=ratio))
        if not rules:
            raise ValueError("the allocation prunes nothing; there is no filter constraint to train under")
        return PruneSpec(rules, include_first=True, include_last=True)

    def scores(self, graph: ChannelGraph, calibration: Calibration | None = None,
               counts: Mapping[str, int] | None = None) -> dict[str, Tensor]:
        if self.task is None:
            raise ValueError(f"criterion {self.name!r} trains the model: give task=... (a slr_prune Task)")
        if counts is None:
            raise ValueError(f"criterion {self.name!r} needs the per-group channel counts of the allocation")
        from ..engine import TrainConfig, prune

        train = self.train or TrainConfig(epochs=3, lr=0.01)
        self.result = prune(graph.model, self.task, self.spec(graph, counts), self.name, train=train,
                            finetune=None, solver_options=self.solver_options)
        return WeightNorm(p=2).scores(graph)

    def describe(self) -> dict[str, Any]:
        epochs = getattr(self.train, "epochs", 3)
        return {"name": self.name, "epochs": epochs, "solver_options": self.solver_options}


def _out_features(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def make_criterion(name: str | Criterion, **options: Any) -> Criterion:
    """A registered criterion (`CRITERIA`: l1, l2, nuclear, chip, lfe, slr, admm, ...) with its options."""
    if isinstance(name, Criterion):
        return name
    entry = CRITERIA.get(name)
    try:
        workflow = entry.traits["workflow"]
        return entry.build(**entry.check_options({k: v for k, v in options.items() if k not in workflow}),
                           **{k: v for k, v in options.items() if k in workflow})
    except TypeError as e:
        raise ValueError(f"criterion {name!r}: bad option ({e})") from e


def tp_importance(graph: ChannelGraph, scores: Mapping[str, Tensor]) -> Any:
    """A Torch-Pruning `Importance` returning these scores for the group of each root layer.

    Torch-Pruning's pruners (e.g. `tp.pruner.MetaPruner(model, x, importance=...)`) then rank with
    our criteria; groups rooted at a layer we did not score get None, which its pruners skip.
    """
    import torch_pruning as tp

    by_root = {id(graph.groups[n].root): s.float() for n, s in scores.items()}

    class CriterionImportance(tp.importance.Importance):
        def __call__(self, group: Any) -> Tensor | None:
            s = by_root.get(id(group[0].dep.target.module))
            if s is None:
                return None
            return s[torch.as_tensor(list(group[0].root_idxs), dtype=torch.long)]

    return CriterionImportance()

