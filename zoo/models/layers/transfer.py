"""Custom objects of fine-tuned models (`transfer`): input preprocessing, layer-wise LR decay.

`ImagePreprocessing` puts a backbone's expected input scaling inside the
model, so a fine-tuned model (and its SavedModel) takes the zoo's images and
nobody has to remember Keras's `preprocess_input` mode at serving time.

`LayerDecay<Optimizer>` (one per optimizer the zoo builds) scales the update
of each variable by a per-variable factor.  Keras has no per-layer learning
rate (keras-team/keras issue 21741), and scaling the gradient is not the same
thing under Adam/RMSprop (the normalisation cancels the scale), so the
factor multiplies the learning rate inside `update_step`, which every Keras
optimizer's update is linear in.
"""

import keras
from keras import ops

MODES = ("none", "raw", "caffe", "tf", "torch")
# keras.applications.imagenet_utils constants.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="zoo")
class ImagePreprocessing(keras.layers.Layer):
    """A backbone's `preprocess_input` as a layer.

    Inputs are multiplied by `scale` first (the zoo's pipeline gives images in
    [0, 1]; Keras's modes expect [0, 255]), then:
    "none" leaves the input unchanged (no scaling either), "raw" only scales
    (EfficientNet normalises inside the model), "caffe" flips RGB to BGR and
    subtracts the ImageNet mean, "tf" maps to [-1, 1], "torch" maps to [0, 1]
    and normalises with the ImageNet mean and standard deviation.  With other
    than 3 channels (in-channel adaptation) the per-channel constants are
    replaced by their average.

    Args:
        mode: one of "none", "raw", "caffe", "tf", "torch". Defaults to "none".
        scale: factor applied before the mode. Defaults to 255.0.
    """

    def __init__(self, mode="none", scale=255.0, **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}. Received: mode={mode!r}")
        self.mode = mode
        self.scale = float(scale)

    def _constants(self, values, channels):
        values = list(values) if channels == 3 else [sum(values) / len(values)] * channels
        return ops.convert_to_tensor(values, dtype=self.compute_dtype)

    def call(self, inputs):
        if self.mode == "none":
            return inputs
        channels = inputs.shape[-1]
        x = ops.cast(inputs, self.compute_dtype) * self.scale
        if self.mode == "caffe":
            if channels == 3:
                x = ops.flip(x, axis=-1)
            return x - self._constants(CAFFE_MEAN_BGR, channels)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            return (x / 255.0 - self._constants(TORCH_MEAN, channels)) / \
                self._constants(TORCH_STD, channels)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "scale": self.scale}


class _LayerDecayMixin:
    """Scales each variable's update by `scales[variable.path]` (1 when absent)."""

    def __init__(self, *args, scales=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.scales = {str(k): float(v) for k, v in dict(scales or {}).items()}

    def build(self, var_list):
        super().build(var_list)
        # update_step receives the backend variable (no `.path` under TensorFlow);
        # the optimizer's own variable index finds its scale.
        self._update_scales = [self.scales.get(v.path, 1.0) for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        scale = self._update_scales[self._get_variable_index(variable)]
        if scale != 1.0:
            learning_rate = ops.cast(learning_rate, variable.dtype) * scale
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "scales": dict(self.scales)}


LAYER_DECAY_OPTIMIZERS = {}
for _base in (keras.optimizers.SGD, keras.optimizers.Adam, keras.optimizers.AdamW,
              keras.optimizers.RMSprop, keras.optimizers.Adagrad, keras.optimizers.Adadelta):
    _name = f"LayerDecay{_base.__name__}"
    _cls = type(_name, (_LayerDecayMixin, _base), {
        "__doc__": f"`keras.optimizers.{_base.__name__}` with a per-variable update scale "
                   f"(`scales`: {{variable.path: factor}}).",
        "__module__": __name__})
    LAYER_DECAY_OPTIMIZERS[_base] = keras.saving.register_keras_serializable(
        package="zoo", name=_name)(_cls)
    globals()[_name] = _cls
del _base, _name, _cls


def with_update_scales(optimizer, scales):
    """A copy of `optimizer` (not yet built) whose variables' updates are scaled by `scales`."""
    base = type(optimizer)
    if base in LAYER_DECAY_OPTIMIZERS.values():
        base = base.__mro__[2]
    if base not in LAYER_DECAY_OPTIMIZERS:
        raise ValueError(f"layer_decay supports {[b.__name__ for b in LAYER_DECAY_OPTIMIZERS]}. "
                         f"Received: optimizer={type(optimizer).__name__}")
    config = optimizer.get_config()
    config.pop("scales", None)
    return LAYER_DECAY_OPTIMIZERS[base].from_config({**config, "scales": dict(scales)})
