"""Autoencoders, VAEs and GANs learn, show their samples, export, and refuse bad input.

Data: scikit-learn's bundled digits (8x8, in [0, 1]); fixed seeds; CPU.
"""

import os

import numpy as np
import pytest

import zoo


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images / 16.0).astype("float32")[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        x, bunch.target, test_size=0.25, random_state=0, stratify=bunch.target)
    return x_train, x_test, y_train, y_test


@pytest.fixture(scope="module")
def digit_features(digits):
    """The Frechet-distance feature classifier, trained once on digits in [-1, 1]."""
    from zoo.metrics import feature_classifier

    x_train, _, y_train, _ = digits
    return feature_classifier(x_train * 2 - 1, y_train, epochs=8, seed=0)


def _seed(seed=0):
    import keras

    keras.utils.set_random_seed(seed)


# ----------------------------------------------------------------- learning


def test_conv_autoencoder_beats_pca_at_same_code_size(digits):
    import keras

    from zoo.metrics import pca_reconstruction_mse

    x_train, x_test, _, _ = digits
    _seed()
    model = zoo.build("conv_autoencoder", input_shape=(8, 8, 1), latent_dim=4, filters=(16, 32))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    model.fit(x_train, x_train, epochs=15, batch_size=32, verbose=0)
    mse = float(np.mean(np.square(model.predict(x_test, verbose=0) - x_test)))
    pca = pca_reconstruction_mse(x_train, x_test, 4)
    print(f"conv AE test MSE {mse:.4f} vs PCA(4) {pca:.4f} (ratio {mse / pca:.2f})")
    assert mse < pca


def test_anomaly_scores_separate_a_held_out_class(digits):
    import keras
    from sklearn.metrics import roc_auc_score

    from zoo.models.autoencoder import anomaly_scores, anomaly_threshold

    x_train, x_test, y_train, y_test = digits
    # Normal data: zeros only; the held-out class (ones) was never seen.
    normal_train = x_train[y_train == 0]
    _seed()
    model = zoo.build("dense_autoencoder", input_shape=(8, 8, 1), latent_dim=4,
                      hidden_units=(32,), noise_stddev=0.05)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    model.fit(normal_train, normal_train, epochs=60, batch_size=16, verbose=0)
    normal, anomalous = x_test[y_test == 0], x_test[y_test == 1]
    scores = anomaly_scores(model, np.concatenate([normal, anomalous]))
    truth = np.r_[np.zeros(len(normal)), np.ones(len(anomalous))]
    auc = roc_auc_score(truth, scores)
    threshold = anomaly_threshold(model, normal_train, percentile=90)
    train_flagged = np.mean(anomaly_scores(model, normal_train) > threshold)
    print(f"anomaly ROC AUC {auc:.3f}; threshold flags {train_flagged:.2%} of training data")
    assert auc >= 0.9
    assert train_flagged == pytest.approx(0.10, abs=0.03)
    assert np.mean(anomaly_scores(model, anomalous) > threshold) > 0.5


def test_decoded_prior_spread_is_zero_for_a_collapsed_decoder(digits):
    """A decoder that ignores z scores 0; the data's own spread is reported beside it."""
    from zoo.metrics import decoded_prior_spread, prior_grid

    _, x_test, _, _ = digits
    model = zoo.build("dense_vae", input_shape=(8, 8, 1), latent_dim=2, hidden_units=(8,),
                      seed=0)
    grid = prior_grid(2, grid=3)
    assert grid.shape == (9, 2) and grid[0, 1] > 1.6 and grid[0, 0] < -1.6  # top-left
    assert prior_grid(5).shape == (100, 5)
    spread, data_spread = decoded_prior_spread(model, x_test)
    assert spread > 0 and data_spread == pytest.approx(float(x_test.std(axis=0).mean()))
    first = model.decoder.get_layer("decoder_dense1")
    first.kernel.assign(np.zeros(first.kernel.shape, "float32"))  # z no longer reaches it
    assert decoded_prior_spread(model, x_test)[0] == pytest.approx(0.0, abs=1e-7)


