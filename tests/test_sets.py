"""Property tests for the sparsity sets and their exact Euclidean projections (slr_prune.sets).

For every projection: the result lies in the set, projecting twice changes nothing, a brute force
over all supports of tiny tensors finds no strictly closer member, the kept count is exact and
ties go to the lower index.  Reference computations here are written independently of sets.py
(group layouts by explicit indexing, energies in float64, tie order by sorting (-score, index)).
"""

from __future__ import annotations

import itertools
import math
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slr_prune.errors import SpecError
from slr_prune.sets import (
    KERNEL_PATTERNS,
    NM,
    Channel,
    Column,
    Filter,
    Pattern,
    Projector,
    Unstructured,
    n_keep,
    segmented_topk_masks,
    topk_mask,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOPK_KINDS = [Unstructured, Filter, Channel, Column]
TIE_VALUES = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 3.0]

ratios = st.floats(min_value=0.0, max_value=1.0, exclude_max=True, allow_nan=False)
float_values = st.one_of(
    st.floats(
        min_value=-4.0, max_value=4.0, allow_nan=False, allow_infinity=False, allow_subnormal=False
    ),
    st.sampled_from(TIE_VALUES),  # exact ties, including across signs and signed zeros
)
int_values = st.integers(min_value=-3, max_value=3).map(float)


@st.composite
def tensors(draw, shape, elements=float_values, dtype=torch.float64):
    values = draw(st.lists(elements, min_size=math.prod(shape), max_size=math.prod(shape)))
    return torch.tensor(values, dtype=dtype).reshape(shape)


def shapes(min_dims, max_dims, max_side=4, max_numel=48):
    sides = st.lists(st.integers(1, max_side), min_size=min_dims, max_size=max_dims)
    return sides.map(tuple).filter(lambda s: math.prod(s) <= max_numel)


def topk_shapes(kind, **kw):
    return shapes(1 if kind is Unstructured else 2, 4, **kw)


# ---------------------------------------------------------------------------------------------
# Independent references for the top-k family


def group_rows(kind, t: torch.Tensor) -> torch.Tensor:
    """(n_groups, group_size): row g holds the entries of group g, by explicit re-indexing."""
    if kind is Unstructured:
        return t.reshape(-1, 1)
    if kind is Filter:
        return t.reshape(t.shape[0], -1)
    if kind is Channel:
        return torch.stack([t[:, c].reshape(-1) for c in range(t.shape[1])])
    if kind is Column:
        flat = t.reshape(t.shape[0], -1)
        return torch.stack([flat[:, j] for j in range(flat.shape[1])])
    raise AssertionError(kind)


def n_groups_ref(kind, shape) -> int:
    return {
        Unstructured: math.prod(shape),
        Filter: shape[0],
        Channel: shape[1] if len(shape) > 1 else 0,
        Column: math.prod(shape[1:]),
    }[kind]


def support_mask(kind, shape, groups) -> torch.Tensor:
    """The boolean mask that keeps exactly the given groups."""
    m = torch.zeros(shape, dtype=torch.bool)
    idx = list(groups)
    if kind is Unstructured:
        m.view(-1)[idx] = True
    elif kind is Filter:
        m[idx] = True
    elif kind is Channel:
        m[:, idx] = True
    elif kind is Column:
        m.view(shape[0], -1)[:, idx] = True
    return m


def kept_groups(kind, mask: torch.Tensor) -> list[int]:
    """Groups the mask keeps; asserts every group is kept whole or dropped whole."""
    rows = group_rows(kind, mask)
    whole = rows.all(1)
    assert torch.equal(whole, rows.any(1)), "a group is only partly kept"
    return whole.nonzero().flatten().tolist()


def order_desc(scores) -> list[int]:
    """Indices by descending score, ties to the lower index."""
    return sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))


def sq_dist(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).pow(2).sum())


def tol(w: torch.Tensor) -> float:
    return 1e-9 * (1.0 + float(w.double().pow(2).sum()))


