"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998)."""

from zoo import checks
from zoo._lazy import keras
from zoo.registry import Recipe, register


@register(family="lenet", task="classification", test_input_shape=(32, 32, 1),
          min_input_shape=(32, 32, 1), num_params=61_706,
          paper="LeCun et al. 1998, Gradient-based learning applied to document recognition",
          params_note=("C1-S2-C3-S4-C5-F6-output on 32x32x1, tanh, inputs mapped to [-0.1, "
                       "1.175] as in the paper; S2/S4 are parameter-free "
                       "2x2 average pooling, C3 is fully connected to S2 and the output is a "
                       "10-way softmax instead of Euclidean RBF units (the paper's version "
                       "has about 60,000 trainable parameters)"),
          # Measured on Fashion-MNIST against plain Keras at equal wall clock
          # (issue 20, README "Fast training"): batch 128 (many steps per
          # execution), a one-cycle rate and label smoothing reach 0.899 in 20
          # epochs where the former recipe (batch 32, constant 2e-3, random
          # shifts standing in for the paper's distortions) had 0.862 after 10
          # and a plain Keras script 0.896; the shifts slow the short run.
          recipe=Recipe(optimizer="adam", learning_rate=3e-3, schedule="one_cycle", epochs=20,
                        batch_size=128, label_smoothing=0.1, early_stopping_patience=20),
          test_kwargs={"num_classes": 3})
def lenet5(*, input_shape=(32, 32, 1), num_classes=10, include_top=True, pooling=None,
           classifier_activation="softmax", name="lenet5"):
    """LeNet-5 convolutional network for 32x32 images.

    Args:
        input_shape: (height, width, channels), at least 32x32. Smaller images
            are resized by the data pipeline, never by changing the network.
            Defaults to (32, 32, 1).
        num_classes: number of classes. Defaults to 10.
        include_top: keep F6 and the classifier. Defaults to True.
        pooling: with `include_top=False`, None (C5 feature map), "avg" or
            "max". Defaults to None.
        classifier_activation: activation of the output layer. Defaults to "softmax".
        name: model name. Defaults to "lenet5".
    """
    input_shape = checks.shape("input_shape", input_shape, rank=3, min_shape=(32, 32, None))
    checks.positive_int("num_classes", num_classes)
    checks.choice("pooling", pooling, (None, "avg", "max"))
    layers = keras.layers
    inputs = keras.Input(shape=input_shape, name="inputs")
    # Section II.B of the paper: inputs in [0, 1] are mapped so that the
    # background is -0.1 and the foreground 1.175 (mean ~0, variance ~1).
    x = layers.Rescaling(1.275, offset=-0.1, name=f"{name}_normalize")(inputs)
    x = layers.Conv2D(6, 5, activation="tanh", name=f"{name}_c1")(x)
    x = layers.AveragePooling2D(2, name=f"{name}_s2")(x)
    x = layers.Conv2D(16, 5, activation="tanh", name=f"{name}_c3")(x)
    x = layers.AveragePooling2D(2, name=f"{name}_s4")(x)
    x = layers.Conv2D(120, 5, activation="tanh", name=f"{name}_c5")(x)
    if include_top:
        x = layers.Flatten(name=f"{name}_flatten")(x)
        x = layers.Dense(84, activation="tanh", name=f"{name}_f6")(x)
        x = layers.Dense(num_classes, activation=classifier_activation, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name=f"{name}_avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name=f"{name}_max_pool")(x)
    return keras.Model(inputs, x, name=name)