def test_vae_test_elbo_improves_and_samples_look_like_data(digits):
    import keras

    x_train, x_test, _, _ = digits
    _seed()
    model = zoo.build("dense_vae", input_shape=(8, 8, 1), latent_dim=4, hidden_units=(128,),
                      seed=0)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    history = model.fit(x_train, epochs=10, batch_size=32, verbose=0,
                        validation_data=(x_test,)).history
    for key in ("loss", "reconstruction_loss", "kl_loss", "elbo", "val_elbo"):
        assert key in history and np.all(np.isfinite(history[key]))
    first, last = history["val_elbo"][0], history["val_elbo"][-1]
    print(f"test ELBO epoch 1 {first:.2f} -> epoch 10 {last:.2f} nats")
    assert last - first >= 3.0, history["val_elbo"]
    # ELBO = -(reconstruction + KL) exactly for beta = 1.
    np.testing.assert_allclose(history["elbo"], -np.add(history["reconstruction_loss"],
                                                        history["kl_loss"]), rtol=1e-4)
    samples = np.asarray(model.sample(16, seed=1))
    assert samples.shape == (16, 8, 8, 1)
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    z = np.asarray(model.encode(x_test[:5]))
    assert z.shape == (5, 4)
    np.testing.assert_allclose(np.asarray(model.decode(z)), np.asarray(model(x_test[:5])),
                               atol=1e-6)
    # Deterministic inference (posterior mean), random training-mode forward pass.
    np.testing.assert_array_equal(np.asarray(model(x_test[:5])), np.asarray(model(x_test[:5])))
    assert not np.allclose(np.asarray(model(x_test[:5], training=True)),
                           np.asarray(model(x_test[:5], training=True)))


def test_gan_frechet_distance_halves_after_short_training(digits, digit_features):
    from zoo.tasks.generative import GANHooks, generated_quality

    x_train, x_test, y_train, _ = digits
    x_train, x_test = x_train * 2 - 1, x_test * 2 - 1  # tanh range, as GANHooks does
    classifier, features = digit_features
    _seed()
    model = zoo.build("dcgan", input_shape=(8, 8, 1), latent_dim=16, generator_filters=(64, 32),
                      discriminator_filters=(32, 64), label_smoothing=0.1, seed=0)
    before = generated_quality(np.asarray(model.generate(400, seed=1)), x_test, classifier,
                               features)
    import keras

    GANHooks().compile(model, optimizer=keras.optimizers.Adam(2e-4), loss=None, metrics=None,
                       recipe=None)
    assert model.d_optimizer is not model.g_optimizer
    assert float(model.g_optimizer.beta_1) == 0.5
    history = model.fit(x_train, epochs=6, batch_size=32, verbose=0).history
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert np.all(np.isfinite(history[key]))
    samples = np.asarray(model.generate(400, seed=1))
    after = generated_quality(samples, x_test, classifier, features)
    print(f"Frechet distance (classifier features) {before['frechet_distance']:.1f} -> "
          f"{after['frechet_distance']:.1f}; confidence {before['classifier_confidence']:.2f} "
          f"-> {after['classifier_confidence']:.2f}")
    assert after["frechet_distance"] <= 0.5 * before["frechet_distance"]
    assert samples.shape == (400, 8, 8, 1) and samples.min() >= -1 and samples.max() <= 1


def test_conditional_gan_draws_the_requested_digit(digits, digit_features):
    import keras

    from zoo.tasks.generative import ConditionalGANHooks, generated_quality

    x_train, x_test, y_train, _ = digits
    x_train, x_test = x_train * 2 - 1, x_test * 2 - 1
    classifier, features = digit_features
    _seed()
    model = zoo.build("conditional_dcgan", input_shape=(8, 8, 1), num_classes=10, latent_dim=16,
                      generator_filters=(64, 32), discriminator_filters=(32, 64),
                      label_smoothing=0.1, seed=0)
    labels = np.arange(400) % 10

    def quality():
        samples = np.asarray(model.generate(400, labels=labels, seed=1))
        asked = np.mean(classifier.predict(samples, verbose=0).argmax(1) == labels)
        return asked, generated_quality(samples, x_test, classifier, features)

    before_accuracy, before = quality()
    ConditionalGANHooks().compile(model, optimizer=keras.optimizers.Adam(2e-4), loss=None,
                                  metrics=None, recipe=None)
    with pytest.raises(ValueError, match="labels"):
        model.fit(x_train, epochs=1, verbose=0)
    model.fit(x_train, y_train.astype("int32"), epochs=8, batch_size=32, verbose=0)
    accuracy, after = quality()
    print(f"conditional GAN: classifier agrees with the requested digit {before_accuracy:.2f} "
          f"-> {accuracy:.2f}; Frechet distance {before['frechet_distance']:.1f} -> "
          f"{after['frechet_distance']:.1f}")
    assert accuracy >= 0.5  # chance is 0.1
    assert after["frechet_distance"] <= 0.5 * before["frechet_distance"]


