"""Training, evaluation and export hooks of the generative families, with their pictures.

- `AutoencoderHooks`, `VAEHooks`, `GANHooks`: what `zoo.train` does differently
  for autoencoders (targets = inputs), VAEs and GANs (two optimizers, data in
  [-1, 1]) -- see `zoo.tasks.TaskHooks`.
- Each run gets `zoo.callbacks.SampleGrid` (run_dir/samples/epoch_NNN.png),
  and metrics.json the quality numbers of `zoo.metrics` (reconstruction MSE
  next to a PCA baseline, test ELBO, a Frechet distance for GANs).
"""

import numpy as np

from zoo._lazy import keras
from zoo.metrics import (decoded_prior_spread, feature_classifier, frechet_distance,
                         generated_quality, pca_reconstruction_mse)
from zoo.tasks import TaskHooks
# ------------------------------------------------------------------ data helpers


def _x_of(batch):
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def split_arrays(dataset, *, labels=False, limit=None):
    """Materialise (x[, y]) of a batched dataset exactly as the model receives it."""
    xs, ys = [], []
    for batch in dataset:
        xs.append(np.asarray(_x_of(batch)))
        if labels:
            has_y = isinstance(batch, (tuple, list)) and len(batch) > 1
            ys.append(np.asarray(batch[1]) if has_y else None)
        # No early break: a partly read `.cache()` pipeline drops its cache.
    x = np.concatenate(xs)[:limit]
    if not labels:
        return x
    y = None if any(v is None for v in ys) else np.concatenate(ys)[:limit]
    return x, y


def _gan_quality(model, bundle, n_samples=None, seed=0):
    x_train, y_train = split_arrays(bundle.train, labels=True)
    x_test = split_arrays(bundle.test)
    if y_train is None:
        return {}
    classifier, features = feature_classifier(x_train, y_train, seed=seed)
    accuracy = None
    if bundle.arrays.y_test is not None:
        _, y_test = split_arrays(bundle.test, labels=True)
        accuracy = float(np.mean(classifier.predict(x_test, verbose=0).argmax(1) == y_test))
    n = n_samples or len(x_test)
    conditional = getattr(model, "num_classes", None)
    requested = None
    if conditional:
        # Ask for the test split's own label mix, so real and generated sets
        # are compared class for class.
        _, y_test_model = split_arrays(bundle.test, labels=True)
        requested = np.resize(np.asarray(y_test_model).astype("int32").reshape(-1), n)
        samples = np.asarray(model.generate(n, labels=requested, seed=seed))
    else:
        samples = np.asarray(model.generate(n, seed=seed))
    quality = generated_quality(samples, x_test, classifier, features)
    # Floor of the scale: real training images against real test images.
    reference = frechet_distance(features.predict(x_train[:len(x_test)], verbose=0),
                                 features.predict(x_test, verbose=0))
    # Ceiling of the scale: the same generator architecture, freshly initialised.
    untrained = keras.models.clone_model(model.generator)
    z = np.random.default_rng(seed).standard_normal((n, model.latent_dim)).astype("float32")
    fresh = untrained([z, requested] if conditional else z, training=False)
    before = generated_quality(np.asarray(fresh), x_test, classifier, features)
    out = {"frechet_distance": quality["frechet_distance"],
           "frechet_distance_untrained_generator": before["frechet_distance"],
           "frechet_distance_real_vs_real": reference,
           "classifier_confidence_on_samples": quality["classifier_confidence"],
           "frechet_note": "Frechet distance in the 64-d features of a small CNN trained by "
                           "zoo on this data's training split; NOT the Inception FID"}
    if accuracy is not None:
        out["feature_classifier_test_accuracy"] = accuracy
    if conditional:
        # Does the generator draw the class it was asked for?
        predicted = classifier.predict(samples, verbose=0).argmax(1)
        out["conditional_accuracy"] = float(np.mean(predicted == requested))
    return out


# ------------------------------------------------------------------------ hooks


def _spec_input_signature(shape):
    import tensorflow as tf

    return [tf.TensorSpec((None, *shape), tf.float32)]


