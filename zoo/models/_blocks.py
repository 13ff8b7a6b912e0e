"""Pieces shared by the CNN families (AlexNet, VGG, ResNet).

Argument checks, the shared prologue/epilogue (`cnn_model`: input, head,
weights), local weight files, the paper's L2 weight decay and
`stage_outputs` (the stages each backbone declares in its `FeatureInfo`).
Keras's ImageNet weight files live in `zoo.models.weights`.

No Keras at import time: everything that touches Keras runs inside builders.
"""

import os

from zoo import checks
from zoo._lazy import keras
from zoo.models.weights import imagenet_weights

POOLINGS = (None, "avg", "max")


def check_common(*, name, input_shape, min_size, num_classes, include_top, pooling,
                 weights, weight_decay=0.0, channels=None):
    """Validate the keras.applications-style arguments before Keras is touched.

    Args:
        name: registry name, used in messages.
        input_shape: (height, width, channels); height and width may be None
            with include_top=False (any image size, as in keras.applications).
        min_size: smallest height/width the downsampling allows.
        num_classes, include_top, pooling, weights, weight_decay: builder args.
        channels: required channel count, or None.

    Returns:
        (input_shape tuple, weights: None, a file path or "imagenet").
    """
    if not isinstance(include_top, bool):
        raise ValueError(f"include_top must be True or False. "
                         f"Received: include_top={include_top!r}")
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels) with rank 3; the "
                         f"minimum for {name} is ({min_size}, {min_size}, 1). "
                         f"Received: input_shape={input_shape!r}")
    if not include_top and (input_shape[0] is None or input_shape[1] is None):
        sized = tuple(min_size if d is None else d for d in input_shape[:2])
        checks.shape("input_shape", (*sized, input_shape[2]), rank=3,
                     min_shape=(min_size, min_size, 1), channels=channels)
        input_shape = (*(None if d is None else int(d) for d in input_shape[:2]),
                       int(input_shape[2]))
    else:
        input_shape = checks.shape("input_shape", input_shape, rank=3,
                                   min_shape=(min_size, min_size, 1), channels=channels)
    checks.positive_int("num_classes", num_classes)
    checks.choice("pooling", pooling, POOLINGS)
    checks.non_negative_float("weight_decay", weight_decay)
    weights = check_weights(weights, name=name)
    if weights == "imagenet":
        if input_shape[-1] != 3:
            raise ValueError(f"weights='imagenet' needs 3 input channels (the file's first "
                             f"convolution is RGB); for {input_shape[-1]} channels use "
                             f"transfer.load_backbone, which adapts the first convolution. "
                             f"Received: input_shape={input_shape!r}")
        if include_top and num_classes != 1000:
            raise ValueError(f"weights='imagenet' with include_top=True needs num_classes=1000. "
                             f"Received: num_classes={num_classes!r}")
    return input_shape, weights


def check_weights(weights, *, name):
    """None, "imagenet" (for a model whose layout matches a keras.applications model),
    or the path of an existing local weights file."""
    if weights is None:
        return None
    if weights == "imagenet":
        from zoo.registry import get_spec
        info = get_spec(name).features
        if info is None or info.imagenet is None:
            raise ValueError(f"keras.applications publishes no ImageNet weights for {name}'s "
                             f"architecture; train it (e.g. `zoo train`) and pass the saved "
                             f".weights.h5 path, or fine-tune one of the weight-compatible "
                             f"models (resnet50/101/152, resnet50v2, vgg16/19). "
                             f"Received: weights='imagenet'")
        return "imagenet"
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be None, 'imagenet' or the path of a local "
                         f".weights.h5/.h5 file. Received: weights={weights!r}")
    path = os.fspath(weights)
    if not path.endswith(".h5"):
        raise ValueError(f"weights must be a .weights.h5 (or legacy .h5) file. "
                         f"Received: weights={path!r}")
    if not os.path.isfile(path):
        raise ValueError(f"weights file not found. Received: weights={path!r}")
    return path


