"""Losses Keras lacks: label smoothing for integer class labels.

Keras's `SparseCategoricalCrossentropy` has no `label_smoothing` (only the
one-hot `CategoricalCrossentropy` has), so a recipe's `label_smoothing` would
be silently ignored for the zoo's classifiers, which train on class ids.
`zoo.training.compile_model` swaps this loss in when the recipe asks for
smoothing; the data and the accuracy metric keep their integer labels.
"""

import keras
from keras import ops

from zoo import checks


@keras.saving.register_keras_serializable(package="zoo")
class SmoothedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels against targets smoothed by `label_smoothing`.

    The same as `CategoricalCrossentropy(label_smoothing=...)` on one-hot
    labels: the target is `(1 - e) * one_hot + e / num_classes`.

    Args:
        label_smoothing: e in [0, 1). Defaults to 0.1.
        from_logits: whether predictions are logits. Defaults to False.
        name: Defaults to "smoothed_sparse_categorical_crossentropy".
    """

    def __init__(self, label_smoothing=0.1, from_logits=False,
                 name="smoothed_sparse_categorical_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = checks.fraction("label_smoothing", label_smoothing)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        classes = y_pred.shape[-1]
        labels = ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:-1]), "int32")
        target = ops.one_hot(labels, classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            target, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing,
                "from_logits": self.from_logits}
