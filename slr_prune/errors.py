"""The errors slr_prune raises for bad input; each message names the input and what is valid."""


class SpecError(ValueError):
    """A pruning specification that cannot be applied to the model as written."""


class StateError(ValueError):
    """A solver or mask state that does not fit the model it is loaded into."""


class RunFolderBusyError(RuntimeError):
    """A run folder that another live slr-prune run holds (its lock is taken)."""


class DiskFullError(OSError):
    """A write that failed for want of space; `filename` names the file being written."""
