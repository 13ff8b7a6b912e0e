"""DCGAN (Radford, Metz & Chintala 2015) and a generic GAN from two parts.

Conventions from the paper: strided convolutions instead of pooling
(transposed in the generator), batch norm in both networks except the
generator's output and the discriminator's input layer, ReLU in the
generator with a tanh output, LeakyReLU(0.2) in the discriminator, weights
from N(0, 0.02), Adam(2e-4, beta_1=0.5).  Images are in [-1, 1]; `zoo.train`
scales data there (`zoo.tasks.generative.GANHooks.prepare_data`).

`dcgan_generator` and `dcgan_discriminator` are plain builders (not registry
entries: neither trains on its own with `fit`); `dcgan` and its class-conditional
variant `conditional_dcgan` (Mirza & Osindero 2014) are registered.
"""

from zoo import checks
from zoo._lazy import keras
from zoo.models.autoencoder import check_filters, conv_stages_check
from zoo.registry import Recipe, register

HOOKS = "zoo.tasks.generative:GANHooks"
KERNEL = 4  # a multiple of the stride avoids checkerboard artefacts (Odena et al. 2016)


def _init():
    return keras.initializers.RandomNormal(stddev=0.02)


def dcgan_generator(*, output_shape=(28, 28, 1), latent_dim=100, filters=(128, 64),
                    num_classes=None, name="generator"):
    """DCGAN generator: z -> dense projection -> stride-2 transposed convs -> tanh image.

    Args:
        output_shape: image shape (height, width, channels); height and width
            must be divisible by 2 ** len(filters). Defaults to (28, 28, 1).
        latent_dim: size of z. Defaults to 100.
        filters: channels of the projected map and of each upsampling stage but
            the last (which outputs the image channels). Defaults to (128, 64).
        num_classes: if set, a conditional generator taking [z, label] (integer
            labels of shape (batch,)); the label's learned embedding is
            concatenated to z. Defaults to None.
        name: model name. Defaults to "generator".
    """
    output_shape = checks.shape("output_shape", output_shape, rank=3)
    checks.positive_int("latent_dim", latent_dim)
    checks.positive_int("num_classes", num_classes, allow_none=True)
    filters = check_filters(filters)
    conv_stages_check(output_shape, len(filters))
    layers = keras.layers
    factor = 2 ** len(filters)
    h, w, channels = output_shape[0] // factor, output_shape[1] // factor, output_shape[2]

    z = keras.Input(shape=(latent_dim,), name="z")
    inputs, x = z, z
    if num_classes:
        label = keras.Input(shape=(), dtype="int32", name="label")
        embedded = layers.Embedding(num_classes, latent_dim, name="label_embedding")(label)
        inputs, x = [z, label], layers.Concatenate(name="condition")([z, embedded])
    x = layers.Dense(h * w * filters[0], use_bias=False, kernel_initializer=_init(),
                     name="project")(x)
    x = layers.BatchNormalization(name="project_bn")(x)
    x = layers.Activation("relu", name="project_relu")(x)
    x = layers.Reshape((h, w, filters[0]), name="project_reshape")(x)
    for i, f in enumerate(filters[1:], start=1):
        x = layers.Conv2DTranspose(f, KERNEL, strides=2, padding="same", use_bias=False,
                                   kernel_initializer=_init(), name=f"deconv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.Activation("relu", name=f"relu{i}")(x)
    image = layers.Conv2DTranspose(channels, KERNEL, strides=2, padding="same",
                                   activation="tanh", kernel_initializer=_init(),
                                   name="image")(x)
    return keras.Model(inputs, image, name=name)


def dcgan_discriminator(*, input_shape=(28, 28, 1), filters=(64, 128), num_classes=None,
                        name="discriminator"):
    """DCGAN discriminator: stride-2 convs with LeakyReLU -> one logit.

    Args:
        input_shape: image shape; height and width must be divisible by
            2 ** len(filters). Defaults to (28, 28, 1).
        filters: channels of the stride-2 stages. Defaults to (64, 128).
        num_classes: if set, a conditional discriminator taking [image, label]
            with a projection head (Miyato & Koyama 2018): logit = w.h + e(label).h
            for image features h and a learned label embedding e. Defaults to None.
        name: model name. Defaults to "discriminator".
    """
    input_shape = checks.shape("input_shape", input_shape, rank=3)
    checks.positive_int("num_classes", num_classes, allow_none=True)
    filters = check_filters(filters)
    conv_stages_check(input_shape, len(filters))
    layers = keras.layers
    image = keras.Input(shape=input_shape, name="image")
    x = image
    for i, f in enumerate(filters, start=1):
        x = layers.Conv2D(f, KERNEL, strides=2, padding="same", use_bias=i == 1,
                          kernel_initializer=_init(), name=f"conv{i}")(x)
        if i > 1:  # no batch norm on the input layer (Radford et al.)
            x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.LeakyReLU(0.2, name=f"lrelu{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    logit = layers.Dense(1, kernel_initializer=_init(), name="logit")(x)
    if not num_classes:
        return keras.Model(image, logit, name=name)
    label = keras.Input(shape=(), dtype="int32", name="label")
    embedded = layers.Embedding(num_classes, int(x.shape[-1]), embeddings_initializer=_init(),
                                name="label_embedding")(label)
    projection = layers.Dot(axes=1, name="projection")([x, embedded])
    logit = layers.Add(name="conditional_logit")([logit, projection])
    return keras.Model([image, label], logit, name=name)


def build_gan(*, generator, discriminator, num_classes=None, label_smoothing=0.0, seed=None,
              name="gan"):
    """A trainable GAN from a generator (z -> image) and a discriminator (image -> logit).

    Args:
        generator: a Keras model taking (latent_dim,) vectors, or [z, label]
            when `num_classes` is set.
        discriminator: a Keras model taking images shaped like the generator's
            output (or [image, label]) and returning one logit per image.
        num_classes: number of labels of a conditional GAN, or None. Defaults to None.
        label_smoothing: one-sided smoothing of real labels, in [0, 0.5).
            Defaults to 0.
        seed: seed of the latent noise. Defaults to None.
        name: model name. Defaults to "gan".
    """
    import numpy as np

    checks.fraction("label_smoothing", label_smoothing, high=0.5)
    checks.positive_int("num_classes", num_classes, allow_none=True)
    arity = 2 if num_classes else 1
    for arg, part in (("generator", generator), ("discriminator", discriminator)):
        if not isinstance(part, keras.Model) or len(part.inputs) != arity:
            what = "two inputs (and a label)" if num_classes else "one input"
            raise ValueError(f"{arg} must be a Keras model with {what}. "
                             f"Received: {arg}={part!r}")
    if len(generator.inputs[0].shape) != 2:
        raise ValueError(f"generator must take latent vectors of shape (latent_dim,). "
                         f"Received: generator input shape {tuple(generator.inputs[0].shape)}")
    produced = tuple(generator.outputs[0].shape[1:])
    expected = tuple(discriminator.inputs[0].shape[1:])
    if produced != expected:
        raise ValueError(f"discriminator input shape must equal the generator's output shape "
                         f"{produced}. Received: discriminator input shape {expected}")
    if tuple(discriminator.outputs[0].shape[1:]) not in ((1,), ()):
        raise ValueError(f"discriminator must output one logit per image. Received: "
                         f"discriminator output shape {tuple(discriminator.outputs[0].shape)}")
    from zoo.models.layers.generative import GAN, ConditionalGAN

    image = np.zeros((1, *expected), dtype="float32")
    if num_classes:
        model = ConditionalGAN(generator, discriminator, num_classes=num_classes,
                               label_smoothing=float(label_smoothing), seed=seed, name=name)
        model([image, np.zeros((1,), dtype="int32")])  # build for `.keras` loading
    else:
        model = GAN(generator, discriminator, label_smoothing=float(label_smoothing), seed=seed,
                    name=name)
        model(image)
    return model


def _dcgan(*, input_shape, num_classes, latent_dim, generator_filters, discriminator_filters,
           label_smoothing, seed, name):
    """Validate the shared DCGAN arguments, then build (conditional when num_classes)."""
    input_shape = checks.shape("input_shape", input_shape, rank=3)
    checks.positive_int("latent_dim", latent_dim)
    checks.fraction("label_smoothing", label_smoothing, high=0.5)
    g_filters = check_filters(generator_filters)
    d_filters = check_filters(discriminator_filters)
    conv_stages_check(input_shape, len(g_filters), "generator_filters")
    conv_stages_check(input_shape, len(d_filters), "discriminator_filters")
    generator = dcgan_generator(output_shape=input_shape, latent_dim=latent_dim,
                                filters=g_filters, num_classes=num_classes)
    discriminator = dcgan_discriminator(input_shape=input_shape, filters=d_filters,
                                        num_classes=num_classes)
    return build_gan(generator=generator, discriminator=discriminator, num_classes=num_classes,
                     label_smoothing=label_smoothing, seed=seed, name=name)


def _space(hp):
    return {
        "latent_dim": hp.Choice("latent_dim", [32, 64, 100], default=100),
        "label_smoothing": hp.Choice("label_smoothing", [0.0, 0.1], default=0.0),
        # GANHooks gives both players Radford et al.'s Adam(beta_1=0.5); the
        # tuner's other optimizers would leave that recipe.
        "recipe": {"optimizer": hp.Fixed("optimizer", "adam")},
    }


def _spec(num_params, paper, params_note, **kwargs):
    return dict(family="gan", task="generative", test_input_shape=(8, 8, 1),
                min_input_shape=(4, 4, 1), num_params=num_params, paper=paper,
                params_note=params_note,
                recipe=Recipe(optimizer="adam", learning_rate=2e-4, epochs=30, batch_size=64,
                              early_stopping_patience=None),
                search_space=_space, **kwargs)


_TEST_KWARGS = {"latent_dim": 4, "generator_filters": (8, 4), "discriminator_filters": (4, 8),
                "seed": 0}


@register(**_spec(923_586, "Radford, Metz & Chintala 2015, Unsupervised representation "
                           "learning with deep convolutional GANs",
                  "28x28x1, latent 100, generator (128, 64), discriminator (64, 128); "
                  "generator and discriminator together",
                  hooks=HOOKS, test_kwargs=_TEST_KWARGS))
def dcgan(*, input_shape=(28, 28, 1), latent_dim=100, generator_filters=(128, 64),
          discriminator_filters=(64, 128), label_smoothing=0.0, seed=None, name="dcgan"):
    """Deep convolutional GAN for images in [-1, 1].

    Args:
        input_shape: image shape (height, width, channels); height and width
            must be divisible by 2 ** len(generator_filters) and
            2 ** len(discriminator_filters). Defaults to (28, 28, 1).
        latent_dim: size of z. Defaults to 100.
        generator_filters: see `dcgan_generator`. Defaults to (128, 64).
        discriminator_filters: see `dcgan_discriminator`. Defaults to (64, 128).
        label_smoothing: one-sided smoothing of real labels, in [0, 0.5).
            Defaults to 0.
        seed: seed of the latent noise. Defaults to None.
        name: model name. Defaults to "dcgan".
    """
    return _dcgan(num_classes=None, **locals())


@register(**_spec(1_614_506, "Mirza & Osindero 2014 (conditional GAN) on DCGAN, with the "
                             "projection discriminator of Miyato & Koyama 2018",
                  "28x28x1, 10 classes, latent 100, generator (128, 64), discriminator "
                  "(64, 128); generator and discriminator together",
                  hooks="zoo.tasks.generative:ConditionalGANHooks",
                  test_kwargs={"num_classes": 3, **_TEST_KWARGS}))
def conditional_dcgan(*, input_shape=(28, 28, 1), num_classes=10, latent_dim=100,
                      generator_filters=(128, 64), discriminator_filters=(64, 128),
                      label_smoothing=0.0, seed=None, name="conditional_dcgan"):
    """Class-conditional DCGAN: both networks also see the label; `generate(n, labels)`.

    Trains on labeled images (`fit` on (images, labels)); calling the model
    on [images, labels] returns the discriminator's P(real | label).

    Args: as `dcgan`, plus `num_classes`, the number of labels (integers
    0..num_classes-1), which defaults to 10.
    """
    checks.positive_int("num_classes", num_classes)
    return _dcgan(**locals())
