"""Residual networks (He, Zhang, Ren & Sun 2015; pre-activation: He et al. 2016).

ImageNet ResNets: `resnet18`/`resnet34` (basic blocks, projection shortcuts
where the shape changes, i.e. the paper's option B) and `resnet50`/`101`/`152`
(bottleneck blocks).  The bottleneck nets reproduce keras.applications.ResNet*
layer for layer (same names, order and weight layout, stride on the first 1x1
conv as in the paper's Caffe models, conv biases kept), so
`zoo_model.set_weights(keras_model.get_weights())` gives the same outputs and a
.weights.h5 saved from keras.applications loads with `weights=PATH`.
`resnet50v2` likewise reproduces keras.applications.ResNet50V2.

CIFAR ResNets (paper section 4.2): `resnet20/32/44/56/110`, 6n+2 layers, three
stages of 16/32/64 filters, option-A shortcuts (parameter-free: strided
subsampling plus zero-padded channels, built from stock Keras layers so the
model serializes without custom objects).

Weight decay: builders take `weight_decay` (the paper's 1e-4) and add an L2
kernel penalty of `weight_decay / 2`, whose gradient is the SGD weight decay of
the paper; recipes therefore keep the optimizer's decoupled decay at 0.
"""

from zoo._lazy import keras
from zoo.models._blocks import batch_norm, cnn_model
from zoo.registry import FeatureInfo, Recipe, register_variant

BN_EPSILON = 1.001e-5  # keras.applications' value (its weights were converted with it)
BN_MOMENTUM = 0.9  # moving averages settle within a short run


def _he_normal():
    # He et al. 2015 (PReLU paper): zero-mean Gaussian, std sqrt(2 / fan_in), not truncated.
    return keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")


def _conv(filters, kernel, *, strides=1, padding="valid", use_bias=True, reg=None, name):
    return keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                               use_bias=use_bias, kernel_initializer=_he_normal(),
                               kernel_regularizer=reg, name=name)


def _bn(name, epsilon=BN_EPSILON):
    return batch_norm(axis=-1, epsilon=epsilon, momentum=BN_MOMENTUM, name=name)


def _relu(name):
    return keras.layers.Activation("relu", name=name)


# ---- blocks ---------------------------------------------------------------------------------

def _bottleneck(x, filters, *, stride=1, conv_shortcut=True, reg=None, name):
    """keras.applications residual_block_v1, in its exact layer order."""
    if conv_shortcut:
        shortcut = _conv(4 * filters, 1, strides=stride, reg=reg, name=f"{name}_0_conv")(x)
        shortcut = _bn(f"{name}_0_bn")(shortcut)
    else:
        shortcut = x
    x = _conv(filters, 1, strides=stride, reg=reg, name=f"{name}_1_conv")(x)
    x = _relu(f"{name}_1_relu")(_bn(f"{name}_1_bn")(x))
    x = _conv(filters, 3, padding="same", reg=reg, name=f"{name}_2_conv")(x)
    x = _relu(f"{name}_2_relu")(_bn(f"{name}_2_bn")(x))
    x = _conv(4 * filters, 1, reg=reg, name=f"{name}_3_conv")(x)
    x = _bn(f"{name}_3_bn")(x)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return _relu(f"{name}_out")(x)


def _bottleneck_stack(x, filters, blocks, *, stride=2, reg=None, name):
    x = _bottleneck(x, filters, stride=stride, reg=reg, name=f"{name}_block1")
    for i in range(2, blocks + 1):
        x = _bottleneck(x, filters, conv_shortcut=False, reg=reg, name=f"{name}_block{i}")
    return x


def _conv3x3(x, filters, *, stride, reg, name):
    # Symmetric padding of 1, as in the paper's Caffe/Torch models; Keras's
    # "same" would pad only bottom/right when striding an even-sized map.
    if stride > 1:
        x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
        return _conv(filters, 3, strides=stride, use_bias=False, reg=reg, name=name)(x)
    return _conv(filters, 3, padding="same", use_bias=False, reg=reg, name=name)(x)