# ---------------------------------------------------------------------------------------------
# Top-k family: Unstructured, Filter, Channel, Column


@pytest.mark.parametrize("kind", TOPK_KINDS, ids=lambda k: k.__name__)
@SETTINGS
@given(data=st.data(), ratio=ratios)
def test_topk_projection_lies_in_set_with_exact_count(kind, data, ratio):
    w = data.draw(topk_shapes(kind).flatmap(tensors))
    s = kind(ratio)
    G = n_groups_ref(kind, w.shape)
    k = n_keep(ratio, G)
    assert k == max(1, G - round_half_up(ratio * G))

    mask = s.mask(w)
    assert mask.dtype == torch.bool and mask.shape == w.shape
    groups = kept_groups(kind, mask)
    assert len(groups) == k
    assert int(mask.sum()) == s.kept(w.shape) == k * (w.numel() // G)
    assert torch.equal(mask, support_mask(kind, w.shape, groups))

    p = s.project(w)
    assert torch.equal(p, torch.where(mask, w, torch.zeros_like(w)))  # kept entries unchanged
    nonzero_groups = group_rows(kind, p).ne(0).any(1).sum()
    assert int(nonzero_groups) <= k
    assert s.contains(p)


@pytest.mark.parametrize("kind", TOPK_KINDS, ids=lambda k: k.__name__)
@SETTINGS
@given(data=st.data(), ratio=ratios)
def test_topk_projection_is_idempotent(kind, data, ratio):
    w = data.draw(topk_shapes(kind).flatmap(tensors))
    s = kind(ratio)
    p = s.project(w)
    assert torch.equal(s.project(p), p)
    assert torch.equal(s.project(w.float()), s.project(s.project(w.float())))


@pytest.mark.parametrize("kind", TOPK_KINDS, ids=lambda k: k.__name__)
@SETTINGS
@given(data=st.data(), ratio=ratios)
def test_topk_projection_is_nearest_point_by_brute_force(kind, data, ratio):
    w = data.draw(topk_shapes(kind, max_side=3, max_numel=12).flatmap(tensors))
    G = n_groups_ref(kind, w.shape)
    k = n_keep(ratio, G)
    d_proj = sq_dist(w, kind(ratio).project(w))
    best = math.inf
    for size in range(k + 1):  # every support of at most k groups (exactly k dominates)
        for groups in itertools.combinations(range(G), size):
            best = min(best, sq_dist(w, w * support_mask(kind, w.shape, groups)))
    assert d_proj <= best + tol(w)


@pytest.mark.parametrize("kind", TOPK_KINDS, ids=lambda k: k.__name__)
@SETTINGS
@given(data=st.data(), ratio=ratios)
def test_topk_ties_go_to_lower_index(kind, data, ratio):
    # Small integers: energies are exact in float64, so ties are real ties.
    w = data.draw(topk_shapes(kind).flatmap(lambda sh: tensors(sh, int_values)))
    G = n_groups_ref(kind, w.shape)
    energy = group_rows(kind, w).pow(2).sum(1)
    expected = sorted(order_desc(energy)[: n_keep(ratio, G)])
    assert kept_groups(kind, kind(ratio).mask(w)) == expected


@pytest.mark.parametrize(
    "kind,shape",
    [(Unstructured, (7,))] + [(k, sh) for k in TOPK_KINDS for sh in [(6, 5), (4, 6, 3, 3)]],
    ids=lambda v: v.__name__ if isinstance(v, type) else "x".join(map(str, v)),
)
@pytest.mark.parametrize("fill", [0.0, 1.0, -2.5])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.9])
def test_topk_all_equal_keeps_lowest_indices(kind, fill, shape, ratio):
    w = torch.full(shape, fill)
    G = n_groups_ref(kind, shape)
    k = n_keep(ratio, G)
    assert kept_groups(kind, kind(ratio).mask(w)) == list(range(k))


