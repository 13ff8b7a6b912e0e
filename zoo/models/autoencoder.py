"""Dense and convolutional autoencoders, optionally denoising, with anomaly scores.

Each model is `inputs -> [noise] -> encoder -> decoder`: the two halves are
sub-models reachable as `model.get_layer("encoder")` / `get_layer("decoder")`.
The denoising variant (Vincent et al. 2008) corrupts inputs with
`GaussianNoise`, which Keras applies in training only, so inference and
anomaly scores see clean inputs.
"""

import numpy as np

from zoo import checks
from zoo._lazy import keras
from zoo.models.mlp import layer_sizes
from zoo.registry import Recipe, register

HOOKS = "zoo.tasks.generative:AutoencoderHooks"


def _check_common(input_shape, latent_dim, noise_stddev, *, rank=None):
    input_shape = checks.shape("input_shape", input_shape, rank=rank)
    checks.positive_int("latent_dim", latent_dim)
    checks.non_negative_float("noise_stddev", noise_stddev)
    return input_shape


def conv_stages_check(input_shape, stages, argument="filters"):
    """Raise unless stride-2 stages can reproduce `input_shape` exactly."""
    factor = 2 ** stages
    height, width = input_shape[:2]
    if height % factor or width % factor:
        raise ValueError(
            f"input_shape height and width must be divisible by {factor}: {stages} stride-2 "
            f"stage(s) (len({argument})={stages}) halve them {stages} time(s) and the decoder "
            f"doubles them back. Received: input_shape={tuple(input_shape)}. Resize or pad "
            f"the images, or change {argument}.")


def _assemble(inputs, encoder, decoder, noise_stddev, name):
    x = inputs
    if noise_stddev:
        x = keras.layers.GaussianNoise(noise_stddev, name="noise")(x)
    outputs = decoder(encoder(x))
    return keras.Model(inputs, outputs, name=name)


def _space(hp, latent_dim):
    return {
        "latent_dim": hp.Choice("latent_dim", [8, 16, 32, 64], default=latent_dim),
        "noise_stddev": hp.Choice("noise_stddev", [0.0, 0.1, 0.2], default=0.0),
    }


def _dense_space(hp):
    return {**_space(hp, latent_dim=32),
            "hidden_units": layer_sizes(hp, (256, 128), choices=(64, 128, 256, 512))}


def _conv_space(hp):
    return _space(hp, latent_dim=16)


@register(family="autoencoder", task="autoencoder", input_policy="data",
          test_input_shape=(8, 8, 1), num_params=476_720,
          paper="Hinton & Salakhutdinov 2006; Vincent et al. 2008 (denoising)",
          params_note="28x28x1, hidden (256, 128), latent 32, mirrored decoder",
          recipe=Recipe(optimizer="adam", learning_rate=1e-3, epochs=30, loss="mse"),
          search_space=_dense_space, hooks=HOOKS,
          test_kwargs={"latent_dim": 4, "hidden_units": (16,)})
def dense_autoencoder(*, input_shape=(28, 28, 1), latent_dim=32, hidden_units=(256, 128),
                      activation="relu", noise_stddev=0.0, output_activation="sigmoid",
                      name="dense_autoencoder"):
    """Fully connected autoencoder with a mirrored decoder.

    Args:
        input_shape: shape of one example (flattened inside). Defaults to (28, 28, 1).
        latent_dim: size of the code. Defaults to 32.
        hidden_units: encoder hidden sizes (the decoder mirrors them).
            Defaults to (256, 128).
        activation: hidden activation. Defaults to "relu".
        noise_stddev: std of Gaussian input noise during training (denoising
            autoencoder); 0 disables it. Defaults to 0.
        output_activation: "sigmoid" for data in [0, 1], None for unbounded
            data. Defaults to "sigmoid".
        name: model name. Defaults to "dense_autoencoder".
    """
    input_shape = _check_common(input_shape, latent_dim, noise_stddev)
    hidden_units = (hidden_units,) if isinstance(hidden_units, int) else tuple(hidden_units)
    for units in hidden_units:
        checks.positive_int("hidden_units", units)
    checks.choice("output_activation", output_activation, ("sigmoid", None, "linear"))
    layers = keras.layers
    size = int(np.prod(input_shape))

    enc_in = keras.Input(shape=input_shape, name="encoder_inputs")
    x = layers.Flatten(name="encoder_flatten")(enc_in)
    for i, units in enumerate(hidden_units, start=1):
        x = layers.Dense(units, activation=activation, name=f"encoder_dense{i}")(x)
    code = layers.Dense(latent_dim, name="code")(x)
    encoder = keras.Model(enc_in, code, name="encoder")

    dec_in = keras.Input(shape=(latent_dim,), name="decoder_inputs")
    x = dec_in
    for i, units in enumerate(reversed(hidden_units), start=1):
        x = layers.Dense(units, activation=activation, name=f"decoder_dense{i}")(x)
    x = layers.Dense(size, activation=output_activation, name="decoder_output")(x)
    decoder = keras.Model(dec_in, layers.Reshape(input_shape, name="decoder_reshape")(x),
                          name="decoder")
    return _assemble(keras.Input(shape=input_shape, name="inputs"), encoder, decoder,
                     noise_stddev, name)


