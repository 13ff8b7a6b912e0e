"""VGG networks (Simonyan & Zisserman 2014), configurations A, B, D, E.

`vgg11`/`vgg13`/`vgg16`/`vgg19` are the paper's configurations A/B/D/E.  vgg16
and vgg19 reproduce keras.applications.VGG16/VGG19 layer for layer (same
names and weight layout), plus the paper's dropout (0.5) after fc1 and fc2,
which has no weights.  The `*_bn` variants put batch normalization after every
convolution (not in the paper: the torchvision variants, which keep the conv
biases; their parameter counts match torchvision's).

Weight decay: `weight_decay` (the paper's 5e-4) adds an L2 kernel penalty of
`weight_decay / 2`, whose gradient is the paper's SGD weight decay.
"""

from zoo._lazy import keras
from zoo.models._blocks import batch_norm as batch_norm_layer, cnn_model, output_dtype
from zoo.registry import FeatureInfo, Recipe, register_variant

# Convolutions per block (each block ends with 2x2 max-pooling); filters 64-128-256-512-512.
CONFIGS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
FILTERS = (64, 128, 256, 512, 512)


def vgg(*, depth, batch_norm, spec_name, input_shape=(224, 224, 3), num_classes=1000,
        include_top=True, weights=None, pooling=None, classifier_activation="softmax",
        weight_decay=5e-4, name):
    """A VGG network; the registered variants (vgg11 ... vgg19_bn) fix its configuration.

    Args:
        depth: 11, 13, 16 or 19 (the paper's configurations A, B, D, E).
        batch_norm: batch normalization after every convolution (torchvision's `*_bn`).
        spec_name: the registered name (its `FeatureInfo` names the ImageNet weights).
        input_shape: (height, width, channels), at least 32x32; the top's fc1 size
            depends on it; (None, None, C) with include_top=False. Defaults to (224, 224, 3).
        num_classes: number of classes. Defaults to 1000.
        include_top: keep flatten-fc1-fc2-predictions. Defaults to True.
        weights: None (random init), "imagenet" (vgg16/vgg19: Keras's published
            file, from Keras's cache or downloaded once) or the path of a local
            .weights.h5/.h5 file. Defaults to None.
        pooling: with include_top=False: None, "avg" or "max". Defaults to None.
        classifier_activation: activation of the classifier. Defaults to "softmax".
        weight_decay: the paper's weight decay, applied as an L2 kernel penalty of
            weight_decay / 2. Defaults to 5e-4.
        name: model name (each variant's default is its registered name).
    """
    layers = keras.layers

    def body(x, reg):
        for block, (convs, filters) in enumerate(zip(CONFIGS[depth], FILTERS), start=1):
            for i in range(1, convs + 1):
                prefix = f"block{block}_conv{i}"
                if batch_norm:
                    x = layers.Conv2D(filters, 3, padding="same", kernel_regularizer=reg,
                                      name=prefix)(x)
                    x = batch_norm_layer(momentum=0.9, epsilon=1e-5,
                                         name=f"block{block}_bn{i}")(x)
                    x = layers.Activation("relu", name=f"block{block}_relu{i}")(x)
                else:
                    x = layers.Conv2D(filters, 3, padding="same", activation="relu",
                                      kernel_regularizer=reg, name=prefix)(x)
            x = layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
        return x

    def top(x, reg):
        x = layers.Flatten(name="flatten")(x)
        for i in (1, 2):
            x = layers.Dense(4096, activation="relu", kernel_regularizer=reg, name=f"fc{i}")(x)
            x = layers.Dropout(0.5, name=f"fc{i}_dropout")(x)
        return layers.Dense(num_classes, activation=classifier_activation,
                            kernel_regularizer=reg, name="predictions", dtype=output_dtype())(x)

    return cnn_model(body, spec_name=spec_name, min_size=32, input_shape=input_shape,
                     num_classes=num_classes, include_top=include_top, weights=weights,
                     pooling=pooling, classifier_activation=classifier_activation,
                     weight_decay=weight_decay, name=name, flatten_top=top)


