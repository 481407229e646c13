"""Layer-wise reconstruction: per layer, min ‖X(W′ − W)ᵀ‖² over W′ in the layer's sparsity set.

calibration.py builds each layer's H = XᵀX from the network as already pruned, problem.py holds
the problem and the least-squares re-fit, solvers.py the layer solvers (slr, admm, obs,
magnitude), config.py the settings.  engine/reconstruct.py runs them over a model.
"""

from .calibration import LAYER_TYPES, StageInputs, flat_weight, full_passes, layer_gram, layer_grams
from .config import CALIBRATION_BATCHES, DAMPING, Reconstruction
from .problem import LayerProblem, damped, refit
from .solvers import LAYER_SOLVERS, LayerSolver, check_form, register_layer_solver

__all__ = ["LAYER_TYPES", "StageInputs", "flat_weight", "full_passes", "layer_gram", "layer_grams", "Reconstruction",
           "CALIBRATION_BATCHES", "DAMPING", "LayerProblem", "damped", "refit", "LAYER_SOLVERS", "LayerSolver",
           "check_form", "register_layer_solver"]