def test_frechet_distance_matches_closed_form():
    from scipy import linalg

    from zoo.metrics import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 6))
    b = rng.normal(1.0, 2.0, size=(500, 6)) @ rng.normal(size=(6, 6))
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = (np.sum(np.square(a.mean(0) - b.mean(0))) + np.trace(cov_a + cov_b)
                - 2 * np.trace(np.real(linalg.sqrtm(cov_a @ cov_b))))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------- structure & saving


def test_autoencoder_submodels_and_training_only_noise(rng):
    model = zoo.build("conv_autoencoder", input_shape=(8, 8, 1), latent_dim=3, filters=(4, 8),
                      noise_stddev=0.5)
    encoder, decoder = model.get_layer("encoder"), model.get_layer("decoder")
    x = rng.random((4, 8, 8, 1)).astype("float32")
    code = np.asarray(encoder(x))
    assert code.shape == (4, 3)
    np.testing.assert_allclose(np.asarray(model(x, training=False)), np.asarray(decoder(code)),
                               atol=1e-6)
    # Noise only in training: training-mode outputs differ from the clean path.
    assert not np.allclose(np.asarray(model(x, training=True)), np.asarray(decoder(code)))


def test_vae_and_gan_keras_round_trip(tmp_path, rng):
    import keras

    x = rng.random((4, 8, 8, 1)).astype("float32")
    z = rng.standard_normal((4, 2)).astype("float32")
    vae = zoo.build("dense_vae", input_shape=(8, 8, 1), latent_dim=2, hidden_units=(8,), seed=3)
    vae.compile(optimizer="adam")
    vae.fit(x, epochs=1, verbose=0)
    vae.save(tmp_path / "vae.keras")
    loaded = keras.saving.load_model(tmp_path / "vae.keras")
    assert type(loaded).__name__ == "VAE" and loaded.beta == vae.beta
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(vae(x)))
    np.testing.assert_array_equal(np.asarray(loaded.decode(z)), np.asarray(vae.decode(z)))
    np.testing.assert_array_equal(np.asarray(loaded.sample(3, seed=7)),
                                  np.asarray(vae.sample(3, seed=7)))

    gan = zoo.build("dcgan", input_shape=(8, 8, 1), latent_dim=2, generator_filters=(8, 4),
                    discriminator_filters=(4, 8), label_smoothing=0.1, seed=3)
    gan.compile()
    gan.fit(x * 2 - 1, epochs=1, verbose=0)
    gan.save(tmp_path / "gan.keras")
    loaded = keras.saving.load_model(tmp_path / "gan.keras")
    assert type(loaded).__name__ == "GAN" and loaded.label_smoothing == 0.1
    assert loaded.compiled and loaded.g_optimizer is not loaded.d_optimizer
    for part in ("d_optimizer", "g_optimizer"):  # both optimizers' state comes back
        saved, restored = getattr(gan, part).variables, getattr(loaded, part).variables
        assert len(saved) == len(restored) > 2
        for a, b in zip(saved, restored, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(gan(x)))
    np.testing.assert_array_equal(np.asarray(loaded.generator(z)), np.asarray(gan.generator(z)))
    np.testing.assert_array_equal(np.asarray(loaded.generate(3, seed=5)),
                                  np.asarray(gan.generate(3, seed=5)))


# Every endpoint of several SavedModels, in one fresh interpreter with only TensorFlow.
_FRESH = r"""
import sys, numpy as np, tensorflow as tf
root, feeds_file, out_file = sys.argv[1:4]
calls, results = {}, {}
with np.load(feeds_file) as feeds:
    for key in feeds.files:
        name, endpoint, arg = key.split("/")
        calls.setdefault((name, endpoint), {})[arg] = tf.constant(feeds[key])
loaded = {}
for (name, endpoint), kwargs in calls.items():
    if name not in loaded:
        loaded[name] = tf.saved_model.load(f"{root}/{name}")
    out = loaded[name].signatures[endpoint](**kwargs)
    results.update({f"{name}/{endpoint}/{k}": v.numpy() for k, v in out.items()})
assert "zoo" not in sys.modules
np.savez(out_file, **results)
"""

