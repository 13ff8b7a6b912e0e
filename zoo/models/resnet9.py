"""The DAWNBench ResNet-9 (David Page 2018, "How to train your ResNet").

The network that trained CIFAR-10 to 94% in 26 seconds on one V100:

    prep:    conv 64, BN, ReLU
    layer1:  conv 128, BN, ReLU, max-pool 2, + residual (2 x conv 128, BN, ReLU)
    layer2:  conv 256, BN, ReLU, max-pool 2
    layer3:  conv 512, BN, ReLU, max-pool 2, + residual (2 x conv 512, BN, ReLU)
    head:    global max-pool, dense (no bias), logits scaled by 0.125

All convolutions are 3x3, stride 1, "same", without bias (BN follows).  The
0.125 logit scale is Page's: it keeps the initial softmax soft, which the
one-cycle schedule's high peak rate needs.
"""

from zoo._lazy import keras
from zoo.models._blocks import batch_norm, cnn_model, output_dtype
from zoo.registry import FeatureInfo, Recipe, register


def _conv_bn(x, filters, *, reg, name):
    layers = keras.layers
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=reg,
                      kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = batch_norm(epsilon=1e-5, momentum=0.9, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _layer(x, filters, *, residual, reg, name):
    x = _conv_bn(x, filters, reg=reg, name=name)
    x = keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    if not residual:
        return x
    y = _conv_bn(x, filters, reg=reg, name=f"{name}_res1")
    y = _conv_bn(y, filters, reg=reg, name=f"{name}_res2")
    return keras.layers.Add(name=f"{name}_out")([x, y])


_PAPER = ("Page 2018, How to train your ResNet (DAWNBench CIFAR-10 entry; "
          "myrtle.ai blog series)")
# Page's final recipe: 24 epochs, batch 512, SGD Nesterov momentum 0.9, one-cycle
# (linear from 0 to 0.4 at epoch 5, linear down to 0 at 24; the Recipe's
# "one_cycle" rises over 30% of the steps and anneals by cosine), weight decay
# 5e-4 (in the builder), label smoothing 0.2, pad-4 crop + flip + 8x8 cutout
# ("erasing": a random rectangle of 2-33% of the image, half the time).
# Page sums the loss and divides the rate by the batch size: with Keras's mean
# loss that is the plain rate 0.4.
RECIPE = Recipe(optimizer="nesterov", learning_rate=0.4, momentum=0.9, schedule="one_cycle",
                batch_size=512, epochs=24, label_smoothing=0.2,
                augment=("crop", "flip", "erasing"), early_stopping_patience=None)


def _space(hp):
    return {"weight_decay": hp.Choice("weight_decay", [1e-4, 5e-4], default=5e-4),
            "recipe": {"learning_rate": hp.Choice("learning_rate", [0.1, 0.2, 0.4],
                                                  default=0.4)}}


@register(family="resnet9", task="classification", test_input_shape=(8, 8, 3),
          min_input_shape=(8, 8, 1), paper=_PAPER, num_params=6_577_600,
          params_note="32x32x3, 10 classes: 6,573,120 trainable (Page's 6.57M) + 4,480 BN "
                      "moving statistics",
          recipe=RECIPE, search_space=_space, test_kwargs={"num_classes": 3},
          features=FeatureInfo(stages=("prep_relu", "layer1_out", "layer2_pool", "layer3_out"),
                               reductions=(1, 2, 4, 8), first_conv="prep_conv"))
def resnet9(*, input_shape=(32, 32, 3), num_classes=10, include_top=True, weights=None,
            pooling=None, classifier_activation="softmax", logit_scale=0.125,
            weight_decay=5e-4, name="resnet9"):
    """ResNet-9 (Page 2018): the DAWNBench 94%-in-26-seconds CIFAR-10 network.

    Args:
        input_shape: (height, width, channels), at least 8x8. Defaults to (32, 32, 3).
        num_classes: number of classes. Defaults to 10.
        include_top: keep the max-pool, classifier and logit scale. Defaults to True.
        weights: None (random init) or the path of a local .weights.h5 file. Defaults to None.
        pooling: with include_top=False: None, "avg" or "max". Defaults to None.
        classifier_activation: activation of the scaled logits. Defaults to "softmax".
        logit_scale: factor on the logits before the activation. Defaults to 0.125.
        weight_decay: weight decay, applied as an L2 kernel penalty of
            weight_decay / 2. Defaults to 5e-4.
        name: model name. Defaults to "resnet9".
    """
    if isinstance(logit_scale, bool) or not isinstance(logit_scale, (int, float)) \
            or not logit_scale > 0:
        raise ValueError(f"logit_scale must be a positive number. "
                         f"Received: logit_scale={logit_scale!r}")

    def body(inputs, reg):
        x = _conv_bn(inputs, 64, reg=reg, name="prep")
        x = _layer(x, 128, residual=True, reg=reg, name="layer1")
        x = _layer(x, 256, residual=False, reg=reg, name="layer2")
        return _layer(x, 512, residual=True, reg=reg, name="layer3")

    def top(x, reg):
        layers = keras.layers
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
        x = layers.Dense(num_classes, use_bias=False, kernel_regularizer=reg, name="classifier")(x)
        x = layers.Rescaling(float(logit_scale), name="logit_scale")(x)
        return layers.Activation(classifier_activation, name="predictions",
                                 dtype=output_dtype())(x)

    return cnn_model(body, spec_name="resnet9", min_size=8, input_shape=input_shape,
                     num_classes=num_classes, include_top=include_top, weights=weights,
                     pooling=pooling, classifier_activation=classifier_activation,
                     weight_decay=weight_decay, name=name, flatten_top=top)
