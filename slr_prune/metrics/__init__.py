"""Measurements of a model: parameters and MACs (dense and sparse)."""

from .flops import cost_summary, layer_costs

__all__ = ["cost_summary", "layer_costs"]
