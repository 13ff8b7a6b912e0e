"""Training, evaluation and export hooks of the generative families, with their pictures.

- `AutoencoderHooks`, `VAEHooks`, `GANHooks`: what `zoo.train` does differently
  for autoencoders (targets = inputs), VAEs and GANs (two optimizers, data in
  [-1, 1]) -- see `zoo.tasks.TaskHooks`.
- `SampleGrid`: a Keras callback writing run_dir/samples/epoch_NNN.png
  (inputs and reconstructions, and/or samples) after every epoch, and for
  2-D VAEs run_dir/latent_space.png at the end of training.
- Quality numbers for metrics.json: reconstruction MSE next to a PCA
  baseline with the same code size; test ELBO; and for GANs a Frechet
  distance in the feature space of a small classifier that this module
  trains on the same data.  That is *not* the Inception FID (Heusel et al.
  2017): its values are only comparable between runs on the same data with
  the same `feature_classifier` settings.
"""

import os
import tempfile

import keras
import numpy as np

from zoo import checks
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


# ---------------------------------------------------------------------- metrics


def pca_reconstruction_mse(x_train, x_test, n_components):
    """Test MSE of scikit-learn PCA (`n_components`, fitted on `x_train`): the linear baseline."""
    from sklearn.decomposition import PCA

    flat_train = x_train.reshape(len(x_train), -1)
    flat_test = x_test.reshape(len(x_test), -1)
    n_components = min(n_components, *flat_train.shape)
    pca = PCA(n_components=n_components, random_state=0).fit(flat_train)
    rec = pca.inverse_transform(pca.transform(flat_test))
    return float(np.mean(np.square(flat_test - rec)))


