"""Quality numbers of the generative tasks (for metrics.json and the tests).

Reconstruction MSE next to a PCA baseline with the same code size, how much
a VAE's decodes vary across its prior (next to the data's own spread), and for
GANs a Frechet distance in the feature space of a small classifier trained
on the same data.  That is *not* the Inception FID (Heusel et al. 2017): its
values are only comparable between runs on the same data with the same
`feature_classifier` settings.
"""

import numpy as np

from zoo._lazy import keras


def pca_reconstruction_mse(x_train, x_test, n_components):
    """Test MSE of scikit-learn PCA (`n_components`, fitted on `x_train`): the linear baseline."""
    from sklearn.decomposition import PCA

    flat_train = x_train.reshape(len(x_train), -1)
    flat_test = x_test.reshape(len(x_test), -1)
    n_components = min(n_components, *flat_train.shape)
    pca = PCA(n_components=n_components, random_state=0).fit(flat_train)
    rec = pca.inverse_transform(pca.transform(flat_test))
    return float(np.mean(np.square(flat_test - rec)))


def prior_grid(latent_dim, grid=10, seed=0):
    """Latent points that cover a VAE's N(0, I) prior, for decoding.

    Two dimensions: the `grid` x `grid` points at the prior's 5%-95% quantiles
    (Kingma & Welling 2013, fig. 4; rows top to bottom, as plotted); more: as
    many seeded draws from the prior.
    """
    if latent_dim == 2:
        from scipy.stats import norm
        q = norm.ppf(np.linspace(0.05, 0.95, grid))
        return np.array([[a, b] for b in q[::-1] for a in q], dtype="float32")
    return np.random.default_rng(seed).normal(size=(grid * grid, latent_dim)).astype("float32")


def decoded_prior_spread(vae, x_test):
    """(pixel std across decodes of `prior_grid`, pixel std across `x_test`), each averaged
    over pixels: a decoder that maps the whole prior to one image scores near 0 while the
    data scores the second number."""
    decoded = np.asarray(vae.decode(prior_grid(vae.latent_dim)))
    return (float(np.mean(np.std(decoded, axis=0))),
            float(np.mean(np.std(np.asarray(x_test), axis=0))))


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
