"""Deferred imports, so that listing and `--help` never pay for TensorFlow.

`import keras` pulls in TensorFlow (about 3.5 s).  Model files only touch
Keras inside builder bodies, so they hold this proxy instead of the module:
the first attribute access imports the real module.
"""

import importlib


class LazyModule:
    """Module proxy that imports `name` on first attribute access."""

    def __init__(self, name):
        self._name = name
        self._module = None

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self):
        state = "loaded" if self._module is not None else "not loaded"
        return f"<LazyModule {self._name!r} ({state})>"


keras = LazyModule("keras")
