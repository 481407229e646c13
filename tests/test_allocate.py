"""Budget allocation: rounding, uniform bisection, the convex program, explicit ratios."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from slr_prune.allocate import (
    allocate_convex,
    allocate_uniform,
    allowed_counts,
    convex_envelope,
    counts_from_ratios,
    polynomial_value,
)
from slr_prune.errors import SpecError

torch.set_num_threads(1)

# A chain conv_a (3 → A) → conv_b (A → B) → conv_c (B → 10): MACs 100·x_a + 400·x_a·x_b + 200·x_b + 50.
SIZES = {"a": 32, "b": 64}
POLY = {("a",): 100.0, ("a", "b"): 400.0, ("b",): 200.0, (): 50.0}


def test_allowed_counts():
    assert allowed_counts(64, 8) == [8, 16, 24, 32, 40, 48, 56, 64]
    assert allowed_counts(20, 8) == [8, 16, 20]
    assert allowed_counts(16, 8, min_keep=0.6) == [16]
    assert allowed_counts(5, 1, min_keep=0.5) == [3, 4, 5]
    with pytest.raises(ValueError, match="round_to"):
        allowed_counts(16, 0)


def test_uniform_meets_target_and_uses_the_budget():
    total = polynomial_value(POLY, {})
    for target, round_to in ((0.5, 1), (0.3, 8), (0.7, 4)):
        alloc = allocate_uniform(SIZES, POLY, target, round_to=round_to)
        frac = {g: k / SIZES[g] for g, k in alloc.counts.items()}
        cost = polynomial_value(POLY, frac) / total
        assert cost <= target + 1e-12 and abs(cost - alloc.predicted) < 1e-12
        assert all(k % round_to == 0 for k in alloc.counts.values())
        for g in SIZES:  # maximal: no group can take one more step
            bigger = [c for c in allowed_counts(SIZES[g], round_to, 0.1) if c > alloc.counts[g]]
            if bigger:
                up = {**frac, g: bigger[0] / SIZES[g]}
                assert polynomial_value(POLY, up) / total > target
    with pytest.raises(ValueError, match="out of reach"):
        allocate_uniform(SIZES, POLY, 0.05, min_keep=0.5)
    with pytest.raises(ValueError, match="fraction"):
        allocate_uniform(SIZES, POLY, 2.0)


def test_convex_envelope():
    pieces = convex_envelope([(0.25, 4.0), (0.5, 1.0), (0.75, 0.9)])
    # (0.75, 0.9) lies above the chord from (0.5, 1) to (1, 0) in log-keep: not on the envelope
    ys = [math.log(0.25), math.log(0.5), 0.0]
    values = [max(s * y + b for s, b in pieces) for y in ys]
    assert values == pytest.approx([4.0, 1.0, 0.0])
    assert max(s * math.log(0.75) + b for s, b in pieces) < 0.9
    noisy = convex_envelope([(0.5, -3.0)])  # a negative rise is noise: clamped to 0
    assert max(s * math.log(0.5) + b for s, b in noisy) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="keep fraction"):
        convex_envelope([(1.5, 1.0)])


def test_convex_prunes_the_insensitive_group_and_beats_uniform():
    # a is 10× more sensitive than b at every level
    sens = {"a": [(0.25, 10.0), (0.5, 3.0), (0.75, 1.0)], "b": [(0.25, 1.0), (0.5, 0.3), (0.75, 0.1)]}
    alloc = allocate_convex(SIZES, POLY, 0.5, sens, round_to=1)
    uni = allocate_uniform(SIZES, POLY, 0.5, round_to=1)
    assert alloc.predicted <= 0.5 + 1e-12
    assert alloc.counts["a"] / 32 > alloc.counts["b"] / 64
    env = {g: convex_envelope(p) for g, p in sens.items()}

    def loss(counts):
        return sum(max(s * math.log(counts[g] / SIZES[g]) + b for s, b in env[g]) for g in SIZES)

    assert loss(alloc.counts) < loss(uni.counts)
    # the rounded, repaired solution is optimal over the whole integer grid up to one step
    total = polynomial_value(POLY, {})
    best = min(loss({"a": a, "b": b}) for a, b in itertools.product(range(4, 33), range(7, 65))
               if polynomial_value(POLY, {"a": a / 32, "b": b / 64}) / total <= 0.5)
    assert loss(alloc.counts) <= best + 0.05
    assert alloc.info["status"] == "optimal"


def test_convex_on_a_real_graph_meets_a_params_target():
    from slr_prune.models import create_model
    from slr_prune.structured import ChannelGraph

    graph = ChannelGraph(create_model("resnet20", 10, 32), torch.randn(1, 3, 32, 32))
    poly = graph.costs.polynomial("params")
    sizes = graph.sizes()
    sens = {g: [(0.5, 1.0 + i % 3), (0.25, 3.0 + i % 3)] for i, g in enumerate(sizes)}
    alloc = allocate_convex(sizes, poly, 0.6, sens, kind="params", round_to=4)
    plan = {g: torch.arange(sizes[g]) < k for g, k in alloc.counts.items()}
    assert graph.costs.cost(plan, "params") <= 0.6 * graph.costs.total("params") + 1
    assert abs(graph.costs.cost(plan, "params") / graph.costs.total("params") - alloc.predicted) < 1e-6
    with pytest.raises(ValueError, match="no sensitivity"):
        allocate_convex(sizes, poly, 0.6, {}, kind="params")


def test_counts_from_ratios():
    sizes = {"layer1.0.conv1": 16, "layer2.0.conv1": 32, "conv1": 16}
    members = {"conv1": ["conv1", "layer1.0.conv2", "layer1.1.conv2"]}
    counts = counts_from_ratios(sizes, {"layer1.*": 0.5, "layer2.*": 0.25}, members, round_to=1)
    assert counts == {"layer1.0.conv1": 8, "layer2.0.conv1": 24, "conv1": 8}  # conv1 via its member
    assert counts_from_ratios(sizes, {"layer2.*": 0.3}, round_to=8) == {"layer2.0.conv1": 24}
    with pytest.raises(ValueError, match="match no prunable group"):
        counts_from_ratios(sizes, {"fc": 0.5})
    with pytest.raises(SpecError):
        counts_from_ratios(sizes, {"conv1": 1.5})