def round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


# ---------------------------------------------------------------------------------------------
# N:M


def nm_groups(shape, m) -> list[list[tuple[int, ...]]]:
    """Index tuples of every group of m consecutive inputs (dim 1) at each other position."""
    others = [range(shape[0])] + [range(d) for d in shape[2:]]
    out = []
    for pos in itertools.product(*others):
        for g in range(shape[1] // m):
            out.append([(pos[0], g * m + j, *pos[1:]) for j in range(m)])
    return out


@st.composite
def nm_cases(draw, elements=float_values, max_groups=24, max_m=5):
    m = draw(st.integers(2, max_m))
    n = draw(st.integers(1, m - 1))
    ndim = draw(st.sampled_from([2, 3, 4]))
    shape = (draw(st.integers(1, 3)), m * draw(st.integers(1, 3)), *draw(
        st.lists(st.integers(1, 2), min_size=ndim - 2, max_size=ndim - 2)))
    if math.prod(shape) // m > max_groups:
        shape = (1, m, *([1] * (ndim - 2)))
    return NM(n, m), draw(tensors(shape, elements))


@SETTINGS
@given(case=nm_cases())
def test_nm_projection_lies_in_set_with_exact_count(case):
    s, w = case
    mask, p = s.mask(w), s.project(w)
    assert mask.dtype == torch.bool and mask.shape == w.shape
    groups = nm_groups(w.shape, s.m)
    assert len(groups) * s.m == w.numel()
    for g in groups:
        assert sum(bool(mask[i]) for i in g) == s.n
        assert sum(bool(p[i] != 0) for i in g) <= s.n
    assert int(mask.sum()) == s.kept(w.shape) == len(groups) * s.n
    assert torch.equal(p, torch.where(mask, w, torch.zeros_like(w)))
    assert s.contains(p)


@SETTINGS
@given(case=nm_cases())
def test_nm_projection_is_idempotent(case):
    s, w = case
    p = s.project(w)
    assert torch.equal(s.project(p), p)


@SETTINGS
@given(case=nm_cases(max_groups=3, max_m=4))
def test_nm_projection_is_nearest_point_by_brute_force(case):
    s, w = case
    groups = nm_groups(w.shape, s.m)
    assert len(groups) <= 3
    d_proj = sq_dist(w, s.project(w))
    choices = [c for size in range(s.n + 1) for c in itertools.combinations(range(s.m), size)]
    best = math.inf
    for pick in itertools.product(choices, repeat=len(groups)):
        mask = torch.zeros(w.shape, dtype=torch.bool)
        for g, keep in zip(groups, pick, strict=True):
            for j in keep:
                mask[g[j]] = True
        best = min(best, sq_dist(w, w * mask))
    assert d_proj <= best + tol(w)


@SETTINGS
@given(case=nm_cases(elements=int_values))
def test_nm_ties_go_to_lower_index(case):
    s, w = case
    mask = s.mask(w)
    for g in nm_groups(w.shape, s.m):
        mags = [abs(float(w[i])) for i in g]
        expected = sorted(order_desc(mags)[: s.n])
        assert [j for j, i in enumerate(g) if mask[i]] == expected


@pytest.mark.parametrize("shape", [(2, 8), (3, 4, 3, 3), (1, 12, 2)])
@pytest.mark.parametrize("fill", [0.0, 1.5])
def test_nm_all_equal_keeps_first_n_of_each_group(shape, fill):
    s = NM(2, 4)
    mask = s.mask(torch.full(shape, fill))
    for g in nm_groups(shape, 4):
        assert [bool(mask[i]) for i in g] == [True, True, False, False]


# ---------------------------------------------------------------------------------------------
# Kernel patterns


def keep_rows(patterns) -> list[list[bool]]:
    return [[j not in set(p) for j in range(9)] for p in patterns]


@st.composite
def pattern_cases(draw, elements=float_values, max_kernels=6):
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), 3, 3)
    if shape[0] * shape[1] > max_kernels:
        shape = (1, max_kernels, 3, 3)
    custom = draw(st.booleans())
    if custom:
        zeros = draw(st.integers(1, 8))
        pats = draw(st.lists(
            st.lists(st.integers(0, 8), min_size=zeros, max_size=zeros, unique=True).map(tuple),
            min_size=1, max_size=5))
        s = Pattern(tuple(pats))
    else:
        s = Pattern()
    return s, draw(tensors(shape, elements))