class AutoencoderHooks(TaskHooks):
    """Autoencoders: targets are the inputs; PCA baseline; encode/decode/reconstruct endpoints."""

    def prepare_data(self, spec, bundle):
        import dataclasses

        to_xx = lambda *b: (b[0], b[0])  # noqa: E731
        return dataclasses.replace(bundle, train=bundle.train.map(to_xx),
                                   validation=bundle.validation.map(to_xx),
                                   test=bundle.test.map(to_xx))

    def callbacks(self, model, bundle, run_dir):
        images = split_arrays(bundle.test, limit=8)
        from zoo.callbacks import SampleGrid
        return [SampleGrid(run_dir, images=images, num_samples=0)]

    def evaluate(self, model, bundle):
        x_train = split_arrays(bundle.train)
        x_test = split_arrays(bundle.test)
        reconstruction = np.asarray(model.predict(x_test, verbose=0))
        mse = float(np.mean(np.square(x_test - reconstruction)))
        latent_dim = int(model.get_layer("encoder").outputs[0].shape[-1])
        pca = pca_reconstruction_mse(x_train, x_test, latent_dim)
        return {"reconstruction_mse": mse, "pca_reconstruction_mse": pca,
                "pca_components": latent_dim, "mse_ratio_to_pca": mse / pca if pca else None}

    def export_signatures(self, model):
        shape = tuple(model.inputs[0].shape[1:])
        encoder, decoder = model.get_layer("encoder"), model.get_layer("decoder")
        latent = (int(decoder.inputs[0].shape[-1]),)
        # serving_default stays zoo.export's default (named outputs, verified).
        return {
            "reconstruct": (lambda x: model(x, training=False), _spec_input_signature(shape)),
            "encode": (lambda x: encoder(x, training=False), _spec_input_signature(shape)),
            "decode": (lambda z: decoder(z, training=False), _spec_input_signature(latent)),
        }


class VAEHooks(TaskHooks):
    """VAEs: own train_step (loss ignored); ELBO on the test split; latent plot for 2-D."""

    def compile(self, model, *, optimizer, loss, metrics, recipe, jit_compile=False):
        # The VAE computes its own loss and metrics in train_step.
        model.compile(optimizer=optimizer, jit_compile=jit_compile)

    def callbacks(self, model, bundle, run_dir):
        images = split_arrays(bundle.test, limit=8)
        latent = None
        if model.latent_dim == 2:
            latent = split_arrays(bundle.test, labels=True, limit=2000)
        from zoo.callbacks import SampleGrid
        return [SampleGrid(run_dir, images=images, num_samples=8, latent_data=latent)]

    def evaluate(self, model, bundle):
        if not model.compiled:
            model.compile(optimizer="adam")
        result = model.evaluate(bundle.test, verbose=0, return_dict=True)
        x_train = split_arrays(bundle.train)
        x_test = split_arrays(bundle.test)
        mse = float(np.mean(np.square(x_test - np.asarray(model.predict(x_test, verbose=0)))))
        spread, data_spread = decoded_prior_spread(model, x_test)
        return {"test_elbo": float(result["elbo"]),
                "test_reconstruction_loss": float(result["reconstruction_loss"]),
                "test_kl": float(result["kl_loss"]),
                "elbo_units": "nats per example (higher is better)",
                "reconstruction_mse": mse,
                "pca_reconstruction_mse": pca_reconstruction_mse(x_train, x_test,
                                                                 model.latent_dim),
                # Near 0: the decoder maps the whole prior to one image.
                "decoded_prior_pixel_std": spread, "test_pixel_std": data_spread}

    def export_signatures(self, model):
        shape = tuple(model.encoder.inputs[0].shape[1:])
        latent = (model.latent_dim,)

        def encode(x):
            z_mean, z_log_var = model.encoder(x, training=False)
            return {"z_mean": z_mean, "z_log_var": z_log_var}

        decode = lambda z: model.decoder(z, training=False)  # noqa: E731
        return {
            "serving_default": (lambda x: model(x, training=False), _spec_input_signature(shape)),
            "reconstruct": (lambda x: model(x, training=False), _spec_input_signature(shape)),
            "encode": (encode, _spec_input_signature(shape)),
            "decode": (decode, _spec_input_signature(latent)),
            "sample": (decode, _spec_input_signature(latent)),
        }

    def example_batch(self, spec, model, batch_size, rng):
        shape = tuple(model.encoder.inputs[0].shape[1:])
        return rng.uniform(0, 1, (batch_size, *shape)).astype("float32"), None


