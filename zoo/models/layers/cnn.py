"""Custom layers of the CNN families (imported inside builders only).

Keras has no local response normalization, which AlexNet needs, so it lives
here as a small serializable layer built from `keras.ops`.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class LocalResponseNormalization(keras.layers.Layer):
    """Cross-channel local response normalization (Krizhevsky et al. 2012, section 3.3).

    b_i = a_i / (bias + alpha * sum_{j=i-n/2}^{i+n/2} a_j ** 2) ** beta, summing
    over `size` adjacent channels (clipped at the edges).  The paper's alpha
    multiplies the plain sum (Caffe divides alpha by `size`; TensorFlow's
    `local_response_normalization` does not, and agrees with this layer).

    Args:
        size: number of adjacent channels n (odd). Defaults to 5.
        bias: k. Defaults to 2.0.
        alpha: Defaults to 1e-4.
        beta: Defaults to 0.75.
    """

    def __init__(self, size=5, bias=2.0, alpha=1e-4, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise ValueError(f"size must be a positive odd integer. Received: size={size!r}")
        self.size = size
        self.bias = bias
        self.alpha = alpha
        self.beta = beta

    def call(self, inputs):
        radius = self.size // 2
        channels = inputs.shape[-1]
        squared = ops.pad(ops.square(inputs), [[0, 0]] * (len(inputs.shape) - 1)
                          + [[radius, radius]])
        # Sum of `size` shifted views = windowed sum over the channel axis.
        window = squared[..., 0:channels]
        for offset in range(1, self.size):
            window = window + squared[..., offset:offset + channels]
        return inputs / ops.power(self.bias + self.alpha * window, self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size, bias=self.bias, alpha=self.alpha, beta=self.beta)
        return config