def test_default_patterns_are_the_thirteen_five_of_nine():
    assert Pattern().patterns == KERNEL_PATTERNS
    assert len(KERNEL_PATTERNS) == 13 and len(set(KERNEL_PATTERNS)) == 13
    assert all(len(set(p)) == 4 and all(0 <= i < 9 for i in p) for p in KERNEL_PATTERNS)
    assert Pattern().kept((4, 2, 3, 3)) == 8 * 5


@SETTINGS
@given(case=pattern_cases())
def test_pattern_projection_lies_in_set_with_exact_count(case):
    s, w = case
    mask, p = s.mask(w), s.project(w)
    assert mask.dtype == torch.bool and mask.shape == w.shape
    rows = keep_rows(s.patterns)
    for km, kp in zip(mask.reshape(-1, 9).tolist(), p.reshape(-1, 9).tolist(), strict=True):
        assert km in rows  # the mask is exactly one pattern
        assert any(all(kp[j] == 0 for j in pat) for pat in s.patterns)  # zeros cover a pattern
    n_kernels = w.numel() // 9
    assert int(mask.sum()) == s.kept(w.shape) == n_kernels * (9 - len(set(s.patterns[0])))
    assert torch.equal(p, torch.where(mask, w, torch.zeros_like(w)))
    assert s.contains(p)


@SETTINGS
@given(case=pattern_cases())
def test_pattern_projection_is_idempotent(case):
    s, w = case
    p = s.project(w)
    assert torch.equal(s.project(p), p)


@SETTINGS
@given(case=pattern_cases(max_kernels=2))
def test_pattern_projection_is_nearest_point_by_brute_force(case):
    s, w = case
    d_proj = sq_dist(w, s.project(w))
    rows = torch.tensor(keep_rows(s.patterns))
    kernels = w.reshape(-1, 9)
    best = math.inf
    for pick in itertools.product(range(len(s.patterns)), repeat=kernels.shape[0]):
        z = kernels * rows[list(pick)]
        best = min(best, sq_dist(kernels, z))
    assert d_proj <= best + tol(w)


@SETTINGS
@given(case=pattern_cases(elements=int_values))
def test_pattern_ties_pick_first_pattern(case):
    s, w = case
    rows = keep_rows(s.patterns)
    for km, k in zip(s.mask(w).reshape(-1, 9).tolist(), w.reshape(-1, 9).tolist(), strict=True):
        energy = [sum(k[j] ** 2 for j in range(9) if r[j]) for r in rows]
        assert km == rows[order_desc(energy)[0]]


@pytest.mark.parametrize("fill", [0.0, 2.0])
def test_pattern_all_equal_kernels_take_first_pattern(fill):
    mask = Pattern().mask(torch.full((3, 2, 3, 3), fill))
    assert all(k == keep_rows(KERNEL_PATTERNS)[0] for k in mask.reshape(-1, 9).tolist())


# ---------------------------------------------------------------------------------------------
# topk_mask and segmented_topk_masks


def oracle_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    out = torch.zeros(scores.numel(), dtype=torch.bool)
    out[order_desc(scores.tolist())[: max(0, k)]] = True
    return out


score_values = st.one_of(
    st.sampled_from([0.0, -0.0, 0.5, 1.0, 2.0, 3.0, 7.0]),
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False, width=32),
    st.sampled_from([1e-30, 1e30, 3.4e38, float("inf")]),
)