class GANHooks(TaskHooks):
    """GANs: data scaled to [-1, 1], two Adam(beta_1=0.5) optimizers, Frechet distance."""

    # d_loss + g_loss on validation data does not track sample quality, so
    # no early stopping or "best" checkpoint on it: keep the latest epoch.
    monitor = None

    def prepare_data(self, spec, bundle):
        import dataclasses

        # The generator ends in tanh, so real images must live in [-1, 1] too.
        def scale(*b):
            return (b[0] * 2.0 - 1.0, *b[1:])

        return dataclasses.replace(bundle, train=bundle.train.map(scale),
                                   validation=bundle.validation.map(scale),
                                   test=bundle.test.map(scale),
                                   extras={**bundle.extras, "value_range": (-1.0, 1.0)})

    def compile(self, model, *, optimizer, loss, metrics, recipe, jit_compile=False):
        config = keras.optimizers.serialize(optimizer)
        if isinstance(optimizer, keras.optimizers.Adam) and not isinstance(
                optimizer, keras.optimizers.AdamW):
            config["config"]["beta_1"] = 0.5  # Radford et al. 2015
        model.compile(d_optimizer=keras.optimizers.deserialize(config),
                      g_optimizer=keras.optimizers.deserialize(config), jit_compile=jit_compile)

    def callbacks(self, model, bundle, run_dir):
        from zoo.callbacks import SampleGrid
        return [SampleGrid(run_dir, num_samples=16, value_range=(-1.0, 1.0))]

    def evaluate(self, model, bundle):
        return _gan_quality(model, bundle)

    def export_signatures(self, model):
        shape = tuple(model.discriminator.inputs[0].shape[1:])
        return {
            "serving_default": (lambda x: model(x, training=False), _spec_input_signature(shape)),
            "sample": (lambda z: model.generator(z, training=False),
                       _spec_input_signature((model.latent_dim,))),
        }

    def example_batch(self, spec, model, batch_size, rng):
        shape = tuple(model.discriminator.inputs[0].shape[1:])
        return rng.uniform(-1, 1, (batch_size, *shape)).astype("float32"), None


class ConditionalGANHooks(GANHooks):
    """Conditional GANs: as `GANHooks`, plus labels kept, counted and fed to every endpoint."""

    def prepare_data(self, spec, bundle):
        import dataclasses

        y = bundle.arrays.y_train
        if y is None:
            raise ValueError(f"Model '{spec.name}' needs labeled data (images and integer "
                             f"labels). Received: data={bundle.source!r} without labels")
        bundle = super().prepare_data(spec, bundle)
        num_classes = bundle.num_classes or int(np.max(y)) + 1
        extras = {**bundle.extras, "builder_kwargs": {
            **bundle.extras.get("builder_kwargs", {}), "num_classes": num_classes}}
        return dataclasses.replace(bundle, extras=extras)

    def callbacks(self, model, bundle, run_dir):
        from zoo.callbacks import SampleGrid
        return [SampleGrid(run_dir, num_samples=2 * min(model.num_classes, 10),
                           value_range=(-1.0, 1.0))]

    def export_signatures(self, model):
        import tensorflow as tf

        shape = tuple(model.discriminator.inputs[0].shape[1:])
        labels = tf.TensorSpec((None,), tf.int32)
        # Argument names sort in signature order (callers may feed by sorted name).
        return {
            "serving_default": (lambda images, labels: model([images, labels], training=False),
                                [*_spec_input_signature(shape), labels]),
            "sample": (lambda labels, z: model.generator([z, labels], training=False),
                       [labels, *_spec_input_signature((model.latent_dim,))]),
        }

    def example_batch(self, spec, model, batch_size, rng):
        shape = tuple(model.discriminator.inputs[0].shape[1:])
        images = rng.uniform(-1, 1, (batch_size, *shape)).astype("float32")
        labels = rng.integers(0, model.num_classes, batch_size).astype("int32")
        return [images, labels], None
