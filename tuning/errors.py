"""The errors a search raises (no TensorFlow): every tuning module may import them."""


class SearchError(ValueError):
    """A search cannot start as asked (bad argument, occupied directory, ...)."""


class SearchFailed(RuntimeError):
    """A search that stopped because its trials kept failing (the message names the last)."""
