"""Serializable custom layers of the sequence families (rnn, attention, forecasters).

Imported inside builder bodies and by the text/time-series hooks, never at
`zoo.models` import time (importing this module imports Keras).  Every layer
is registered under the "zoo" package so `.keras` files reload with
`keras.saving.load_model` once this module is imported.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class PositionalEmbedding(keras.layers.Layer):
    """Token embedding plus a learned position embedding (Vaswani et al. 2017, sec. 3.5).

    Self-attention is permutation-invariant, so the position of each token
    has to be added to its embedding; a learned table is what BERT/ViT use.

    Args:
        sequence_length: maximum number of tokens.
        vocab_size: size of the token vocabulary (ids in [0, vocab_size)).
        embedding_dim: width of both embeddings.
        mask_zero: treat token id 0 as padding and emit a mask. Defaults to True.
    """

    def __init__(self, sequence_length, vocab_size, embedding_dim, mask_zero=True, **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = int(sequence_length)
        self.vocab_size = int(vocab_size)
        self.embedding_dim = int(embedding_dim)
        self.mask_zero = bool(mask_zero)
        self.token_embedding = keras.layers.Embedding(vocab_size, embedding_dim,
                                                      name="token_embedding")
        self.position_embedding = keras.layers.Embedding(sequence_length, embedding_dim,
                                                         name="position_embedding")

    def build(self, input_shape):
        self.token_embedding.build(input_shape)
        self.position_embedding.build((self.sequence_length,))
        super().build(input_shape)

    def call(self, inputs):
        length = ops.shape(inputs)[-1]
        positions = ops.arange(0, length, dtype="int32")
        return self.token_embedding(inputs) + self.position_embedding(positions)

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        return ops.not_equal(inputs, 0)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.embedding_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"sequence_length": self.sequence_length, "vocab_size": self.vocab_size,
                       "embedding_dim": self.embedding_dim, "mask_zero": self.mask_zero})
        return config


@keras.saving.register_keras_serializable(package="zoo")
class Denormalization(keras.layers.Layer):
    """`x * std + mean`: maps a model's normalised forecast back to original units.

    The inverse of `keras.layers.Normalization` for the target columns, so a
    forecaster trained on standardised data is saved and exported as one model
    that takes raw windows and returns raw values.

    Args:
        mean: per-target means (list of floats; broadcast over the last axis).
        std: per-target standard deviations (list of positive floats).
    """

    def __init__(self, mean, std, **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError("mean and std must be non-empty and of equal length. "
                             f"Received: mean={mean!r}, std={std!r}")

    def call(self, inputs):
        mean = ops.convert_to_tensor(self.mean, dtype=inputs.dtype)
        std = ops.convert_to_tensor(self.std, dtype=inputs.dtype)
        if len(self.mean) == 1:
            # One target: the model's output is (batch, horizon).
            return inputs * std[0] + mean[0]
        return inputs * std + mean

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mean": self.mean, "std": self.std})
        return config


@keras.saving.register_keras_serializable(package="zoo")
class StandardizedError(keras.losses.Loss):
    """Mean squared (or absolute) error in units of each target's training std.

    A forecaster outputs original units (after `Denormalization`); measuring
    its loss in standardised units keeps gradients O(1) whatever the scale of
    the series (float16 backprop under mixed precision overflows above 65504)
    and makes loss values comparable across datasets.  The minimiser is the
    same as plain MSE/MAE.

    Args:
        std: per-target standard deviations (list of positive floats).
        kind: "mse" or "mae". Defaults to "mse".
    """

    def __init__(self, std, kind="mse", name=None, **kwargs):
        super().__init__(name=name or f"standardized_{kind}", **kwargs)
        self.std = [float(v) for v in std]
        self.kind = kind
        if kind not in ("mse", "mae"):
            raise ValueError(f"kind must be 'mse' or 'mae'. Received: kind={kind!r}")

    def call(self, y_true, y_pred):
        std = ops.convert_to_tensor(self.std if len(self.std) > 1 else self.std[0],
                                    dtype=y_pred.dtype)
        error = (ops.cast(y_true, y_pred.dtype) - y_pred) / std
        error = ops.square(error) if self.kind == "mse" else ops.abs(error)
        return ops.mean(error, axis=tuple(range(1, len(error.shape))))

    def get_config(self):
        config = super().get_config()
        config.update({"std": self.std, "kind": self.kind})
        return config
