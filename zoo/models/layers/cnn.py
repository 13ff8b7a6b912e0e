"""Custom layers of the CNN families (imported inside builders only).

Keras has no local response normalization, which AlexNet needs, so it lives
here as a small serializable layer built from `keras.ops`.  Keras 3's
`BatchNormalization` trains from unfused ops; `BatchNormalization` here is
the same layer whose training step on TensorFlow runs the fused kernel.
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


@keras.saving.register_keras_serializable(package="zoo")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose training step runs one fused kernel.

    Keras 3 normalizes a training batch with `tf.nn.moments` and
    `tf.nn.batch_normalization` (and back-propagates through each of their
    ~10 element-wise ops, in float32 even under a bfloat16 policy); TensorFlow's
    `FusedBatchNormV3` does the forward pass in one oneDNN kernel and the
    backward pass in one more.  Measured on a 2-core Sapphire Rapids CPU (batch
    128, 2026-12-05): resnet20 trains 1.13x faster in float32, and 2.5x faster
    under `mixed_bfloat16`, where the unfused layer's casts and float32
    statistics cost more than the AMX convolutions save (`benchmarks/
    fit_speed.py --mixed-precision auto`: 2.11x plain Keras's steps/s).

    The arithmetic is Keras's (biased batch variance in the moving average,
    the same momentum and epsilon); inference, other backends, masks, renorm,
    synchronized statistics and inputs other than 4-D channels-last fall back
    to the Keras layer, so a saved model predicts as the Keras layer would.
    """

    def _fusable(self, inputs, training, mask):
        if keras.backend.backend() != "tensorflow" or training is not True or not self.trainable:
            return False
        if mask is not None or self.renorm or self.synchronized or len(inputs.shape) != 4:
            return False
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        return self.axis in (-1, 3) and dtype in ("float32", "bfloat16", "float16")

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        scale = (tf.cast(self.gamma, "float32") if self.scale
                 else tf.ones((channels,), "float32"))
        offset = (tf.cast(self.beta, "float32") if self.center
                  else tf.zeros((channels,), "float32"))
        outputs, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=scale, offset=offset, mean=tf.zeros((0,), "float32"),
            variance=tf.zeros((0,), "float32"), epsilon=self.epsilon,
            exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
        # The kernel returns the unbiased (n / (n - 1)) variance; Keras averages
        # the biased one.
        shape = tf.shape(inputs)
        count = tf.cast(shape[0] * shape[1] * shape[2], "float32")
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum
                                + tf.cast(mean, self.moving_mean.dtype) * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum
                                    + tf.cast(variance, self.moving_variance.dtype)
                                    * (1.0 - momentum))
        return tf.cast(outputs, self.compute_dtype)