ENDPOINTS = {"conv_autoencoder": {"encode", "decode", "reconstruct"},
             "conv_vae": {"encode", "decode", "reconstruct", "sample"},
             "dcgan": {"sample"}, "conditional_dcgan": {"sample"}}


def test_named_endpoints_match_in_a_fresh_tensorflow_process(tmp_path, rng):
    import inspect
    import subprocess
    import sys

    from zoo.export import export_saved_model
    from zoo.tasks import get_hooks

    feeds, expected = {}, {}
    for name, names in ENDPOINTS.items():
        spec = zoo.get_spec(name)
        model = spec.build(input_shape=spec.test_input_shape, **spec.test_kwargs)
        signatures = get_hooks(spec).export_signatures(model)
        assert names <= set(signatures), name
        export_saved_model(model, str(tmp_path / name), signatures=signatures)
        for endpoint, (fn, input_signature) in signatures.items():
            args = []
            for arg, tensor_spec in zip(inspect.signature(fn).parameters, input_signature):
                shape = [3 if d is None else d for d in tensor_spec.shape]
                value = (rng.integers(0, 3, shape).astype("int32")
                         if tensor_spec.dtype.is_integer else rng.random(shape).astype("float32"))
                feeds[f"{name}/{endpoint}/{arg}"] = value
                args.append(value)
            out = fn(*args)
            out = out if isinstance(out, dict) else {"output_0": out}
            expected.update({f"{name}/{endpoint}/{k}": np.asarray(v) for k, v in out.items()})
    np.savez(tmp_path / "feeds.npz", **feeds)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", _FRESH, str(tmp_path),
                           str(tmp_path / "feeds.npz"), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with np.load(tmp_path / "out.npz") as served:
        assert sorted(served.files) == sorted(expected)
        for key, value in expected.items():
            np.testing.assert_allclose(served[key], value, atol=1e-5, err_msg=key)


def test_sample_grid_writes_pngs_and_latent_plot(tmp_path, digits):
    import keras

    from zoo.callbacks import SampleGrid

    x_train, x_test, _, y_test = digits
    _seed()
    vae = zoo.build("dense_vae", input_shape=(8, 8, 1), latent_dim=2, hidden_units=(16,), seed=0)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    callback = SampleGrid(tmp_path, images=x_test[:6], num_samples=6,
                          latent_data=(x_test, y_test))
    vae.fit(x_train[:256], epochs=2, batch_size=64, verbose=0, callbacks=[callback])
    for epoch in (1, 2):
        path = tmp_path / "samples" / f"epoch_{epoch:03d}.png"
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "latent_space.png").stat().st_size > 1000
    # Atomic writes leave no temporary files behind.
    assert sorted(os.listdir(tmp_path / "samples")) == ["epoch_001.png", "epoch_002.png"]


def test_vae_and_gan_train_under_mixed_precision(rng):
    """The GPU default policy: float16 compute, float32 losses, both optimizers loss-scaled."""
    import keras

    from zoo.tasks.generative import GANHooks

    x = rng.random((16, 8, 8, 1)).astype("float32")
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy("mixed_float16")
    try:
        vae = zoo.build("conv_vae", input_shape=(8, 8, 1), filters=(4, 8), dense_units=8, seed=0)
        vae.compile(optimizer="adam")
        gan = zoo.build("dcgan", input_shape=(8, 8, 1), latent_dim=4, generator_filters=(8, 4),
                        discriminator_filters=(4, 8), seed=0)
        GANHooks().compile(gan, optimizer=keras.optimizers.Adam(2e-4), loss=None, metrics=None,
                           recipe=None)
    finally:
        keras.config.set_dtype_policy(previous)
    assert isinstance(gan.g_optimizer, keras.optimizers.LossScaleOptimizer)
    vae_logs = vae.fit(x, epochs=1, batch_size=8, verbose=0).history
    gan_logs = gan.fit(x * 2 - 1, epochs=1, batch_size=8, verbose=0).history
    for logs in (vae_logs, gan_logs):
        assert all(np.isfinite(v[-1]) for v in logs.values()), logs


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", ["dense_autoencoder", "conv_autoencoder", "dense_vae",
                                  "conv_vae", "dcgan"])