def frechet_distance(features_a, features_b):
    """Frechet distance between Gaussians fitted to two feature sets (Dowson & Landau 1982).

    ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), the formula of FID,
    here in whatever feature space the caller chose.
    """
    a = np.asarray(features_a, dtype="float64")
    b = np.asarray(features_b, dtype="float64")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"features must be two (n >= 2, d) arrays with the same d. "
                         f"Received: shapes {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr((S_a S_b)^(1/2)) = Tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)); the latter is
    # symmetric PSD, so eigh is exact and stable even for singular covariances
    # (dead ReLU features of an untrained generator), where sqrtm is not.
    vals, vecs = np.linalg.eigh(cov_a)
    root_a = (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T
    inner = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_covmean = np.sum(np.sqrt(np.clip(inner, 0.0, None)))
    return float(np.sum(np.square(mu_a - mu_b)) + np.trace(cov_a) + np.trace(cov_b)
                 - 2.0 * trace_covmean)


def feature_classifier(x, y, *, num_classes=None, epochs=8, seed=0, verbose=0):
    """A small CNN (or MLP for flat inputs) trained on (x, y); its "features" layer embeds images.

    Args:
        x: training inputs in the range the generator produces.
        y: integer labels.
        num_classes: Defaults to max(y) + 1.
        epochs: Defaults to 8.
        seed: weight and shuffle seed. Defaults to 0.
        verbose: `fit` verbosity. Defaults to 0.
    Returns:
        (classifier, feature_model)
    """
    y = np.asarray(y).astype("int32")
    num_classes = int(num_classes or y.max() + 1)
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inputs = keras.Input(shape=x.shape[1:], name="inputs")
    h = inputs
    if x.ndim == 4:
        h = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(h)
        h = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="conv2")(h)
    h = layers.Flatten(name="flatten")(h)
    features = layers.Dense(64, activation="relu", name="features")(h)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(features)
    classifier = keras.Model(inputs, outputs, name="feature_classifier")
    classifier.compile(optimizer=keras.optimizers.Adam(2e-3),
                       loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    classifier.fit(x, y, epochs=epochs, batch_size=64, verbose=verbose)
    return classifier, keras.Model(inputs, features, name="feature_extractor")


def generated_quality(samples, real, classifier, feature_model):
    """Frechet distance (classifier features) of samples vs real, and mean classifier confidence."""
    fake_feat = feature_model.predict(samples, verbose=0)
    real_feat = feature_model.predict(real, verbose=0)
    confidence = classifier.predict(samples, verbose=0).max(axis=1).mean()
    return {"frechet_distance": frechet_distance(real_feat, fake_feat),
            "classifier_confidence": float(confidence)}


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


# -------------------------------------------------------------------- pictures


def _atomic_savefig(figure, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=os.path.dirname(path))
    os.close(fd)
    try:
        figure.savefig(tmp, format="png", dpi=80)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _to_display(images, value_range):
    low, high = value_range
    images = (np.asarray(images, dtype="float32") - low) / (high - low)
    images = np.clip(images, 0.0, 1.0)
    if images.ndim == 2:  # flat vectors: show square ones as images when possible
        side = int(round(np.sqrt(images.shape[1])))
        images = images.reshape(len(images), side, -1) if side * side == images.shape[1] else \
            images[:, None, :]
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    return images


def save_image_grid(rows, path, *, value_range=(0.0, 1.0), title=None):
    """Write a PNG grid: one row per (label, images) pair in `rows`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = [(label, _to_display(images, value_range)) for label, images in rows]
    ncols = max(len(images) for _, images in rows)
    figure = Figure(figsize=(ncols * 0.9 + 1.2, len(rows) * 0.9 + 0.4))
    axes = figure.subplots(len(rows), ncols, squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                ax.imshow(images[c], cmap="gray" if images[c].ndim == 2 else None,
                          vmin=0.0, vmax=1.0)
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(label, fontsize=8)
    if title:
        figure.suptitle(title, fontsize=9)
    _atomic_savefig(figure, path)


def save_latent_plot(vae, x, y, path, *, grid=10):
    """Latent means of `x` (coloured by `y`) and the decoded 2-D manifold of a 2-D VAE."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from scipy.stats import norm

    z = np.asarray(vae.encode(x))
    # Decode a grid over the prior's quantiles (Kingma & Welling 2013, fig. 4).
    q = norm.ppf(np.linspace(0.05, 0.95, grid))
    zz = np.array([[a, b] for b in q[::-1] for a in q], dtype="float32")
    decoded = _to_display(np.asarray(vae.decode(zz)), (0.0, 1.0))
    figure = Figure(figsize=(11, 5))
    ax1, ax2 = figure.subplots(1, 2)
    scatter = ax1.scatter(z[:, 0], z[:, 1], c=y if y is not None else None, s=6,
                          cmap="tab10")
    if y is not None:
        figure.colorbar(scatter, ax=ax1, label="label")
    ax1.set_xlabel("z[0]")
    ax1.set_ylabel("z[1]")
    ax1.set_title("posterior means of test images")
    if decoded.ndim == 3:
        h, w = decoded.shape[1:]
        canvas = decoded.reshape(grid, grid, h, w).transpose(0, 2, 1, 3).reshape(grid * h,
                                                                                 grid * w)
        ax2.imshow(canvas, cmap="gray", vmin=0, vmax=1)
    ax2.set_xticks([])
    ax2.set_yticks([])
    ax2.set_title("decoded grid over the prior's 5%-95% quantiles")
    _atomic_savefig(figure, path)


class SampleGrid(keras.callbacks.Callback):
    """Keras callback: a PNG grid of reconstructions and/or samples after each epoch.

    Writes `run_dir/samples/epoch_NNN.png` atomically (temp file, then
    `os.replace`), so a viewer never sees a half-written file; with
    `latent_data` and a 2-D VAE also `run_dir/latent_space.png` at the end.

    Args:
        run_dir: the run directory.
        images: fixed inputs to reconstruct, or None. Defaults to None.
        num_samples: samples per grid from a fixed latent batch (VAE/GAN);
            0 for none. Defaults to 8.
        value_range: data range, (0, 1) or (-1, 1) for tanh GANs. Defaults to (0, 1).
        every: write every `every` epochs. Defaults to 1.
        latent_data: (x, y) for the 2-D latent plot, or None. Defaults to None.
        seed: seed of the fixed latent batch. Defaults to 0.
    """

    def __init__(self, run_dir, *, images=None, num_samples=8, value_range=(0.0, 1.0), every=1,
                 latent_data=None, seed=0):
        super().__init__()
        self.run_dir = os.fspath(run_dir)
        self.images = None if images is None else np.asarray(images)
        self.num_samples = checks.non_negative_int("num_samples", num_samples)
        self.value_range = tuple(value_range)
        self.every = checks.positive_int("every", every)
        self.latent_data = latent_data
        self.seed = seed
        self.written = []

    def on_train_begin(self, logs=None):
        self.written = []
        self._latents = None
        if self.num_samples:
            dim = getattr(self.model, "latent_dim", None)
            if dim:
                rng = np.random.default_rng(self.seed)
                self._latents = rng.standard_normal((self.num_samples, dim)).astype("float32")

    def _rows(self):
        rows = []
        if self.images is not None:
            rows.append(("input", self.images))
            rows.append(("reconstruction", np.asarray(self.model(self.images, training=False))))
        if self._latents is not None:
            part = getattr(self.model, "generator", None) or getattr(self.model, "decoder")
            classes = getattr(self.model, "num_classes", None)
            if classes:  # conditional GAN: labels 0, 1, ... cycling over the classes
                labels = (np.arange(len(self._latents)) % classes).astype("int32")
                images = np.asarray(part([self._latents, labels], training=False))
                width, label = min(classes, 10), f"labels 0..{min(classes, 10) - 1}"
            else:
                images = np.asarray(part(self._latents, training=False))
                width, label = 8, "sample"
            # Rows of at most `width` images keep the grid readable.
            rows += [(label, images[i:i + width]) for i in range(0, len(images), width)]
        return rows

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        path = os.path.join(self.run_dir, "samples", f"epoch_{epoch + 1:03d}.png")
        save_image_grid(self._rows(), path, value_range=self.value_range,
                        title=f"{self.model.name}, epoch {epoch + 1}")
        self.written.append(path)

    def on_train_end(self, logs=None):
        if self.latent_data is not None and getattr(self.model, "latent_dim", None) == 2 \
                and hasattr(self.model, "encode"):
            x, y = self.latent_data
            save_latent_plot(self.model, x, y, os.path.join(self.run_dir, "latent_space.png"))


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
        return [SampleGrid(run_dir, images=images, num_samples=8, latent_data=latent)]

    def evaluate(self, model, bundle):
        if not model.compiled:
            model.compile(optimizer="adam")
        result = model.evaluate(bundle.test, verbose=0, return_dict=True)
        x_train = split_arrays(bundle.train)
        x_test = split_arrays(bundle.test)
        mse = float(np.mean(np.square(x_test - np.asarray(model.predict(x_test, verbose=0)))))
        return {"test_elbo": float(result["elbo"]),
                "test_reconstruction_loss": float(result["reconstruction_loss"]),
                "test_kl": float(result["kl_loss"]),
                "elbo_units": "nats per example (higher is better)",
                "reconstruction_mse": mse,
                "pca_reconstruction_mse": pca_reconstruction_mse(x_train, x_test,
                                                                 model.latent_dim)}

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
