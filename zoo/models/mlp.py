"""Perceptron (logistic regression) and multilayer perceptrons."""

from zoo import checks
from zoo._lazy import keras
from zoo.registry import Recipe, register

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu", "gelu")
INITIALIZERS = {"he": "he_normal", "glorot": "glorot_uniform"}


def _activation(name, layer_name):
    # PReLU has weights, so it is a layer rather than an activation string.
    if name == "prelu":
        return keras.layers.PReLU(name=layer_name)
    return keras.layers.Activation(name, name=layer_name)


def _mlp(*, input_shape, outputs, head_activation, hidden_units, activation, dropout,
         batch_norm, l1, l2, initializer, name):
    input_shape = checks.shape("input_shape", input_shape)
    checks.positive_int("outputs", outputs)
    if isinstance(hidden_units, int):
        hidden_units = (hidden_units,)
    hidden_units = tuple(hidden_units)
    for units in hidden_units:
        checks.positive_int("hidden_units", units)
    checks.choice("activation", activation, ACTIVATIONS)
    checks.fraction("dropout", dropout)
    checks.non_negative_float("l1", l1)
    checks.non_negative_float("l2", l2)
    checks.choice("initializer", initializer, tuple(INITIALIZERS))

    regularizer = keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = keras.layers.Flatten(name=f"{name}_flatten")(inputs) if len(input_shape) > 1 else inputs
    for i, units in enumerate(hidden_units, start=1):
        # Batch norm replaces the dense bias, as in Ioffe & Szegedy 2015.
        x = keras.layers.Dense(units, use_bias=not batch_norm,
                               kernel_initializer=INITIALIZERS[initializer],
                               kernel_regularizer=regularizer, name=f"{name}_dense{i}")(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = _activation(activation, f"{name}_act{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{name}_dropout{i}")(x)
    outputs_ = keras.layers.Dense(outputs, activation=head_activation,
                                  kernel_regularizer=regularizer, name="predictions")(x)
    return keras.Model(inputs, outputs_, name=name)


def layer_sizes(hp, default, choices=(32, 64, 128, 256), max_layers=3):
    """Tuned hidden sizes: "num_layers", then "units_1", "units_2", ... per layer.

    Args:
        hp: a `keras_tuner.HyperParameters`.
        default: the builder's own sizes: the default point; layers beyond
            them default to the last size.
        choices: sizes a layer may take (must include the defaults).
            Defaults to (32, 64, 128, 256).
        max_layers: the most layers. Defaults to 3.
    """
    layers = hp.Int("num_layers", 1, max_layers, default=len(default))
    return tuple(hp.Choice(f"units_{i}", list(choices), default=default[min(i, len(default)) - 1])
                 for i in range(1, layers + 1))


def _mlp_space(hp):
    return {
        "hidden_units": layer_sizes(hp, (128, 64)),
        "activation": hp.Choice("activation", list(ACTIVATIONS), default="relu"),
        "dropout": hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.0),
        "batch_norm": hp.Boolean("batch_norm", default=False),
        "l2": hp.Choice("l2", [0.0, 1e-5, 1e-4, 1e-3], default=0.0),
    }


@register(family="mlp", task="classification", input_kind="vector", input_policy="data",
          test_input_shape=(12,), num_params=65, paper="Cox 1958 (logistic regression)",
          params_note="64 inputs + bias into one sigmoid unit",
          recipe=Recipe(optimizer="sgd", learning_rate=0.1, epochs=30,
                        loss="binary_crossentropy"),
          test_kwargs={})