@SETTINGS
@given(scores=st.lists(score_values, min_size=1, max_size=40), data=st.data())
def test_topk_mask_matches_oracle(scores, data):
    t = torch.tensor(scores, dtype=torch.float32)
    k = data.draw(st.integers(-1, t.numel() + 1))
    mask = topk_mask(t, k)
    assert mask.dtype == torch.bool and mask.shape == t.shape
    assert int(mask.sum()) == min(max(k, 0), t.numel())
    assert torch.equal(mask, oracle_topk(t, k))


@st.composite
def segment_cases(draw):
    lengths = draw(st.lists(st.integers(1, 30), min_size=1, max_size=6))
    lengths.insert(draw(st.integers(0, len(lengths))), 1)  # always a segment of length 1
    segs = [torch.tensor(draw(st.lists(score_values, min_size=n, max_size=n)), dtype=torch.float32)
            for n in lengths]
    ks = [draw(st.integers(0, n + 1)) for n in lengths]
    return segs, ks


@SETTINGS
@given(case=segment_cases())
def test_segmented_sort_and_loop_return_identical_masks(case):
    segs, ks = case
    by_sort = segmented_topk_masks(segs, ks, strategy="sort")
    by_loop = segmented_topk_masks(segs, ks, strategy="loop")
    by_auto = segmented_topk_masks(segs, ks)  # CPU: loops
    assert len(by_sort) == len(by_loop) == len(segs)
    for s, k, a, b, c in zip(segs, ks, by_sort, by_loop, by_auto, strict=True):
        assert a.dtype == b.dtype == torch.bool and a.shape == b.shape == s.shape
        assert torch.equal(a, b) and torch.equal(b, c)
        assert torch.equal(a, oracle_topk(s, k))
        assert int(a.sum()) == min(k, s.numel())


def test_segmented_sort_and_loop_agree_on_integer_ties_with_singletons():
    segs = [torch.tensor([1.0, 1.0, 0.0, 1.0]), torch.tensor([5.0]), torch.tensor([2.0] * 9),
            torch.tensor([0.0]), torch.tensor([3.0, 0.0, 3.0, 3.0, 1.0, 3.0])]
    ks = [2, 1, 4, 0, 3]
    by_sort = segmented_topk_masks(segs, ks, strategy="sort")
    by_loop = segmented_topk_masks(segs, ks, strategy="loop")
    expected = [[1, 1, 0, 0], [1], [1, 1, 1, 1, 0, 0, 0, 0, 0], [0], [1, 0, 1, 1, 0, 0]]
    for a, b, e in zip(by_sort, by_loop, expected, strict=True):
        assert a.tolist() == b.tolist() == [bool(x) for x in e]


def test_segmented_sort_treats_negative_zero_as_zero():
    # -0.0 is a valid non-negative score (it equals 0.0); its sign bit must not leak into the
    # packed segment id of the sort keys.
    segs = [torch.tensor([0.0, -0.0, 1.0, 0.0]), torch.tensor([2.0, -0.0]), torch.tensor([-0.0])]
    ks = [2, 1, 1]
    by_sort = segmented_topk_masks(segs, ks, strategy="sort")
    by_loop = segmented_topk_masks(segs, ks, strategy="loop")
    for a, b in zip(by_sort, by_loop, strict=True):
        assert torch.equal(a, b)
    assert [m.tolist() for m in by_sort] == [[True, False, True, False], [True, False], [True]]


def test_segmented_rejects_unknown_strategy():
    with pytest.raises(ValueError, match="strategy"):
        segmented_topk_masks([torch.ones(3)], [1], strategy="bogus")


# ---------------------------------------------------------------------------------------------
# Projector


