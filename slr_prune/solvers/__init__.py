"""Pruning solvers, registered by name in `SOLVERS` (`register_solver` adds one), each with its config."""

from .admm import ADMM, ADMMConfig
from .base import SOLVERS, PenaltySolver, Solver, register_solver, solver_config
from .config import CadenceConfig, PenaltyConfig, SolverConfig
from .magnitude import Magnitude, MagnitudeConfig
from .schedules import Cadence, RhoSchedule
from .slr import SLR, SLRConfig

__all__ = ["SLR", "ADMM", "Magnitude", "Solver", "PenaltySolver", "SOLVERS", "register_solver", "solver_config",
           "SolverConfig", "CadenceConfig", "PenaltyConfig", "SLRConfig", "ADMMConfig", "MagnitudeConfig", "Cadence",
           "RhoSchedule"]