_PAPER = ("Simonyan & Zisserman 2014, Very Deep Convolutional Networks for Large-Scale "
          "Image Recognition")
# Section 3.1: batch 256, SGD momentum 0.9, weight decay 5e-4 (in the builder),
# dropout 0.5, lr 1e-2 divided by 10 when validation accuracy stops improving,
# 74 epochs; random 224 crops of rescaled images + horizontal flips.
RECIPE = Recipe(optimizer="momentum", learning_rate=1e-2, momentum=0.9,
                schedule="reduce_on_plateau", batch_size=256, epochs=74,
                augment=("crop", "flip"), early_stopping_patience=None)


def _space(hp):
    return {"weight_decay": hp.Choice("weight_decay", [0.0, 5e-4, 1e-3], default=5e-4)}


def _variant(name, depth, *, batch_norm, doc, num_params, note, imagenet=None):
    # Test input 32x32: the smallest the five 2x2 poolings allow.
    features = FeatureInfo(stages=tuple(f"block{b}_pool" for b in range(1, 6)),
                           reductions=(2, 4, 8, 16, 32), first_conv="block1_conv1",
                           imagenet=imagenet, imagenet_preprocessing="caffe" if imagenet else None)
    return register_variant(
        name, vgg, model_args=dict(depth=depth, batch_norm=batch_norm, spec_name=name),
        defaults=dict(name=name), doc=doc + "\n\nArgs: as `vgg`.",
        family="vgg", task="classification", test_input_shape=(32, 32, 3),
        min_input_shape=(32, 32, 1), paper=_PAPER, num_params=num_params,
        params_note=note + ", 224x224x3 with the 4096-4096-1000 top",
        recipe=RECIPE, search_space=_space, features=features, test_kwargs={"num_classes": 3})


vgg11 = _variant("vgg11", 11, batch_norm=False, num_params=132_863_336,
                 doc="VGG-11 (configuration A): 8 convolutions + 3 fully connected layers.",
                 note="configuration A (torchvision vgg11: 132,863,336)")
vgg13 = _variant("vgg13", 13, batch_norm=False, num_params=133_047_848,
                 doc="VGG-13 (configuration B): 10 convolutions + 3 fully connected layers.",
                 note="configuration B (torchvision vgg13: 133,047,848)")
vgg16 = _variant("vgg16", 16, batch_norm=False, num_params=138_357_544, imagenet="VGG16",
                 doc="VGG-16 (configuration D), weight-compatible with keras.applications.VGG16.",
                 note="configuration D = keras.applications.VGG16 (138,357,544)")
vgg19 = _variant("vgg19", 19, batch_norm=False, num_params=143_667_240, imagenet="VGG19",
                 doc="VGG-19 (configuration E), weight-compatible with keras.applications.VGG19.",
                 note="configuration E = keras.applications.VGG19 (143,667,240)")


def _bn_variant(depth, config, *, num_params, trainable, stats):
    name = f"vgg{depth}_bn"
    return _variant(name, depth, batch_norm=True, num_params=num_params,
                    doc=f"VGG-{depth} with batch normalization after every convolution "
                        f"(torchvision variant).",
                    note=f"configuration {config}, batch norm after each conv: {trainable} "
                         f"trainable (torchvision {name}) + {stats} BN moving statistics")


vgg11_bn = _bn_variant(11, "A", num_params=132_874_344, trainable="132,868,840", stats="5,504")
vgg13_bn = _bn_variant(13, "B", num_params=133_059_624, trainable="133,053,736", stats="5,888")
vgg16_bn = _bn_variant(16, "D", num_params=138_374_440, trainable="138,365,992", stats="8,448")
vgg19_bn = _bn_variant(19, "E", num_params=143_689_256, trainable="143,678,248", stats="11,008")
