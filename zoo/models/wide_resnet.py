"""Wide Residual Networks (Zagoruyko & Komodakis 2016).

WRN-d-k for CIFAR: a 3x3 stem of 16 filters, three groups of n = (d-4)/6
pre-activation basic blocks (BN-ReLU-conv3x3-[dropout]-BN-ReLU-conv3x3) with
16k, 32k and 64k filters (the second and third group stride 2 in their first
block), a final BN-ReLU, global average pooling and the classifier.  As in the
authors' code (github.com/szagoruyko/wide-residual-networks): convolutions
have no bias, He-normal initialisation, and where a block changes the width
or the resolution, its shortcut is a 1x1 convolution of the block's
pre-activated input (which the block's first convolution shares).

`wrn16_4` (2.7M), `wrn28_10` (36.5M) and `wrn40_4` (8.9M): the paper's
trainable parameter counts (Tables 1/4) are what `count_params` gives less the
BN moving statistics; tests/test_cnn.py checks them.

Weight decay: builders take `weight_decay` (the paper's 5e-4) as an L2 kernel
penalty of `weight_decay / 2`, as `zoo.models.resnet` does.
"""

from zoo import checks
from zoo._lazy import keras
from zoo.models._blocks import batch_norm, cnn_model
from zoo.registry import FeatureInfo, Recipe, register_variant


def _conv(filters, kernel, *, strides=1, reg, name):
    # "valid": the 3x3 convolutions pad explicitly (see _conv3x3).
    return keras.layers.Conv2D(
        filters, kernel, strides=strides, use_bias=False, name=name, kernel_regularizer=reg,
        kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal"))


def _conv3x3(x, filters, *, stride, reg, name):
    # Symmetric padding of 1 as in the authors' Torch code; Keras's "same" pads
    # only bottom/right when a stride-2 convolution meets an even-sized map.
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    return _conv(filters, 3, strides=stride, reg=reg, name=name)(x)


def _bn_relu(x, name):
    x = batch_norm(epsilon=1e-5, momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def _wide_block(x, filters, *, stride, dropout, reg, name):
    """Pre-activation basic block B(3,3) with optional dropout between the convolutions."""
    preact = _bn_relu(x, f"{name}_preact")
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv(filters, 1, strides=stride, reg=reg, name=f"{name}_0_conv")(preact)
    else:
        shortcut = x
    y = _conv3x3(preact, filters, stride=stride, reg=reg, name=f"{name}_1_conv")
    y = _bn_relu(y, f"{name}_1")
    if dropout:
        y = keras.layers.Dropout(dropout, name=f"{name}_dropout")(y)
    y = _conv3x3(y, filters, stride=1, reg=reg, name=f"{name}_2_conv")
    return keras.layers.Add(name=f"{name}_out")([shortcut, y])


def wide_resnet(*, depth, widen_factor, spec_name, input_shape=(32, 32, 3), num_classes=10,
                include_top=True, weights=None, pooling=None, classifier_activation="softmax",
                dropout=0.0, weight_decay=5e-4, name):
    """A Wide ResNet WRN-`depth`-`widen_factor`; the registered variants fix both.

    Args:
        depth: 6n+4 layers, n blocks per group.
        widen_factor: k, the groups have 16k, 32k and 64k filters.
        spec_name: the registered name.
        input_shape: (height, width, channels), at least 8x8. Defaults to (32, 32, 3).
        num_classes: number of classes. Defaults to 10.
        include_top: keep global average pooling and the classifier. Defaults to True.
        weights: None (random init) or the path of a local .weights.h5 file. Defaults to None.
        pooling: with include_top=False: None, "avg" or "max". Defaults to None.
        classifier_activation: activation of the classifier. Defaults to "softmax".
        dropout: dropout rate between each block's two convolutions (the paper's
            0.3 for its dropout rows). Defaults to 0.0.
        weight_decay: the paper's weight decay, applied as an L2 kernel penalty
            of weight_decay / 2. Defaults to 5e-4.
        name: model name (each variant's default is its registered name).
    """
    if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise ValueError(f"depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...). "
                         f"Received: depth={depth!r}")
    checks.positive_int("widen_factor", widen_factor)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a number in [0, 1). Received: dropout={dropout!r}")
    n = (depth - 4) // 6

    def body(inputs, reg):
        x = _conv3x3(inputs, 16, stride=1, reg=reg, name="conv1_conv")
        for group, filters in enumerate((16 * widen_factor, 32 * widen_factor,
                                         64 * widen_factor), start=2):
            for i in range(1, n + 1):
                x = _wide_block(x, filters, stride=2 if (i == 1 and group > 2) else 1,
                                dropout=dropout, reg=reg, name=f"conv{group}_block{i}")
        return _bn_relu(x, "post")

    return cnn_model(body, spec_name=spec_name, min_size=8, input_shape=input_shape,
                     num_classes=num_classes, include_top=include_top, weights=weights,
                     pooling=pooling, classifier_activation=classifier_activation,
                     weight_decay=weight_decay, name=name)


_PAPER = "Zagoruyko & Komodakis 2016, Wide Residual Networks"
# Section 4: SGD with Nesterov momentum 0.9, batch 128, lr 0.1, weight decay
# 5e-4 (in the builder), 200 epochs, pad-4 crop + flip. The paper multiplies
# the rate by 0.2 at epochs 60, 120 and 160; a Recipe's "step" schedule divides
# it by 10 at 50% and 75% (He et al.'s), so cosine decay, which later WRN
# reproductions use, stands in for it.
RECIPE = Recipe(optimizer="nesterov", learning_rate=0.1, momentum=0.9, schedule="cosine",
                batch_size=128, epochs=200, augment=("crop", "flip"),
                early_stopping_patience=None)
# The paper's printed trainable parameter counts, by registered name.
PAPER_PARAMS = {"wrn16_4": "2.7M", "wrn28_10": "36.5M", "wrn40_4": "8.9M"}


def _space(hp):
    return {"dropout": hp.Choice("dropout", [0.0, 0.3], default=0.0),
            "weight_decay": hp.Choice("weight_decay", [1e-4, 5e-4], default=5e-4)}


def _variant(depth, k, num_params, trainable):
    name = f"wrn{depth}_{k}"
    n = (depth - 4) // 6
    return register_variant(
        name, wide_resnet,
        model_args=dict(depth=depth, widen_factor=k, spec_name=name),
        defaults=dict(name=name),
        doc=(f"WRN-{depth}-{k}: 3 groups x {n} pre-activation basic blocks, "
             f"{16 * k}/{32 * k}/{64 * k} filters.\n\nArgs: as `wide_resnet`."),
        family="wide_resnet", task="classification", test_input_shape=(8, 8, 3),
        min_input_shape=(8, 8, 1), paper=_PAPER, num_params=num_params,
        params_note=(f"32x32x3, 10 classes: {trainable} trainable (the paper: "
                     f"{PAPER_PARAMS[name]}) + BN moving statistics"),
        recipe=RECIPE, search_space=_space,
        features=FeatureInfo(stages=[f"conv2_block{n}_out", f"conv3_block{n}_out",
                                     "post_relu"],
                             reductions=(1, 2, 4), first_conv="conv1_conv"),
        test_kwargs={"num_classes": 3})


# Parameter counts with default arguments (32x32x3, 10 classes).
wrn16_4 = _variant(16, 4, 2_752_506, "2,748,890")
wrn28_10 = _variant(28, 10, 36_497_146, "36,479,194")
wrn40_4 = _variant(40, 4, 8_959_994, "8,949,210")
