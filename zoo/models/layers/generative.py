"""Serializable custom objects of the generative families (VAE and GAN).

Imported inside builder bodies and by `zoo.models.layers` (it imports Keras at module level).

`call` of every class here uses `keras.ops` only, so inference and export are
backend-neutral.  `train_step`/`test_step` are the one exception: a VAE's
loss needs the encoder's statistics from the same forward pass and a GAN
alternates two optimizers, which Keras's generic step cannot express, so
they follow the Keras guide "Customizing what happens in fit()" for the
TensorFlow backend (the backend `zoo.train` runs on) and import TensorFlow
inside the method.
"""

import keras
from keras import ops


def _unpack_x(data):
    # fit/evaluate pass x, (x,), (x, y) or (x, y, sample_weight); the
    # unsupervised models only read x.
    if isinstance(data, (tuple, list)):
        return data[0]
    return data


@keras.saving.register_keras_serializable(package="zoo")
class GaussianSampler(keras.layers.Layer):
    """Reparameterisation z = mean + exp(log_var / 2) * eps (Kingma & Welling 2013).

    Samples only when `training=True`; otherwise returns the mean, so
    inference, `.keras` round trips and exported endpoints are deterministic.

    Args:
        seed: seed of the layer's `keras.random.SeedGenerator`. Defaults to None.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        mean, log_var = inputs
        if not training:
            return mean
        eps = keras.random.normal(ops.shape(mean), dtype=self.compute_dtype,
                                  seed=self.seed_generator)
        return mean + ops.exp(0.5 * log_var) * eps

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        config = super().get_config()
        config.update({"seed": self.seed})
        return config


def kl_divergence(mean, log_var):
    """KL(q(z|x) || N(0, I)) per example, in nats (closed form)."""
    # float32 even under a mixed_float16 policy: exp/log overflow in float16.
    mean, log_var = ops.cast(mean, "float32"), ops.cast(log_var, "float32")
    return -0.5 * ops.sum(1.0 + log_var - ops.square(mean) - ops.exp(log_var), axis=-1)


def reconstruction_nll(x, reconstruction, kind):
    """Per-example reconstruction negative log-likelihood (summed over pixels).

    "bce": Bernoulli likelihood of pixels in [0, 1], in nats.  "mse": sum of
    squared errors (a unit-variance Gaussian up to a constant and a factor 2).
    """
    batch = ops.shape(x)[0]
    x = ops.reshape(ops.cast(x, "float32"), (batch, -1))
    reconstruction = ops.reshape(ops.cast(reconstruction, "float32"), (batch, -1))
    if kind == "bce":
        eps = 1e-7
        p = ops.clip(reconstruction, eps, 1.0 - eps)
        return -ops.sum(x * ops.log(p) + (1.0 - x) * ops.log(1.0 - p), axis=-1)
    return ops.sum(ops.square(x - reconstruction), axis=-1)


class _PairModel(keras.Model):
    """A model made of two networks plus plain arguments, with their config round trip.

    Subclasses name their `__init__` arguments: `networks` (Keras models,
    serialized as objects) and `arguments` (plain values), each stored as an
    attribute of the same name.
    """

    networks = ()
    arguments = ()

    def get_config(self):
        config = super().get_config()
        config.update({name: keras.saving.serialize_keras_object(getattr(self, name))
                       for name in self.networks})
        config.update({name: getattr(self, name) for name in self.arguments})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in cls.networks:
            config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config)


@keras.saving.register_keras_serializable(package="zoo")
class VAE(_PairModel):
    """Variational autoencoder: `encoder` x -> (z_mean, z_log_var), `decoder` z -> x.

    Trained with `fit(x)` (or `fit((x, x))`) on the negative beta-ELBO
    `reconstruction + beta * KL` (Higgins et al. 2017 for beta != 1).  The
    history holds `loss`, `reconstruction_loss`, `kl_loss` and `elbo`
    (the true ELBO, beta = 1, in nats per example; higher is better).

    Args:
        encoder: a model mapping images to [z_mean, z_log_var].
        decoder: a model mapping latent vectors to images in [0, 1].
        beta: weight of the KL term. Defaults to 1.
        reconstruction_loss: "bce" or "mse". Defaults to "bce".
        seed: seed of the sampler. Defaults to None.
    """

    networks = ("encoder", "decoder")
    arguments = ("beta", "reconstruction_loss", "seed")

    def __init__(self, encoder, decoder, beta=1.0, reconstruction_loss="bce", seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.beta = beta
        self.reconstruction_loss = reconstruction_loss
        self.seed = seed
        self.latent_dim = int(decoder.inputs[0].shape[-1])
        self.sampler = GaussianSampler(seed=seed, name="sampler")
        self._sample_seed = keras.random.SeedGenerator(None if seed is None else seed + 1)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss")
        self.elbo_tracker = keras.metrics.Mean(name="elbo")

    def call(self, inputs, training=None):
        z_mean, z_log_var = self.encoder(inputs, training=training)
        z = self.sampler([z_mean, z_log_var], training=training)
        return self.decoder(z, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker,
                self.elbo_tracker]

    def _objective(self, x, training):
        z_mean, z_log_var = self.encoder(x, training=training)
        # Test ELBO is a one-sample estimate too, so sample in both steps.
        z = self.sampler([z_mean, z_log_var], training=True)
        reconstruction = self.decoder(z, training=training)
        rec = ops.mean(reconstruction_nll(x, reconstruction, self.reconstruction_loss))
        kl = ops.mean(kl_divergence(z_mean, z_log_var))
        return rec + self.beta * kl, rec, kl

    def _update(self, loss, rec, kl):
        self.loss_tracker.update_state(loss)
        self.reconstruction_tracker.update_state(rec)
        self.kl_tracker.update_state(kl)
        self.elbo_tracker.update_state(-(rec + kl))
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        import tensorflow as tf

        x = _unpack_x(data)
        with tf.GradientTape() as tape:
            loss, rec, kl = self._objective(x, training=True)
            scaled = self.optimizer.scale_loss(loss)  # mixed precision loss scaling
        weights = self.trainable_weights
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, weights), weights))
        return self._update(loss, rec, kl)

    def test_step(self, data):
        loss, rec, kl = self._objective(_unpack_x(data), training=False)
        return self._update(loss, rec, kl)

    def encode(self, x, sample=False):
        """Posterior means (or samples with `sample=True`) of `x`, as a tensor."""
        z_mean, z_log_var = self.encoder(x, training=False)
        return self.sampler([z_mean, z_log_var], training=sample)

    def decode(self, z):
        """Images for latent vectors `z`."""
        return self.decoder(z, training=False)

    def sample(self, n, seed=None):
        """`n` images decoded from z ~ N(0, I)."""
        seed = self._sample_seed if seed is None else seed
        z = keras.random.normal((n, self.latent_dim), seed=seed)
        return self.decode(z)

@keras.saving.register_keras_serializable(package="zoo")
class GAN(_PairModel):
    """Generative adversarial network (Goodfellow et al. 2014) trained by `fit(images)`.

    `train_step` alternates one discriminator update (real vs generated
    images) and one generator update (non-saturating loss, -log D(G(z))),
    each with its own optimizer (see `compile`).  Calling the model on
    images returns the discriminator's probability that they are real;
    `generate(n)` / `generator(z)` make images in [-1, 1].

    Args:
        generator: a model mapping (latent_dim,) vectors to images.
        discriminator: a model mapping images to one logit.
        label_smoothing: one-sided label smoothing of the real targets
            (Salimans et al. 2016), in [0, 0.5). Defaults to 0.
        seed: seed of the latent noise. Defaults to None.
    """

    networks = ("generator", "discriminator")
    arguments = ("label_smoothing", "seed")

    def __init__(self, generator, discriminator, label_smoothing=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.label_smoothing = label_smoothing
        self.seed = seed
        self.latent_dim = int(generator.inputs[0].shape[-1])
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.d_real_tracker = keras.metrics.Mean(name="d_real")
        self.d_fake_tracker = keras.metrics.Mean(name="d_fake")

    def call(self, inputs, training=None):
        logits = ops.cast(self.discriminator(inputs, training=training), "float32")
        return ops.sigmoid(logits)

    def compile(self, d_optimizer=None, g_optimizer=None, **kwargs):
        """Compile with one optimizer per player (Adam(2e-4, beta_1=0.5) each by default)."""
        kwargs.pop("loss", None)
        kwargs.pop("metrics", None)
        optimizer = kwargs.pop("optimizer", None)
        super().compile(optimizer=d_optimizer or optimizer or _dcgan_adam(), **kwargs)
        self.d_optimizer = self.optimizer
        if g_optimizer is None:
            g_optimizer = (keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
                           if optimizer is not None and d_optimizer is None else _dcgan_adam())
        if self.dtype_policy.name == "mixed_float16" and not isinstance(
                g_optimizer, keras.optimizers.LossScaleOptimizer):
            # Keras wraps the compiled optimizer itself; the second one is ours to wrap.
            g_optimizer = keras.optimizers.LossScaleOptimizer(g_optimizer)
        self.g_optimizer = g_optimizer

    def get_compile_config(self):
        # Both optimizers' settings, so a loaded `.keras` GAN is compiled again.
        if not self.compiled:
            return None
        return {"d_optimizer": keras.optimizers.serialize(self.d_optimizer),
                "g_optimizer": keras.optimizers.serialize(self.g_optimizer)}

    def compile_from_config(self, config):
        self.compile(d_optimizer=keras.optimizers.deserialize(config["d_optimizer"]),
                     g_optimizer=keras.optimizers.deserialize(config["g_optimizer"]))
        # Create the slot variables now so that `.keras` loading restores both
        # optimizers' state (Keras saves every optimizer the model tracks).
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.g_optimizer.build(self.generator.trainable_variables)

    @property
    def metrics(self):
        return [self.loss_tracker, self.d_loss_tracker, self.g_loss_tracker,
                self.d_real_tracker, self.d_fake_tracker]

    def _noise(self, batch):
        return keras.random.normal((batch, self.latent_dim), seed=self.seed_generator)

    def _d_loss(self, real_logits, fake_logits):
        real_logits = ops.cast(real_logits, "float32")
        fake_logits = ops.cast(fake_logits, "float32")
        real_target = ops.ones_like(real_logits) * (1.0 - self.label_smoothing)
        return (ops.mean(ops.binary_crossentropy(real_target, real_logits, from_logits=True))
                + ops.mean(ops.binary_crossentropy(ops.zeros_like(fake_logits), fake_logits,
                                                   from_logits=True)))

    def _g_loss(self, fake_logits):
        fake_logits = ops.cast(fake_logits, "float32")
        return ops.mean(ops.binary_crossentropy(ops.ones_like(fake_logits), fake_logits,
                                                from_logits=True))

    def _update(self, d_loss, g_loss, real_logits, fake_logits):
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        # The sum is logged as `loss` for generic tooling; neither it nor its
        # parts measure sample quality (see the Frechet distance for that).
        self.loss_tracker.update_state(d_loss + g_loss)
        self.d_real_tracker.update_state(ops.mean(ops.sigmoid(real_logits)))
        self.d_fake_tracker.update_state(ops.mean(ops.sigmoid(fake_logits)))
        return {m.name: m.result() for m in self.metrics}

    # The conditional subclass overrides these three to thread labels through.
    def _split(self, data):
        return _unpack_x(data), None

    def _generate(self, z, labels, training):
        return self.generator(z, training=training)

    def _discriminate(self, images, labels, training):
        return ops.cast(self.discriminator(images, training=training), "float32")

    def train_step(self, data):
        import tensorflow as tf

        real, labels = self._split(data)
        batch = ops.shape(real)[0]
        with tf.GradientTape() as tape:
            fake = self._generate(self._noise(batch), labels, True)
            real_logits = self._discriminate(real, labels, True)
            fake_logits = self._discriminate(fake, labels, True)
            d_loss = self._d_loss(real_logits, fake_logits)
            scaled = self.d_optimizer.scale_loss(d_loss)  # mixed precision loss scaling
        d_weights = self.discriminator.trainable_weights
        self.d_optimizer.apply_gradients(zip(tape.gradient(scaled, d_weights), d_weights))

        with tf.GradientTape() as tape:
            fake_logits = self._discriminate(
                self._generate(self._noise(batch), labels, True), labels, True)
            g_loss = self._g_loss(fake_logits)
            scaled = self.g_optimizer.scale_loss(g_loss)
        g_weights = self.generator.trainable_weights
        self.g_optimizer.apply_gradients(zip(tape.gradient(scaled, g_weights), g_weights))
        return self._update(d_loss, g_loss, real_logits, fake_logits)

    def test_step(self, data):
        real, labels = self._split(data)
        fake = self._generate(self._noise(ops.shape(real)[0]), labels, False)
        real_logits = self._discriminate(real, labels, False)
        fake_logits = self._discriminate(fake, labels, False)
        return self._update(self._d_loss(real_logits, fake_logits), self._g_loss(fake_logits),
                            real_logits, fake_logits)

    def generate(self, n, seed=None):
        """`n` generated images in [-1, 1] from z ~ N(0, I)."""
        seed = self.seed_generator if seed is None else seed
        z = keras.random.normal((n, self.latent_dim), seed=seed)
        return self.generator(z, training=False)

@keras.saving.register_keras_serializable(package="zoo")
class ConditionalGAN(GAN):
    """Class-conditional GAN (Mirza & Osindero 2014): both players also see the label.

    `fit` takes (images, labels) (or [images, labels]); generated images in
    a batch are conditioned on that batch's real labels, so classes are drawn
    as often as in the data.  `model([images, labels])` returns P(real | label);
    `generate(n, labels)` makes images of the given classes.

    Args:
        generator: a model mapping [z, label] to images.
        discriminator: a model mapping [image, label] to one logit.
        num_classes: number of labels.
        label_smoothing: see `GAN`. Defaults to 0.
        seed: seed of the latent noise. Defaults to None.
    """

    arguments = ("num_classes", *GAN.arguments)

    def __init__(self, generator, discriminator, num_classes, label_smoothing=0.0, seed=None,
                 **kwargs):
        super().__init__(generator, discriminator, label_smoothing=label_smoothing, seed=seed,
                         **kwargs)
        self.num_classes = num_classes

    def call(self, inputs, training=None):
        images, labels = inputs
        return ops.sigmoid(self._discriminate(images, labels, training))

    def fit(self, x=None, y=None, **kwargs):
        # Refuse unlabeled arrays up front: an error raised while tracing
        # train_step would leave a half-built train function behind.
        spec = getattr(x, "element_spec", None)
        unlabeled = y is None and (
            (spec is not None and not (isinstance(spec, tuple) and len(spec) >= 2))
            or (spec is None and hasattr(x, "shape")))
        if unlabeled:
            raise ValueError("A conditional GAN trains on (images, labels); the data has no "
                             "labels. Pass fit(images, labels) or a dataset of "
                             "(images, labels).")
        return super().fit(x, y, **kwargs)

    def _split(self, data):
        if isinstance(data, (tuple, list)) and len(data) == 1:
            data = data[0]
        if isinstance(data, (tuple, list)) and isinstance(data[0], (tuple, list)):
            data = data[0]  # ([images, labels], y or None)
        if not isinstance(data, (tuple, list)) or len(data) < 2 or data[1] is None:
            raise ValueError("A conditional GAN trains on (images, labels); the data has no "
                             "labels.")
        return data[0], ops.cast(ops.reshape(data[1], (-1,)), "int32")

    def _generate(self, z, labels, training):
        return self.generator([z, labels], training=training)

    def _discriminate(self, images, labels, training):
        return ops.cast(self.discriminator([images, labels], training=training), "float32")

    def generate(self, n, labels=None, seed=None):
        """`n` images in [-1, 1]; `labels` defaults to 0, 1, ... cycling over the classes."""
        seed = self.seed_generator if seed is None else seed
        if labels is None:
            labels = ops.arange(n) % self.num_classes
        labels = ops.cast(ops.reshape(ops.convert_to_tensor(labels), (-1,)), "int32")
        z = keras.random.normal((n, self.latent_dim), seed=seed)
        return self.generator([z, labels], training=False)



def _dcgan_adam(learning_rate=2e-4):
    # Radford et al. 2015: Adam with lr 2e-4 and beta_1 0.5 for both players.
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.5)
