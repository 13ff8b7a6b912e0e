"""Transfer learning: pretrained backbones, verified weights and fine-tuning methods.

    import transfer
    transfer.list_backbones()            # (name, source, input size, preprocessing) rows
    result = transfer.finetune("resnet20", "fashion_mnist", weights="runs/resnet20_fashion",
                               method="two_phase", head_epochs=3, epochs=5)

Backbones come from the zoo's registered models (`backbone=True`, features
declared with `@register`), `keras.applications` ("keras:MobileNetV2") and
finished zoo run directories: one class per kind of name and of weights in
`transfer.backbones` (`NAME_KINDS`, `WEIGHT_KINDS`).  Fine-tuning runs
through `zoo.training`'s seam and writes an ordinary run directory that
`zoo evaluate` and `zoo export` use unchanged.  Importing this package does
not import TensorFlow.
"""

from transfer.backbones import KERAS_BACKBONES, list_backbones, resolve  # noqa: F401

# The function lives in transfer.finetuning (a submodule named `finetune` would
# shadow the function once imported).
_LAZY = {"finetune": "transfer.finetuning", "METHODS": "transfer.finetuning",
         "finetune_space": "transfer.finetuning",
         "FinetuneResult": "transfer.finetuning", "load_backbone": "transfer.backbones",
         "tune_finetune": "transfer.search", "FinetuneSearchResult": "transfer.search"}

__all__ = ["KERAS_BACKBONES", "list_backbones", "resolve", "load_backbone", *_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'transfer' has no attribute {name!r}")
    import importlib
    module = importlib.import_module(_LAZY[name])
    return getattr(module, "build" if name == "load_backbone" else name)