def _option_a_shortcut(x, filters, stride, name):
    """Parameter-free shortcut: subsample by `stride`, zero-pad channels to `filters`."""
    layers = keras.layers
    if stride > 1:
        # A 1x1 max-pool with a stride is plain subsampling x[:, ::s, ::s, :].
        x = layers.MaxPooling2D(1, strides=stride, name=f"{name}_0_subsample")(x)
    extra = filters - x.shape[-1]
    if extra:
        # Move channels to the rows axis so ZeroPadding2D can pad them, and back;
        # unlike a reshape this needs no static height/width (input_shape=(None, None, C)).
        x = layers.Permute((3, 1, 2), name=f"{name}_0_expand")(x)
        x = layers.ZeroPadding2D(((extra // 2, extra - extra // 2), (0, 0)),
                                 name=f"{name}_0_pad")(x)
        x = layers.Permute((2, 3, 1), name=f"{name}_0_squeeze")(x)
    return x


def _basic_block(x, filters, *, stride=1, shortcut="B", reg=None, name):
    """Two 3x3 convs; shortcut "B" projects (1x1 conv + BN) when the shape changes, "A" pads."""
    changes = stride != 1 or x.shape[-1] != filters
    if not changes:
        short = x
    elif shortcut == "A":
        short = _option_a_shortcut(x, filters, stride, name)
    else:
        short = _conv(filters, 1, strides=stride, use_bias=False, reg=reg,
                      name=f"{name}_0_conv")(x)
        short = _bn(f"{name}_0_bn", 1e-5)(short)
    x = _conv3x3(x, filters, stride=stride, reg=reg, name=f"{name}_1_conv")
    x = _relu(f"{name}_1_relu")(_bn(f"{name}_1_bn", 1e-5)(x))
    x = _conv3x3(x, filters, stride=1, reg=reg, name=f"{name}_2_conv")
    x = _bn(f"{name}_2_bn", 1e-5)(x)
    x = keras.layers.Add(name=f"{name}_add")([short, x])
    return _relu(f"{name}_out")(x)


def _preact_block(x, filters, *, stride=1, conv_shortcut=False, reg=None, name):
    """keras.applications residual_block_v2, in its exact layer order."""
    layers = keras.layers
    preact = _relu(f"{name}_preact_relu")(_bn(f"{name}_preact_bn")(x))
    if conv_shortcut:
        shortcut = _conv(4 * filters, 1, strides=stride, reg=reg, name=f"{name}_0_conv")(preact)
    elif stride > 1:
        shortcut = layers.MaxPooling2D(1, strides=stride, name=f"{name}_0_subsample")(x)
    else:
        shortcut = x
    x = _conv(filters, 1, use_bias=False, reg=reg, name=f"{name}_1_conv")(preact)
    x = _relu(f"{name}_1_relu")(_bn(f"{name}_1_bn")(x))
    x = layers.ZeroPadding2D(1, name=f"{name}_2_pad")(x)
    x = _conv(filters, 3, strides=stride, use_bias=False, reg=reg, name=f"{name}_2_conv")(x)
    x = _relu(f"{name}_2_relu")(_bn(f"{name}_2_bn")(x))
    x = _conv(4 * filters, 1, reg=reg, name=f"{name}_3_conv")(x)
    return layers.Add(name=f"{name}_out")([shortcut, x])


def _preact_stack(x, filters, blocks, *, stride=2, reg=None, name):
    # keras.applications strides in the LAST block of a v2 stage.
    x = _preact_block(x, filters, conv_shortcut=True, reg=reg, name=f"{name}_block1")
    for i in range(2, blocks):
        x = _preact_block(x, filters, reg=reg, name=f"{name}_block{i}")
    return _preact_block(x, filters, stride=stride, reg=reg, name=f"{name}_block{blocks}")


# ---- networks ------------------------------------------------------------------------------

def imagenet_resnet(*, kind, blocks, spec_name, input_shape=(224, 224, 3), num_classes=1000,
                    include_top=True, weights=None, pooling=None,
                    classifier_activation="softmax", weight_decay=1e-4, name):
    """An ImageNet ResNet; the registered variants (resnet18 ... resnet50v2) fix its layout.

    Args:
        kind: "basic" (two 3x3 convolutions), "bottleneck" (keras.applications
            ResNet) or "preact" (keras.applications ResNetV2) blocks.
        blocks: blocks in each of the four stages, e.g. (3, 4, 6, 3).
        spec_name: the registered name (its `FeatureInfo` names the ImageNet weights).
        input_shape: (height, width, channels), at least 32x32; (None, None, C)
            with include_top=False takes any size. Defaults to (224, 224, 3).
        num_classes: number of classes. Defaults to 1000.
        include_top: keep global average pooling and the classifier. Defaults to True.
        weights: None (random init), "imagenet" (the models with a keras.applications
            twin: resnet50/101/152, resnet50v2; Keras's published file, from Keras's
            cache or downloaded once, with its hash) or the path of a local
            .weights.h5/.h5 file. Defaults to None.
        pooling: with include_top=False: None, "avg" or "max". Defaults to None.
        classifier_activation: activation of the classifier. Defaults to "softmax".
        weight_decay: the paper's weight decay, applied as an L2 kernel penalty
            of weight_decay / 2. Defaults to 1e-4.
        name: model name (each variant's default is its registered name).
    """
    def body(inputs, reg):
        layers = keras.layers
        x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
        # keras.applications keeps the stem conv bias in v1/v2 bottleneck nets; basic-block
        # nets follow the paper (no bias before batch norm).
        x = _conv(64, 7, strides=2, use_bias=kind != "basic", reg=reg, name="conv1_conv")(x)
        if kind != "preact":
            x = _relu("conv1_relu")(_bn("conv1_bn", 1e-5 if kind == "basic" else BN_EPSILON)(x))
        x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
        x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
        for stage, (filters, count) in enumerate(zip((64, 128, 256, 512), blocks), start=2):
            stage_name = f"conv{stage}"
            if kind == "bottleneck":
                x = _bottleneck_stack(x, filters, count, stride=1 if stage == 2 else 2,
                                      reg=reg, name=stage_name)
            elif kind == "preact":
                x = _preact_stack(x, filters, count, stride=1 if stage == 5 else 2, reg=reg,
                                  name=stage_name)
            else:
                for i in range(1, count + 1):
                    stride = 2 if (i == 1 and stage > 2) else 1
                    x = _basic_block(x, filters, stride=stride, reg=reg,
                                     name=f"{stage_name}_block{i}")
        if kind == "preact":
            x = _relu("post_relu")(_bn("post_bn")(x))
        return x

    return cnn_model(body, spec_name=spec_name, min_size=32, input_shape=input_shape,
                     num_classes=num_classes, include_top=include_top, weights=weights,
                     pooling=pooling, classifier_activation=classifier_activation,
                     weight_decay=weight_decay, name=name)


def cifar_resnet(*, depth, spec_name, input_shape=(32, 32, 3), num_classes=10, include_top=True,
                 weights=None, pooling=None, classifier_activation="softmax", weight_decay=1e-4,
                 name):
    """A CIFAR ResNet of `depth` = 6n+2 layers; the registered variants (resnet20 ...) fix n.

    Args:
        depth: 6n+2, n basic blocks per stage.
        spec_name: the registered name.
        input_shape: (height, width, channels), at least 8x8. Defaults to (32, 32, 3).
        num_classes: number of classes. Defaults to 10.
        include_top, weights, pooling, classifier_activation, weight_decay, name:
            as `imagenet_resnet`.
    """
    n = (depth - 2) // 6

    def body(inputs, reg):
        x = _conv(16, 3, padding="same", use_bias=False, reg=reg, name="conv1_conv")(inputs)
        x = _relu("conv1_relu")(_bn("conv1_bn", 1e-5)(x))
        for stage, filters in enumerate((16, 32, 64), start=2):
            for i in range(1, n + 1):
                stride = 2 if (i == 1 and stage > 2) else 1
                x = _basic_block(x, filters, stride=stride, shortcut="A", reg=reg,
                                 name=f"conv{stage}_block{i}")
        return x

    return cnn_model(body, spec_name=spec_name, min_size=8, input_shape=input_shape,
                     num_classes=num_classes, include_top=include_top, weights=weights,
                     pooling=pooling, classifier_activation=classifier_activation,
                     weight_decay=weight_decay, name=name)


# ---- registry ------------------------------------------------------------------------------

_PAPER = "He, Zhang, Ren & Sun 2015, Deep Residual Learning for Image Recognition"
_PAPER_V2 = "He, Zhang, Ren & Sun 2016, Identity Mappings in Deep Residual Networks"
# Section 3.4: SGD, batch 256, lr 0.1 divided by 10 when the error plateaus,
# momentum 0.9, weight decay 1e-4 (in the builder), up to 60e4 iterations (~120 epochs).
_IMAGENET_RECIPE = Recipe(optimizer="momentum", learning_rate=0.1, momentum=0.9,
                          schedule="reduce_on_plateau", batch_size=256, epochs=120,
                          augment=("crop", "flip"), early_stopping_patience=None)
# Section 4.2: batch 128, lr 0.1 divided by 10 at 32k and 48k of 64k iterations
# (50% / 75%), momentum 0.9, weight decay 1e-4, 4-pixel pad + 32x32 crop + flip;
# 64k iterations x 128 / 45k training images = 182 epochs.  The architecture
# stays as published; the training is modernised (issue 20): the step schedule
# left a short run at the high rate for half its steps (after 1 epoch on
# Fashion-MNIST 0.822 against 0.850 for a plain Adam script in the same time),
# so the rate follows one cycle over the run's own epochs (peak 0.1), with
# label smoothing 0.1 and random erasing, which Zhong et al. 2017 ("Random
# Erasing Data Augmentation") measured on this very ResNet-20 on CIFAR-10 and
# Fashion-MNIST.  The test set is also scored with flip test-time augmentation
# (`test_tta_accuracy`, beside the plain `test_accuracy`): the model trains on
# mirrored images, and the extra pass over the test set is cheap.
_CIFAR_RECIPE = Recipe(optimizer="momentum", learning_rate=0.1, momentum=0.9,
                       schedule="one_cycle", batch_size=128, epochs=182, label_smoothing=0.1,
                       augment=("crop", "flip", "erasing"), early_stopping_patience=None,
                       tta=True)


def _resnet_space(hp):
    return {"weight_decay": hp.Choice("weight_decay", [0.0, 1e-4, 5e-4], default=1e-4)}


def _imagenet_variant(name, kind, blocks, *, doc, num_params, note, paper=_PAPER,
                      imagenet=None):
    preact = kind == "preact"
    stages = [f"conv{stage}_block{n}_out" for stage, n in enumerate(blocks, start=2)]
    if preact:  # the last stage ends after the final BN + ReLU
        stages[-1] = "post_relu"
    features = FeatureInfo(
        stages=stages, reductions=(8, 16, 32, 32) if preact else (4, 8, 16, 32),
        first_conv="conv1_conv", imagenet=imagenet,
        imagenet_preprocessing=("tf" if preact else "caffe") if imagenet else None)
    return register_variant(
        name, imagenet_resnet, model_args=dict(kind=kind, blocks=blocks, spec_name=name),
        defaults=dict(name=name), doc=doc + "\n\nArgs: as `imagenet_resnet`.",
        family="resnet", task="classification", test_input_shape=(32, 32, 3),
        min_input_shape=(32, 32, 1), paper=paper, num_params=num_params, params_note=note,
        recipe=_IMAGENET_RECIPE, search_space=_resnet_space, features=features,
        test_kwargs={"num_classes": 3})


resnet18 = _imagenet_variant(
    "resnet18", "basic", (2, 2, 2, 2),
    doc="ResNet-18: basic blocks 2-2-2-2, projection shortcuts (option B).",
    num_params=11_699_112, note="basic blocks 2-2-2-2, 224x224x3, 1000 classes: 11,689,512 "
    "trainable (torchvision's resnet18) + 9,600 BN moving statistics")
resnet34 = _imagenet_variant(
    "resnet34", "basic", (3, 4, 6, 3),
    doc="ResNet-34: basic blocks 3-4-6-3, projection shortcuts (option B).",
    num_params=21_814_696, note="basic blocks 3-4-6-3, 224x224x3, 1000 classes: 21,797,672 "
    "trainable (torchvision's resnet34) + 17,024 BN moving statistics")
resnet50 = _imagenet_variant(
    "resnet50", "bottleneck", (3, 4, 6, 3), imagenet="ResNet50",
    doc="ResNet-50: bottleneck blocks 3-4-6-3, weight-compatible with "
    "keras.applications.ResNet50.",
    num_params=25_636_712, note="= keras.applications.ResNet50 (conv biases kept), 224x224x3, "
    "1000 classes; 25,583,592 trainable + 53,120 BN moving statistics")
resnet101 = _imagenet_variant(
    "resnet101", "bottleneck", (3, 4, 23, 3), imagenet="ResNet101",
    doc="ResNet-101: bottleneck blocks 3-4-23-3, weight-compatible with keras.applications.",
    num_params=44_707_176, note="= keras.applications.ResNet101, 224x224x3, 1000 classes; "
    "44,601,832 trainable + 105,344 BN moving statistics")
resnet152 = _imagenet_variant(
    "resnet152", "bottleneck", (3, 8, 36, 3), imagenet="ResNet152",
    doc="ResNet-152: bottleneck blocks 3-8-36-3, weight-compatible with keras.applications.",
    num_params=60_419_944, note="= keras.applications.ResNet152, 224x224x3, 1000 classes; "
    "60,268,520 trainable + 151,424 BN moving statistics")
resnet50v2 = _imagenet_variant(
    "resnet50v2", "preact", (3, 4, 6, 3), imagenet="ResNet50V2", paper=_PAPER_V2,
    doc="ResNet-50 v2 (pre-activation), weight-compatible with keras.applications.ResNet50V2."
    "\n\nAs in Keras, each stage strides in its last block, so the `conv{k}_block{n}_out`\n"
    "stage outputs sit at strides 8, 16, 32, 32.",
    num_params=25_613_800, note="= keras.applications.ResNet50V2, 224x224x3, 1000 classes; "
    "25,568,360 trainable + 45,440 BN moving statistics")

# Table 6 of the paper (trainable parameters, at its printed precision), by depth 6n+2.
CIFAR_TABLE6 = {20: 0.27e6, 32: 0.46e6, 44: 0.66e6, 56: 0.85e6, 110: 1.7e6}


def _cifar_variant(depth, num_params):
    n = (depth - 2) // 6
    return register_variant(
        f"resnet{depth}", cifar_resnet, model_args=dict(depth=depth, spec_name=f"resnet{depth}"),
        defaults=dict(name=f"resnet{depth}"),
        doc=(f"ResNet-{depth} for CIFAR: 3 stages x {n} basic blocks, 16/32/64 filters, "
             f"option-A shortcuts.\n\nArgs: as `cifar_resnet`."),
        family="resnet", task="classification", test_input_shape=(8, 8, 3),
        min_input_shape=(8, 8, 1), paper=_PAPER + " (section 4.2, CIFAR-10)",
        num_params=num_params,
        params_note=(f"{n} basic blocks per stage, 16/32/64 filters, option-A shortcuts, "
                     f"32x32x3, 10 classes; Table 6: {CIFAR_TABLE6[depth] / 1e6:g}M trainable "
                     f"(the rest of the count is BN moving statistics)"),
        recipe=_CIFAR_RECIPE, search_space=_resnet_space,
        features=FeatureInfo(stages=[f"conv{s}_block{n}_out" for s in (2, 3, 4)],
                             reductions=(1, 2, 4), first_conv="conv1_conv"),
        test_kwargs={"num_classes": 3})


# Parameter counts are with default arguments (32x32x3, 10 classes).
resnet20 = _cifar_variant(20, 271_098)
resnet32 = _cifar_variant(32, 466_426)
resnet44 = _cifar_variant(44, 661_754)
resnet56 = _cifar_variant(56, 857_082)
resnet110 = _cifar_variant(110, 1_736_058)