def conv_encoder_layers(x, filters, prefix, *, batch_norm=False, leaky=False):
    """Stride-2 3x3 convolutions, one per entry of `filters` (shared with the VAE)."""
    layers = keras.layers
    for i, f in enumerate(filters, start=1):
        x = layers.Conv2D(f, 3, strides=2, padding="same", use_bias=not batch_norm,
                          name=f"{prefix}_conv{i}")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{prefix}_bn{i}")(x)
        x = (layers.LeakyReLU(0.2, name=f"{prefix}_act{i}") if leaky
             else layers.Activation("relu", name=f"{prefix}_act{i}"))(x)
    return x


def conv_decoder_layers(z, input_shape, filters, prefix, output_activation):
    """Dense projection then stride-2 transposed convolutions back to `input_shape`."""
    layers = keras.layers
    factor = 2 ** len(filters)
    h, w, channels = input_shape[0] // factor, input_shape[1] // factor, input_shape[2]
    x = layers.Dense(h * w * filters[-1], activation="relu", name=f"{prefix}_project")(z)
    x = layers.Reshape((h, w, filters[-1]), name=f"{prefix}_reshape")(x)
    for i, f in enumerate(reversed(filters), start=1):
        x = layers.Conv2DTranspose(f, 3, strides=2, padding="same", activation="relu",
                                   name=f"{prefix}_deconv{i}")(x)
    return layers.Conv2D(channels, 3, padding="same", activation=output_activation,
                         name=f"{prefix}_output")(x)


def check_filters(filters):
    filters = (filters,) if isinstance(filters, int) else tuple(filters)
    if not filters:
        raise ValueError(f"filters must name at least one stage. Received: filters={filters!r}")
    for f in filters:
        checks.positive_int("filters", f)
    return filters


@register(family="autoencoder", task="autoencoder", test_input_shape=(8, 8, 1),
          min_input_shape=(4, 4, 1), num_params=178_001,
          paper="Masci et al. 2011, Stacked convolutional auto-encoders",
          params_note="28x28x1, filters (32, 64), latent 16",
          recipe=Recipe(optimizer="adam", learning_rate=1e-3, epochs=30, loss="mse"),
          search_space=_conv_space, hooks=HOOKS,
          test_kwargs={"latent_dim": 4, "filters": (4, 8)})
def conv_autoencoder(*, input_shape=(28, 28, 1), latent_dim=16, filters=(32, 64),
                     noise_stddev=0.0, output_activation="sigmoid", name="conv_autoencoder"):
    """Convolutional autoencoder: stride-2 convs, a dense code, transposed convs back.

    Args:
        input_shape: (height, width, channels); height and width must be
            divisible by 2 ** len(filters). Defaults to (28, 28, 1).
        latent_dim: size of the code. Defaults to 16.
        filters: channels of the stride-2 stages. Defaults to (32, 64).
        noise_stddev: std of Gaussian input noise during training (denoising
            autoencoder); 0 disables it. Defaults to 0.
        output_activation: "sigmoid" for data in [0, 1], None for unbounded
            data. Defaults to "sigmoid".
        name: model name. Defaults to "conv_autoencoder".
    """
    input_shape = _check_common(input_shape, latent_dim, noise_stddev, rank=3)
    filters = check_filters(filters)
    checks.choice("output_activation", output_activation, ("sigmoid", None, "linear"))
    conv_stages_check(input_shape, len(filters))

    enc_in = keras.Input(shape=input_shape, name="encoder_inputs")
    x = conv_encoder_layers(enc_in, filters, "encoder")
    x = keras.layers.Flatten(name="encoder_flatten")(x)
    encoder = keras.Model(enc_in, keras.layers.Dense(latent_dim, name="code")(x), name="encoder")

    dec_in = keras.Input(shape=(latent_dim,), name="decoder_inputs")
    decoder = keras.Model(
        dec_in, conv_decoder_layers(dec_in, input_shape, filters, "decoder", output_activation),
        name="decoder")
    return _assemble(keras.Input(shape=input_shape, name="inputs"), encoder, decoder,
                     noise_stddev, name)


def anomaly_scores(model, x, *, batch_size=256):
    """Per-example reconstruction error (mean squared error over all features).

    Args:
        model: a trained autoencoder (or VAE: its deterministic reconstruction).
        x: array of examples, shaped like the model's input.
        batch_size: prediction batch size. Defaults to 256.
    Returns:
        numpy array of shape (len(x),); higher means more anomalous.
    """
    x = np.asarray(x, dtype="float32")
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty batch of examples. Received: x.shape={x.shape}")
    reconstruction = np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    return np.mean(np.square(x - reconstruction).reshape(len(x), -1), axis=1)


def anomaly_threshold(model, x_train, *, percentile=99.0, batch_size=256):
    """Score above which an example counts as anomalous: a percentile of training scores.

    Args:
        model: a trained autoencoder.
        x_train: normal (training) examples.
        percentile: in (0, 100]; 99 flags about 1% of normal data. Defaults to 99.
        batch_size: prediction batch size. Defaults to 256.
    """
    checks.fraction("percentile", percentile, low=0.0, high=100.0, include_high=True)
    return float(np.percentile(anomaly_scores(model, x_train, batch_size=batch_size),
                               percentile))
