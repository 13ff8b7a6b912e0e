"""AlexNet (Krizhevsky, Sutskever & Hinton 2012).

The paper's network as published: 227x227x3 input (the "224" of the paper
does not divide: (227 - 11) / 4 + 1 = 55), five convolutions of 96-256-384-384-256
filters, ReLU everywhere, local response normalization after conv1 and conv2,
overlapping 3x3/2 max-pooling after the two LRNs and conv5, and
4096-4096-1000 fully connected layers with dropout 0.5 after fc6 and fc7.

Variant: by default the two-GPU connectivity is kept as grouped convolutions
(`groups=2` on conv2, conv4 and conv5, which in the paper only see the kernel
maps on their own GPU; conv3 and the dense layers see both): 60,965,224
parameters, the count of Caffe's bvlc_alexnet.  `grouped=False` gives the
single-tower variant (every conv sees all channels): 62,378,344 parameters.

Initialization as in section 5: weights N(0, 0.01), biases 1 in conv2, conv4,
conv5 and the hidden dense layers, 0 elsewhere.  Weight decay 5e-4 is an L2
kernel penalty of `weight_decay / 2` (the gradient of the paper's decay).
"""

from zoo._lazy import keras
from zoo.models._blocks import cnn_model
from zoo.registry import FeatureInfo, Recipe, register

# conv1 11x11/4 valid, then three 3x3/2 poolings: 67 is the smallest side that
# leaves a 1x1 map after pool5.
MIN_SIZE = 67


def _alexnet(*, input_shape, num_classes, include_top, weights, pooling, classifier_activation,
             grouped, weight_decay, name):
    if not isinstance(grouped, bool):
        raise ValueError(f"grouped must be True or False. Received: grouped={grouped!r}")
    from zoo.models.layers.cnn import LocalResponseNormalization

    layers = keras.layers
    groups = 2 if grouped else 1

    def conv(filters, kernel, *, reg, strides=1, padding="same", groups=1, bias=0.0, name):
        return layers.Conv2D(filters, kernel, strides=strides, padding=padding, groups=groups,
                             activation="relu",
                             kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01),
                             bias_initializer=keras.initializers.Constant(bias),
                             kernel_regularizer=reg, name=name)

    def pool(name):
        return layers.MaxPooling2D(3, strides=2, name=name)  # overlapping pooling, s < z

    def body(inputs, reg):
        x = conv(96, 11, strides=4, padding="valid", reg=reg, name="block1_conv1")(inputs)
        x = LocalResponseNormalization(name="block1_lrn")(x)
        x = pool("block1_pool")(x)
        x = conv(256, 5, groups=groups, bias=1.0, reg=reg, name="block2_conv2")(x)
        x = LocalResponseNormalization(name="block2_lrn")(x)
        x = pool("block2_pool")(x)
        x = conv(384, 3, reg=reg, name="block3_conv3")(x)
        x = conv(384, 3, groups=groups, bias=1.0, reg=reg, name="block3_conv4")(x)
        x = conv(256, 3, groups=groups, bias=1.0, reg=reg, name="block3_conv5")(x)
        return pool("block3_pool")(x)

    def top(x, reg):
        x = layers.Flatten(name="flatten")(x)
        for i in (6, 7):
            x = layers.Dense(4096, activation="relu",
                             kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01),
                             bias_initializer="ones", kernel_regularizer=reg, name=f"fc{i}")(x)
            x = layers.Dropout(0.5, name=f"fc{i}_dropout")(x)
        return layers.Dense(num_classes, activation=classifier_activation,
                            kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01),
                            kernel_regularizer=reg, name="predictions")(x)

    return cnn_model(body, spec_name="alexnet", min_size=MIN_SIZE, input_shape=input_shape,
                     num_classes=num_classes, include_top=include_top, weights=weights,
                     pooling=pooling, classifier_activation=classifier_activation,
                     weight_decay=weight_decay, name=name, flatten_top=top, grouped=grouped)


def _space(hp):
    return {"weight_decay": hp.Choice("weight_decay", [0.0, 5e-4, 1e-3], default=5e-4)}


@register(family="alexnet", task="classification", test_input_shape=(MIN_SIZE, MIN_SIZE, 3),
          min_input_shape=(MIN_SIZE, MIN_SIZE, 1),
          paper=("Krizhevsky, Sutskever & Hinton 2012, ImageNet Classification with Deep "
                 "Convolutional Neural Networks"),
          num_params=60_965_224,
          params_note=("grouped (two-GPU) variant, 227x227x3, 1000 classes = Caffe bvlc_alexnet; "
                       "the single-tower variant (grouped=False) has 62,378,344"),
          # Section 5: SGD batch 128, momentum 0.9, weight decay 5e-4, lr 0.01 divided
          # by 10 when the validation error stops improving (3 times), ~90 epochs;
          # random crops and horizontal flips (section 4.1).
          recipe=Recipe(optimizer="momentum", learning_rate=1e-2, momentum=0.9,
                        schedule="reduce_on_plateau", batch_size=128, epochs=90,
                        augment=("crop", "flip"), early_stopping_patience=None),
          search_space=_space, test_kwargs={"num_classes": 3},
          features=FeatureInfo(stages=("block1_pool", "block2_pool", "block3_pool"),
                               reductions=(8, 16, 32), first_conv="block1_conv1"))
def alexnet(*, input_shape=(227, 227, 3), num_classes=1000, include_top=True, weights=None,
            pooling=None, classifier_activation="softmax", grouped=True, weight_decay=5e-4,
            name="alexnet"):
    """AlexNet: 5 convolutions with LRN and overlapping pooling, 3 dense layers.

    Args:
        input_shape: (height, width, channels), at least 67x67; fc6's size depends
            on it. Defaults to (227, 227, 3).
        num_classes: number of classes. Defaults to 1000.
        include_top: keep flatten-fc6-fc7-predictions. Defaults to True.
        weights: None (random init) or the path of a local .weights.h5/.h5 file
            ("imagenet" raises: keras.applications has no AlexNet). Defaults to None.
        pooling: with include_top=False: None, "avg" or "max". Defaults to None.
        classifier_activation: activation of the classifier. Defaults to "softmax".
        grouped: two-GPU connectivity as grouped convolutions (conv2, conv4, conv5);
            False gives the single-tower variant. Defaults to True.
        weight_decay: the paper's weight decay, applied as an L2 kernel penalty of
            weight_decay / 2. Defaults to 5e-4.
        name: model name. Defaults to "alexnet".
    """
    return _alexnet(**locals())