def perceptron(*, input_shape=(64,), name="perceptron"):
    """Perceptron with a sigmoid unit: logistic regression for binary labels.

    Args:
        input_shape: feature shape; non-flat inputs are flattened. Defaults to (64,).
        name: model name. Defaults to "perceptron".
    """
    input_shape = checks.shape("input_shape", input_shape)
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = keras.layers.Flatten(name=f"{name}_flatten")(inputs) if len(input_shape) > 1 else inputs
    outputs = keras.layers.Dense(1, activation="sigmoid", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


@register(family="mlp", task="classification", input_kind="vector", input_policy="data",
          test_input_shape=(12,), num_params=17_226,
          paper="Rumelhart, Hinton & Williams 1986",
          params_note="64 inputs, hidden (128, 64), 10 classes",
          # Measured on Fashion-MNIST against plain Keras at equal wall clock
          # (issue 20, README "Fast training"), as for lenet5: batch 128 (many
          # steps per execution), a one-cycle rate and label smoothing; the
          # former recipe (batch 32, constant Adam 1e-3, 50 epochs) had 0.867
          # after 3 epochs where a plain Keras script had 0.874 in that time;
          # this one has 0.875 after 3 epochs (plain Keras 0.863) and 0.895
          # after its 20 in 31 s (plain Keras 0.885, 15 epochs). Peak 5e-3:
          # 0.877 and 0.893.
          recipe=Recipe(optimizer="adam", learning_rate=3e-3, schedule="one_cycle", epochs=20,
                        batch_size=128, label_smoothing=0.1, early_stopping_patience=20),
          search_space=_mlp_space, test_kwargs={"num_classes": 3, "hidden_units": (8,)})
def mlp(*, input_shape=(64,), num_classes=10, hidden_units=(128, 64), activation="relu",
        dropout=0.0, batch_norm=False, l1=0.0, l2=0.0, initializer="he",
        classifier_activation="softmax", name="mlp"):
    """Multilayer perceptron classifier.

    Args:
        input_shape: feature shape; non-flat inputs are flattened. Defaults to (64,).
        num_classes: number of classes. Defaults to 10.
        hidden_units: sizes of the hidden layers. Defaults to (128, 64).
        activation: one of sigmoid, tanh, relu, leaky_relu, prelu, elu, gelu.
            Defaults to "relu".
        dropout: dropout rate after each hidden layer. Defaults to 0.
        batch_norm: batch normalization before each activation. Defaults to False.
        l1: L1 weight penalty. Defaults to 0.
        l2: L2 weight penalty. Defaults to 0.
        initializer: "he" (He normal) or "glorot" (Glorot uniform). Defaults to "he".
        classifier_activation: activation of the output layer. Defaults to "softmax".
        name: model name. Defaults to "mlp".
    """
    checks.positive_int("num_classes", num_classes)
    return _mlp(input_shape=input_shape, outputs=num_classes,
                head_activation=classifier_activation, hidden_units=hidden_units,
                activation=activation, dropout=dropout, batch_norm=batch_norm, l1=l1, l2=l2,
                initializer=initializer, name=name)


@register(family="mlp", task="regression", input_kind="vector", input_policy="data",
          test_input_shape=(12,), num_params=16_641,
          paper="Rumelhart, Hinton & Williams 1986",
          params_note="64 inputs, hidden (128, 64), one output",
          recipe=Recipe(optimizer="adam", learning_rate=1e-3, epochs=50, loss="mse"),
          search_space=_mlp_space, test_kwargs={"num_outputs": 2, "hidden_units": (8,)})
def mlp_regressor(*, input_shape=(64,), num_outputs=1, hidden_units=(128, 64),
                  activation="relu", dropout=0.0, batch_norm=False, l1=0.0, l2=0.0,
                  initializer="he", name="mlp_regressor"):
    """Multilayer perceptron with a linear head for regression.

    Args:
        input_shape: feature shape; non-flat inputs are flattened. Defaults to (64,).
        num_outputs: number of regression targets. Defaults to 1.
        hidden_units: sizes of the hidden layers. Defaults to (128, 64).
        activation: hidden activation (see `mlp`). Defaults to "relu".
        dropout: dropout rate after each hidden layer. Defaults to 0.
        batch_norm: batch normalization before each activation. Defaults to False.
        l1: L1 weight penalty. Defaults to 0.
        l2: L2 weight penalty. Defaults to 0.
        initializer: "he" or "glorot". Defaults to "he".
        name: model name. Defaults to "mlp_regressor".
    """
    return _mlp(input_shape=input_shape, outputs=num_outputs, head_activation=None,
                hidden_units=hidden_units, activation=activation, dropout=dropout,
                batch_norm=batch_norm, l1=l1, l2=l2, initializer=initializer, name=name)
