"""Pieces shared by the CNN families (AlexNet, VGG, ResNet).

Argument checks, the keras.applications-style head, local weight files,
the paper's L2 weight decay and `stage_outputs`, which finds the end of each
resolution stage so that a model can serve as a backbone.

No Keras at import time: everything that touches Keras runs inside builders.
"""

import os
import re

from zoo import checks
from zoo._lazy import keras

POOLINGS = (None, "avg", "max")

# keras.applications names of the models whose weight layout the zoo copies,
# used to tell a user how to obtain ImageNet weights offline.
KERAS_APPLICATIONS = {
    "vgg16": "VGG16", "vgg19": "VGG19", "resnet50": "ResNet50", "resnet101": "ResNet101",
    "resnet152": "ResNet152", "resnet50v2": "ResNet50V2",
}


def check_common(*, name, input_shape, min_size, num_classes, include_top, pooling,
                 weights, weight_decay=0.0, channels=None):
    """Validate the keras.applications-style arguments before Keras is touched.

    Args:
        name: registry name, used in messages.
        input_shape: (height, width, channels).
        min_size: smallest height/width the downsampling allows.
        num_classes, include_top, pooling, weights, weight_decay: builder args.
        channels: required channel count, or None.

    Returns:
        (input_shape tuple, weights path or None).
    """
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels) with rank 3; the "
                         f"minimum for {name} is ({min_size}, {min_size}, 1). "
                         f"Received: input_shape={input_shape!r}")
    input_shape = checks.shape("input_shape", input_shape, rank=3,
                               min_shape=(min_size, min_size, 1), channels=channels)
    checks.positive_int("num_classes", num_classes)
    if not isinstance(include_top, bool):
        raise ValueError(f"include_top must be True or False. "
                         f"Received: include_top={include_top!r}")
    checks.choice("pooling", pooling, POOLINGS)
    checks.non_negative_float("weight_decay", weight_decay)
    return input_shape, check_weights(weights, name=name)


def check_weights(weights, *, name):
    """None, or the path of an existing local weights file; never downloads."""
    if weights is None:
        return None
    if weights == "imagenet":
        app = KERAS_APPLICATIONS.get(name)
        if app:
            how = (f"on a machine with network access run `keras.applications.{app}("
                   f"weights='imagenet', include_top=..., input_shape=...).save_weights("
                   f"'{name}_imagenet.weights.h5')`, copy that file here and pass "
                   f"weights='/path/to/{name}_imagenet.weights.h5' (the layer layout is the same)")
        else:
            how = ("keras.applications publishes no ImageNet weights for this architecture; "
                   "train it (e.g. `zoo train`) and pass the saved .weights.h5 path")
        raise ValueError(f"weights='imagenet' is not downloaded by the zoo (it works offline). "
                         f"For {name}: {how}. Received: weights='imagenet'")
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be None or the path of a local .weights.h5/.h5 file. "
                         f"Received: weights={weights!r}")
    path = os.fspath(weights)
    if not path.endswith(".h5"):
        raise ValueError(f"weights must be a .weights.h5 (or legacy .h5) file. "
                         f"Received: weights={path!r}")
    if not os.path.isfile(path):
        raise ValueError(f"weights file not found. Received: weights={path!r}")
    return path


def load_weights(model, path, **args):
    """Load `path` into `model`, turning a layout mismatch into a clear ValueError."""
    if path is None:
        return model
    try:
        model.load_weights(path)
    except (ValueError, KeyError) as err:
        described = ", ".join(f"{k}={v!r}" for k, v in args.items())
        raise ValueError(f"weights file {path!r} does not fit {model.name} built with "
                         f"{described} (channels, include_top and num_classes must match the "
                         f"model the file was saved from): {err}") from err
    return model


def l2(weight_decay):
    """Kernel regularizer equal to SGD weight decay `weight_decay` (or None).

    The papers' weight decay adds `weight_decay * w` to the gradient, which
    is the gradient of `weight_decay / 2 * sum(w**2)`; Keras's `L2(l)` adds
    `l * sum(w**2)`, hence the halving.
    """
    return keras.regularizers.L2(weight_decay / 2.0) if weight_decay else None


def head(x, *, include_top, pooling, num_classes, classifier_activation, regularizer=None,
         flatten_top=None):
    """keras.applications head: `flatten_top(x)` or avg pool + dense, else optional pooling."""
    layers = keras.layers
    if include_top:
        if flatten_top is not None:
            return flatten_top(x)
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        return layers.Dense(num_classes, activation=classifier_activation,
                            kernel_regularizer=regularizer, name="predictions")(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


# Stage ends, by layer name: ResNets (keras.applications naming) end a stage
# with the last `conv{stage}_block{n}_out`; VGG and AlexNet with `block{stage}_pool`;
# anything else may name a layer `..._stage{i}_out`.
_STAGE_PATTERNS = (
    re.compile(r"^conv(\d+)_block(\d+)_out$"),
    re.compile(r"^block(\d+)_pool$"),
    re.compile(r"_stage(\d+)_out$"),
)


def stage_outputs(model):
    """The output tensor of each resolution stage of a zoo CNN, shallow to deep.

    Works on models built by this package (also after `.keras` reload), since
    it reads layer names: ResNets `conv{k}_block{n}_out` (the last block of
    stage k; pre-activation ResNets end with `post_relu`), VGG/AlexNet
    `block{k}_pool`, otherwise layers named `*_stage{k}_out`.  Use them as
    backbone features: `keras.Model(model.input, [t for _, t in stage_outputs(model)])`.

    Returns:
        list of (layer_name, KerasTensor).
    """
    found = {}
    for layer in model.layers:
        for pattern in _STAGE_PATTERNS:
            match = pattern.search(layer.name)
            if match:
                stage = int(match.group(1))
                order = int(match.group(2)) if pattern.groups > 1 else 0
                if stage not in found or order > found[stage][0]:
                    found[stage] = (order, layer)
                break
    if not found:
        raise ValueError(f"Model {model.name!r} has no stage-output layers (names like "
                         f"'conv3_block4_out', 'block2_pool' or '*_stage2_out').")
    stages = [found[k][1] for k in sorted(found)]
    names = {layer.name for layer in model.layers}
    if "post_relu" in names:  # pre-activation nets finish the last stage after the final add
        stages[-1] = model.get_layer("post_relu")
    return [(layer.name, layer.output) for layer in stages]
