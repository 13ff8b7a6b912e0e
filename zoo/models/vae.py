"""Variational autoencoders (Kingma & Welling 2013), dense and convolutional.

The returned model is a `zoo.models.layers.generative.VAE`: `fit(x)` trains
the negative (beta-)ELBO and logs reconstruction, KL and ELBO; `model(x)`
reconstructs from the posterior mean (deterministic); `encode`, `decode` and
`sample(n)` reach the two halves, which are also sub-models named "encoder"
(x -> [z_mean, z_log_var]) and "decoder" (z -> x).
"""

import numpy as np

from zoo import checks
from zoo._lazy import keras
from zoo.models.autoencoder import (check_filters, conv_decoder_layers, conv_encoder_layers,
                                    conv_stages_check)
from zoo.registry import Recipe, register

HOOKS = "zoo.tasks.generative:VAEHooks"
RECONSTRUCTION_LOSSES = ("bce", "mse")


def _check_vae(input_shape, latent_dim, beta, reconstruction_loss, *, rank=None):
    input_shape = checks.shape("input_shape", input_shape, rank=rank)
    checks.positive_int("latent_dim", latent_dim)
    checks.non_negative_float("beta", beta)
    checks.choice("reconstruction_loss", reconstruction_loss, RECONSTRUCTION_LOSSES)
    return input_shape


def _heads(x, latent_dim):
    z_mean = keras.layers.Dense(latent_dim, name="z_mean")(x)
    z_log_var = keras.layers.Dense(latent_dim, name="z_log_var")(x)
    return [z_mean, z_log_var]


def _vae(encoder, decoder, input_shape, beta, reconstruction_loss, seed, name):
    from zoo.models.layers.generative import VAE

    model = VAE(encoder, decoder, beta=float(beta), reconstruction_loss=reconstruction_loss,
                seed=seed, name=name)
    # Build (and record the build shape for `.keras` loading) with one call.
    model(np.zeros((1, *input_shape), dtype="float32"))
    return model


def _space(hp):
    return {
        "latent_dim": hp.Choice("latent_dim", [2, 8, 16], default=2),
        "beta": hp.Choice("beta", [0.5, 1.0, 2.0], default=1.0),
    }


@register(family="vae", task="generative", input_policy="data", test_input_shape=(8, 8, 1),
          num_params=469_268, paper="Kingma & Welling 2013, Auto-Encoding Variational Bayes",
          params_note="28x28x1, hidden (256, 128), latent 2, Bernoulli decoder",
          recipe=Recipe(optimizer="adam", learning_rate=1e-3, epochs=30,
                        early_stopping_patience=None),
          search_space=_space, hooks=HOOKS,
          test_kwargs={"latent_dim": 2, "hidden_units": (16,), "seed": 0})
def dense_vae(*, input_shape=(28, 28, 1), latent_dim=2, hidden_units=(256, 128), beta=1.0,
              reconstruction_loss="bce", seed=None, name="dense_vae"):
    """Fully connected variational autoencoder.

    Args:
        input_shape: shape of one example, values in [0, 1]. Defaults to (28, 28, 1).
        latent_dim: size of z (2 gives a plottable latent space). Defaults to 2.
        hidden_units: encoder hidden sizes (the decoder mirrors them).
            Defaults to (256, 128).
        beta: weight of the KL term (beta-VAE); must be >= 0. Defaults to 1.
        reconstruction_loss: "bce" (Bernoulli) or "mse". Defaults to "bce".
        seed: seed of the sampling noise. Defaults to None.
        name: model name. Defaults to "dense_vae".
    """
    input_shape = _check_vae(input_shape, latent_dim, beta, reconstruction_loss)
    hidden_units = (hidden_units,) if isinstance(hidden_units, int) else tuple(hidden_units)
    for units in hidden_units:
        checks.positive_int("hidden_units", units)
    layers = keras.layers

    enc_in = keras.Input(shape=input_shape, name="encoder_inputs")
    x = layers.Flatten(name="encoder_flatten")(enc_in)
    for i, units in enumerate(hidden_units, start=1):
        x = layers.Dense(units, activation="relu", name=f"encoder_dense{i}")(x)
    encoder = keras.Model(enc_in, _heads(x, latent_dim), name="encoder")

    dec_in = keras.Input(shape=(latent_dim,), name="decoder_inputs")
    x = dec_in
    for i, units in enumerate(reversed(hidden_units), start=1):
        x = layers.Dense(units, activation="relu", name=f"decoder_dense{i}")(x)
    x = layers.Dense(int(np.prod(input_shape)), activation="sigmoid", name="decoder_output")(x)
    decoder = keras.Model(dec_in, layers.Reshape(input_shape, name="decoder_reshape")(x),
                          name="decoder")
    return _vae(encoder, decoder, input_shape, beta, reconstruction_loss, seed, name)


@register(family="vae", task="generative", test_input_shape=(8, 8, 1),
          min_input_shape=(4, 4, 1), num_params=134_165,
          paper="Kingma & Welling 2013, Auto-Encoding Variational Bayes",
          params_note="28x28x1, filters (32, 64), 16-unit dense layer, latent 2 "
                      "(as in the Keras VAE example)",
          recipe=Recipe(optimizer="adam", learning_rate=1e-3, epochs=30,
                        early_stopping_patience=None),
          search_space=_space, hooks=HOOKS,
          test_kwargs={"latent_dim": 2, "filters": (4, 8), "dense_units": 8, "seed": 0})
def conv_vae(*, input_shape=(28, 28, 1), latent_dim=2, filters=(32, 64), dense_units=16,
             beta=1.0, reconstruction_loss="bce", seed=None, name="conv_vae"):
    """Convolutional variational autoencoder.

    Args:
        input_shape: (height, width, channels), values in [0, 1]; height and
            width must be divisible by 2 ** len(filters). Defaults to (28, 28, 1).
        latent_dim: size of z (2 gives a plottable latent space). Defaults to 2.
        filters: channels of the stride-2 stages. Defaults to (32, 64).
        dense_units: dense layer between the convolutions and the z heads.
            Defaults to 16.
        beta: weight of the KL term (beta-VAE); must be >= 0. Defaults to 1.
        reconstruction_loss: "bce" (Bernoulli) or "mse". Defaults to "bce".
        seed: seed of the sampling noise. Defaults to None.
        name: model name. Defaults to "conv_vae".
    """
    input_shape = _check_vae(input_shape, latent_dim, beta, reconstruction_loss, rank=3)
    filters = check_filters(filters)
    checks.positive_int("dense_units", dense_units)
    conv_stages_check(input_shape, len(filters))
    layers = keras.layers

    enc_in = keras.Input(shape=input_shape, name="encoder_inputs")
    x = conv_encoder_layers(enc_in, filters, "encoder")
    x = layers.Flatten(name="encoder_flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="encoder_dense")(x)
    encoder = keras.Model(enc_in, _heads(x, latent_dim), name="encoder")

    dec_in = keras.Input(shape=(latent_dim,), name="decoder_inputs")
    decoder = keras.Model(dec_in, conv_decoder_layers(dec_in, input_shape, filters, "decoder",
                                                      "sigmoid"), name="decoder")
    return _vae(encoder, decoder, input_shape, beta, reconstruction_loss, seed, name)