def load_weights(model, path, **args):
    """Load `path` (or "imagenet") into `model`, turning a layout mismatch into a clear ValueError."""
    if path is None:
        return model
    if path == "imagenet":
        from zoo.registry import get_spec
        app = get_spec(args.pop("spec_name")).features.imagenet
        path = imagenet_weights(app, include_top=args.get("include_top", False))
    args.pop("spec_name", None)
    from zoo.models import weights as weights_module
    try:
        with weights_module.quiet_loading():  # one warning per skipped container otherwise
            model.load_weights(path)
    except (ValueError, KeyError) as err:
        described = ", ".join(f"{k}={v!r}" for k, v in args.items())
        mismatch = weights_module.load_mismatch(err)
        if mismatch is not None:
            expected, found, total, name = mismatch
            more = f" ({total} layers do not fit)" if total and total > 1 else ""
            detail = (f"layer {name!r} " if name else "a layer ") + \
                f"expects weights of shape {expected}, the file holds {found}{more}"
        else:
            detail = weights_module.first_line(err)
        raise ValueError(f"weights file {path!r} does not fit {model.name} built with "
                         f"{described} (channels, include_top and num_classes must match the "
                         f"model the file was saved from): {detail}") from None
    return model


def batch_norm(**kwargs):
    """`keras.layers.BatchNormalization(**kwargs)` that trains with TensorFlow's fused kernel.

    The same layer, weights and arithmetic (see `zoo.models.layers.cnn.BatchNormalization`).
    """
    from zoo.models.layers.cnn import BatchNormalization
    return BatchNormalization(**kwargs)


def l2(weight_decay):
    """Kernel regularizer equal to SGD weight decay `weight_decay` (or None).

    The papers' weight decay adds `weight_decay * w` to the gradient, which
    is the gradient of `weight_decay / 2 * sum(w**2)`; Keras's `L2(l)` adds
    `l * sum(w**2)`, hence the halving.
    """
    return keras.regularizers.L2(weight_decay / 2.0) if weight_decay else None


def output_dtype():
    """dtype for a classifier's last layer: "float32" under a mixed policy, else the policy's.

    Keras's mixed-precision guide: a float16/bfloat16 softmax loses the
    precision the loss needs (bfloat16 keeps 8 bits), and served outputs
    should stay float32 whatever the model trained in.
    """
    return "float32" if keras.config.dtype_policy().name.startswith("mixed_") else None


def head(x, *, include_top, pooling, num_classes, classifier_activation, regularizer=None,
         flatten_top=None):
    """keras.applications head: `flatten_top(x)` or avg pool + dense, else optional pooling."""
    layers = keras.layers
    if include_top:
        if flatten_top is not None:
            return flatten_top(x)
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        return layers.Dense(num_classes, activation=classifier_activation,
                            kernel_regularizer=regularizer, name="predictions",
                            dtype=output_dtype())(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def cnn_model(body, *, spec_name, min_size, input_shape, num_classes, include_top, weights,
              pooling, classifier_activation, weight_decay, name, flatten_top=None,
              **weight_args):
    """The prologue and epilogue every zoo CNN shares around its `body`.

    Checks the keras.applications-style arguments, makes the input, calls
    `body(inputs, regularizer)`, adds the head (`flatten_top(x, regularizer)`
    for a flatten-dense top, else global average pooling + classifier) and
    loads `weights`.
    """
    input_shape, weights = check_common(
        name=spec_name, input_shape=input_shape, min_size=min_size, num_classes=num_classes,
        include_top=include_top, pooling=pooling, weights=weights, weight_decay=weight_decay)
    if weights == "imagenet":
        # Find (or fetch) the file before building: offline without a cached
        # file fails at once, not after minutes of building a ResNet-152.
        from zoo.registry import get_spec
        weights = imagenet_weights(get_spec(spec_name).features.imagenet,
                                   include_top=include_top)
    reg = l2(weight_decay)
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = body(inputs, reg)
    top = (lambda t: flatten_top(t, reg)) if flatten_top is not None else None
    x = head(x, include_top=include_top, pooling=pooling, num_classes=num_classes,
             classifier_activation=classifier_activation, regularizer=reg, flatten_top=top)
    model = keras.Model(inputs, x, name=name)
    return load_weights(model, weights, spec_name=spec_name, input_shape=input_shape,
                        include_top=include_top, num_classes=num_classes, **weight_args)


def stage_outputs(model, name=None):
    """The output tensor of each resolution stage of a zoo CNN, shallow to deep.

    The stages are the ones the spec declares (`zoo.registry.backbone_info`);
    `name` is the registered name, by default the model's own name.

    Returns:
        list of (layer_name, KerasTensor).
    """
    from zoo.registry import backbone_info
    return backbone_info(name or model.name).stage_outputs(model)
