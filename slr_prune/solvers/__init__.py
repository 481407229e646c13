"""Pruning solvers with one API: SLR (the method), ADMM and Magnitude (the baselines)."""

from .admm import ADMM
from .base import PenaltySolver, Solver
from .magnitude import Magnitude
from .slr import SLR

SOLVERS = {"slr": SLR, "admm": ADMM, "magnitude": Magnitude}

__all__ = ["SLR", "ADMM", "Magnitude", "Solver", "PenaltySolver", "SOLVERS"]