@FEW
@given(data=st.data(), ratio=ratios, strategy=st.sampled_from(["loop", "sort"]))
def test_projector_global_budget_one_threshold(data, ratio, strategy):
    ties = st.sampled_from(TIE_VALUES)
    small = shapes(1, 3, max_side=5, max_numel=40)
    a = data.draw(small.flatmap(lambda sh: tensors(sh, ties, torch.float32)))
    b = data.draw(small.flatmap(lambda sh: tensors(sh, float_values, torch.float32)))
    g = Unstructured(ratio, scope="global")
    proj = Projector({"a": g, "b": g}, strategy=strategy)
    masks = proj.masks({"a": a, "b": b})
    assert masks["a"].shape == a.shape and masks["b"].shape == b.shape
    flat_mask = torch.cat([masks["a"].flatten(), masks["b"].flatten()])
    mags = torch.cat([a.flatten(), b.flatten()]).abs()
    assert int(flat_mask.sum()) == n_keep(ratio, a.numel() + b.numel())
    oracle = oracle_topk(mags, n_keep(ratio, mags.numel()))
    if oracle[:a.numel()].any() and oracle[a.numel():].any():
        if (~flat_mask).any():
            assert mags[flat_mask].min() >= mags[~flat_mask].max()  # one threshold across both
        # ties go to the lower index of the concatenation in name order
        assert torch.equal(flat_mask, oracle)
    elif int(oracle.sum()) >= 2:  # one tensor would be emptied: it keeps its largest entry instead
        assert masks["a"].any() and masks["b"].any()
        assert int((flat_mask != oracle).sum()) == 2
    other = Projector({"a": g, "b": g}, strategy="sort" if strategy == "loop" else "loop")
    other_masks = other.masks({"a": a, "b": b})
    assert all(torch.equal(masks[n], other_masks[n]) for n in "ab")
    projected = proj.project({"a": a, "b": b})
    assert all(torch.equal(projected[n], t * masks[n]) for n, t in (("a", a), ("b", b)))
    assert proj.kept({"a": a.shape, "b": b.shape}) == {"a": None, "b": None}


def test_projector_global_budget_differs_from_per_layer():
    big, small = torch.arange(1.0, 9.0), torch.full((8,), 0.5)
    g = Unstructured(0.5, scope="global")
    for strategy in ("loop", "sort"):
        m = Projector({"big": g, "small": g}, strategy=strategy).masks({"big": big, "small": small})
        assert int(m["big"].sum()) == 7 and m["small"].tolist() == [True] + [False] * 7  # never emptied
        per_layer = {"big": Unstructured(0.5), "small": Unstructured(0.5)}
        m = Projector(per_layer, strategy=strategy).masks({"big": big, "small": small})
        assert int(m["big"].sum()) == 4 and m["small"].tolist() == [True] * 4 + [False] * 4


@FEW
@given(data=st.data(), strategy=st.sampled_from(["loop", "sort"]))
def test_projector_matches_each_sets_own_mask(data, strategy):
    ties = st.one_of(st.sampled_from(TIE_VALUES), float_values)
    w4 = data.draw(tensors((4, 4, 3, 3), ties, torch.float32))
    w2 = data.draw(tensors((6, 8), ties, torch.float32))
    r = [data.draw(ratios) for _ in range(4)]
    sets = {
        "u": Unstructured(r[0]), "f": Filter(r[1]), "c": Channel(r[2]), "col": Column(r[3]),
        "nm": NM(2, 4), "pat": Pattern(), "u2": Unstructured(r[0]),
    }
    tens = {"u": w2, "f": w4, "c": w4, "col": w2, "nm": w4, "pat": w4, "u2": w4}
    masks = Projector(sets, strategy=strategy).masks(tens)
    assert list(masks) == list(sets)
    for n, s in sets.items():
        assert torch.equal(masks[n], s.mask(tens[n])), n
        assert int(masks[n].sum()) == s.kept(tens[n].shape), n


