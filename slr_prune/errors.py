"""The errors slr_prune raises for bad input; each message names the input and what is valid."""


class SpecError(ValueError):
    """A pruning specification that cannot be applied to the model as written."""


class StateError(ValueError):
    """A solver or mask state that does not fit the model it is loaded into."""
