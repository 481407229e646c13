"""PR-DARTS: pruning-aware architecture search (PrunedConv2d/PrunedLinear, DARTS cells, search,
derive, train and prune).  Every choice the paper leaves open is documented in docs/search.md."""

from .bilevel import SearchConfig, SearchResult, search
from .genotype import Genotype, plot_genotype
from .ops import PrunedConv2d, PrunedLinear, pruned_modules, to_plain_modules
from .space import OPS, DerivedNetwork, SearchNetwork, register_op
from .workflow import SearchPruneResult, derived_network, search_prune

__all__ = ["PrunedConv2d", "PrunedLinear", "pruned_modules", "to_plain_modules", "Genotype", "plot_genotype",
           "SearchConfig", "SearchResult", "search", "OPS", "register_op", "SearchNetwork", "DerivedNetwork",
           "SearchPruneResult", "search_prune", "derived_network"]
