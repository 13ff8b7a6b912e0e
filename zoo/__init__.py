"""A Keras model zoo: registry, training, tuning, transfer and export.

    import zoo
    model = zoo.build("lenet5", num_classes=10)
    zoo.list_models("resnet*")
    result = zoo.train("lenet5", data="digits", epochs=10)

Importing `zoo` does not import TensorFlow; `train`, `evaluate` and the
export functions load it on first use.
"""

from zoo.registry import (ModelSpec, Recipe, backbone_info, build, get_spec, list_models,
                          register, register_variant)
# Importing the families registers them. The registry never imports them
# (models import the registry, not the other way round); Python runs this
# file before any `zoo.*` module, so the registry is full before anyone can
# look a model up.
from zoo import models as _models  # noqa: E402,F401

__version__ = "0.1.0"

_LAZY = {
    "train": "zoo.training",
    "evaluate": "zoo.training",
    "export_saved_model": "zoo.export",
    "export_run": "zoo.export",
    "standard_callbacks": "zoo.callbacks",
    "load_data": "zoo.training",
    "plan": "zoo.training",
    "build_model": "zoo.training",
    "fit": "zoo.training",
    "evaluate_model": "zoo.training",
    "load_run": "zoo.runs",
}

__all__ = ["ModelSpec", "Recipe", "backbone_info", "build", "get_spec", "list_models", "register",
           "register_variant", *_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(_LAZY[name]), name)