def test_latent_dim_must_be_positive(name):
    with pytest.raises(ValueError, match="latent_dim"):
        zoo.build(name, input_shape=(8, 8, 1), latent_dim=0)


@pytest.mark.parametrize("name,kwargs,needed", [
    ("conv_autoencoder", {"filters": (4, 8)}, 4),
    ("conv_vae", {"filters": (4, 8, 16)}, 8),
    ("dcgan", {"generator_filters": (8, 4), "discriminator_filters": (4,)}, 4),
])
def test_image_sizes_the_strides_cannot_reproduce(name, kwargs, needed):
    with pytest.raises(ValueError, match=f"input_shape.*divisible by {needed}"):
        zoo.build(name, input_shape=(10, 10, 1), **kwargs)


def test_negative_beta_and_bad_options():
    with pytest.raises(ValueError, match="beta"):
        zoo.build("conv_vae", input_shape=(8, 8, 1), beta=-0.5)
    with pytest.raises(ValueError, match="reconstruction_loss"):
        zoo.build("dense_vae", reconstruction_loss="l1")
    with pytest.raises(ValueError, match="noise_stddev"):
        zoo.build("dense_autoencoder", noise_stddev=-1.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        zoo.build("dcgan", input_shape=(8, 8, 1), label_smoothing=0.7)


def test_generator_and_discriminator_must_meet():
    from zoo.models.gan import build_gan, dcgan_discriminator, dcgan_generator

    generator = dcgan_generator(output_shape=(8, 8, 1), latent_dim=4, filters=(8, 4))
    with pytest.raises(ValueError, match="discriminator input shape"):
        build_gan(generator=generator,
                  discriminator=dcgan_discriminator(input_shape=(16, 16, 1), filters=(4, 8)))
    with pytest.raises(ValueError, match="discriminator"):
        build_gan(generator=generator, discriminator="not a model")


def test_anomaly_threshold_percentile_is_checked():
    from zoo.models.autoencoder import anomaly_threshold

    with pytest.raises(ValueError, match="percentile"):
        anomaly_threshold(None, np.zeros((2, 4)), percentile=101)


# ----------------------------------------------------------- zoo.train end to end


@pytest.mark.parametrize("name,kwargs,expected", [
    ("conv_autoencoder", {"latent_dim": 4, "filters": (8, 16)},
     {"reconstruction_mse", "pca_reconstruction_mse"}),
    ("conv_vae", {"latent_dim": 2, "filters": (8, 16), "dense_units": 16, "seed": 0},
     {"test_elbo", "test_kl", "pca_reconstruction_mse", "decoded_prior_pixel_std",
      "test_pixel_std"}),
    ("dcgan", {"latent_dim": 8, "generator_filters": (16, 8), "discriminator_filters": (8, 16),
               "seed": 0},
     {"frechet_distance", "frechet_distance_untrained_generator",
      "classifier_confidence_on_samples"}),
    ("conditional_dcgan", {"latent_dim": 8, "generator_filters": (16, 8),
                           "discriminator_filters": (8, 16), "seed": 0},
     {"frechet_distance", "conditional_accuracy"}),
])
def test_zoo_train_writes_grids_metrics_and_signatures(name, kwargs, expected, tmp_path):
    import json

    from zoo.training import train

    result = train(name, data="digits", epochs=1, run_dir=str(tmp_path / name), verbose=0,
                   model_kwargs={"input_shape": (8, 8, 1), **kwargs})
    run = tmp_path / name
    assert sorted(os.listdir(run / "samples")) == ["epoch_001.png"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert expected <= set(metrics), sorted(metrics)
    card = json.loads((run / "model_card.json").read_text())
    names = set(card["exports"]["saved_model"]["signatures"])
    # Every family serves its own endpoints next to serving_default, and nothing else.
    assert names == ENDPOINTS[name] | {"serving_default"}
    if name == "conditional_dcgan":
        assert result.model.num_classes == 10  # counted from the data's labels
    if name in ("dcgan", "conditional_dcgan"):
        # Training data reached the GAN in the generator's tanh range.
        x = np.concatenate([np.asarray(b[0]) for b in result.bundle.test])
        assert x.min() < -0.9 and x.max() <= 1.0
    if name == "conv_vae":
        assert (run / "latent_space.png").exists()