@pytest.mark.parametrize("strategy", ["loop", "sort", "auto"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_projector_masks_rejects_non_finite_naming_the_tensor(strategy, bad):
    g = Unstructured(0.5, scope="global")
    sets = {"conv1.weight": g, "conv2.weight": g, "fc.weight": NM(2, 4), "head.weight": Filter(0.5)}
    good = {n: torch.randn(4, 8) for n in sets}
    for name in sets:
        tens = dict(good)
        poisoned = tens[name].clone()
        poisoned[1, 2] = bad
        tens[name] = poisoned
        with pytest.raises(FloatingPointError, match=re.escape(name)) as err:
            Projector(sets, strategy=strategy).masks(tens)
        assert all(other not in str(err.value) for other in sets if other != name)
        with pytest.raises(FloatingPointError, match=re.escape(name)):
            Projector(sets, strategy=strategy).project(tens)


def test_projector_scaled_halves_ratios_and_keeps_global_budget_shared():
    g = Unstructured(0.8, scope="global")
    twin = Unstructured(0.8, scope="global", budget="twin")  # its own budget key: a separate budget
    sets = {"a": g, "b": g, "f": Filter(0.6), "c": Channel(0.5, scope="global"), "t": twin,
            "nm": NM(2, 4), "pat": Pattern()}
    proj = Projector(sets, strategy="loop")
    half = proj.scaled(0.5)

    assert half.strategy == proj.strategy and half.names() == proj.names()
    hs = half.sets
    assert hs["a"] is hs["b"]
    assert isinstance(hs["a"], Unstructured) and hs["a"].scope == "global"
    assert hs["a"].ratio == pytest.approx(0.4)
    assert hs["t"] is not hs["a"] and hs["t"].ratio == pytest.approx(0.4)
    assert hs["t"].scope == "global"
    assert isinstance(hs["f"], Filter) and hs["f"].ratio == pytest.approx(0.3)
    assert hs["f"].scope == "layer"
    assert isinstance(hs["c"], Channel) and hs["c"].ratio == pytest.approx(0.25)
    assert hs["c"].scope == "global"
    assert hs["nm"] == NM(2, 4) and hs["pat"] == Pattern()
    assert proj.sets["a"].ratio == 0.8 and proj.sets["f"].ratio == 0.6  # original untouched

    big, small = torch.arange(1.0, 11.0), torch.full((10,), 0.01)  # 20 entries, keep 12 at 0.4
    tens = {"a": big, "b": small, "f": torch.randn(10, 4), "c": torch.randn(3, 4),
            "t": torch.randn(5), "nm": torch.randn(2, 8), "pat": torch.randn(2, 2, 3, 3)}
    for strategy in ("loop", "sort"):
        m = Projector(hs, strategy=strategy).masks(tens)
        assert m["a"].all() and int(m["b"].sum()) == 2 and m["b"][:2].all()  # one shared budget
        assert int(m["a"].sum() + m["b"].sum()) == n_keep(0.4, 20)
        assert int(m["f"].sum()) == n_keep(0.3, 10) * 4
        assert int(m["t"].sum()) == n_keep(0.4, 5)
    m_full = proj.masks(tens)
    assert int(m_full["a"].sum() + m_full["b"].sum()) == n_keep(0.8, 20)


def test_global_budget_by_meaning_and_one_weight_per_tensor():
    a, b = torch.arange(1.0, 9.0), torch.full((8,), 0.01)
    equal = Projector({"a": Unstructured(0.5, scope="global"), "b": Unstructured(0.5, scope="global")})
    masks = equal.masks({"a": a, "b": b})
    assert int(masks["a"].sum()) == 7 and int(masks["b"].sum()) == 1  # one budget, b keeps its best entry
    separate = Projector({"a": Unstructured(0.5, scope="global", budget="x"),
                          "b": Unstructured(0.5, scope="global", budget="y")}).masks({"a": a, "b": b})
    assert int(separate["a"].sum()) == 4 and int(separate["b"].sum()) == 4
    with pytest.raises(SpecError, match="asks for ratio 0.7"):
        Projector({"a": Unstructured(0.5, scope="global"), "b": Unstructured(0.7, scope="global")})
