"""Pruning solvers, registered by name in `SOLVERS` (`register_solver` adds one)."""

from .admm import ADMM
from .base import SOLVERS, PenaltySolver, Solver, register_solver
from .magnitude import Magnitude
from .slr import SLR

__all__ = ["SLR", "ADMM", "Magnitude", "Solver", "PenaltySolver", "SOLVERS", "register_solver"]
