"""Training-time image augmentation by name, applied to batches in `tf.data`.

    augmenter = make_augmenter(("crop", "flip"), seed=0, num_classes=10)
    ds = ds.map(augmenter)             # (images, labels) -> (images, labels)

`zoo.data.load(..., augment=names)` does this for the training split only, so
validation, test and inference never see augmentation.  Images are float
batches (N, H, W, C) in `value_range` ([0, 1], what `zoo.data` produces).

Keras's own preprocessing layers do the work where they exist (RandomFlip,
RandomRotation, RandomTranslation, RandomZoom, RandomContrast,
RandomBrightness, MixUp, CutMix, RandAugment, RandomErasing); "crop" is the CIFAR recipe of
He et al. 2015 (zero-pad 4 pixels, random crop back to H x W, a new offset per
image), written here because keras.layers.RandomCrop draws one offset per
batch and has no padding.  With "mixup"/"cutmix" the labels become soft
one-hot vectors (`soft_labels` is True) and the loss must be categorical.

Deterministic under a seed: every random op draws from its own
`keras.random.SeedGenerator`, seeded from `seed`, so the same seed and the same
sequence of batches give the same augmented batches (the map that applies it
must run sequentially; parallel calls could reorder the draws).  Called with
`seed=` (a scalar tensor), it first resets every generator from that value,
so a batch's augmentation depends on that value alone: `zoo.data.pipeline`
passes one number per batch from a per-epoch random stream, which is what
makes a resumed run augment its remaining epochs exactly as the
uninterrupted run would have.
"""

from zoo import checks

# Allowed names and what each does (shown by `zoo list`-style help and errors).
DESCRIPTIONS = {
    "flip": "random horizontal flip (keras.layers.RandomFlip)",
    "crop": "zero-pad 4 pixels and random crop back, per image (CIFAR recipe)",
    "rotation": "random rotation up to +-15 degrees (keras.layers.RandomRotation)",
    "translation": "random shift up to 10% of height/width (keras.layers.RandomTranslation)",
    "zoom": "random zoom in/out up to 10% (keras.layers.RandomZoom)",
    "contrast": "random contrast factor in [0.8, 1.2] (keras.layers.RandomContrast)",
    "brightness": "random brightness shift up to 20% of the range "
                  "(keras.layers.RandomBrightness)",
    "mixup": "MixUp, alpha 0.2 (keras.layers.MixUp); soft labels",
    "cutmix": "CutMix, factor 1.0 (keras.layers.CutMix); soft labels",
    "randaugment": "RandAugment, 2 ops at magnitude 0.5 (keras.layers.RandAugment)",
    "erasing": "random erasing / cutout: with probability 0.5 a rectangle of 2-33% of the "
               "image filled with noise (Zhong et al. 2017; keras.layers.RandomErasing)",
}
AUGMENTATIONS = tuple(DESCRIPTIONS)
SOFT_LABEL_AUGMENTATIONS = ("mixup", "cutmix")
# Losses that train on the soft one-hot labels mixup/cutmix make (None: the
# task's default, categorical for a classifier with one output per class).
SOFT_LABEL_LOSSES = (None, "categorical_crossentropy", "sparse_categorical_crossentropy")


def check_names(names, *, argument="augment"):
    """The names as a tuple; unknown or repeated names are a ValueError naming `argument`."""
    if isinstance(names, str):
        names = (names,)
    if not isinstance(names, (tuple, list)) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{argument} must be a sequence of augmentation names from "
                         f"{list(AUGMENTATIONS)}. Received: {argument}={names!r}")
    names = tuple(names)
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"Unknown augmentation(s) {unknown}. Allowed: {list(AUGMENTATIONS)}. "
                         f"Received: {argument}={list(names)!r}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Each augmentation may appear once. Received: {argument}={list(names)!r}")
    return names


def check_for_model(names, spec, *, loss=None, argument="augment"):
    """Refuse augmentations that model `spec` cannot train with, before TensorFlow.

    mixup/cutmix replace each label by a soft one-hot vector, which only a
    classifier with one output per class and a categorical loss can fit; a
    single sigmoid output (the perceptron, `classifier_activation="sigmoid"`
    with one unit), a regression or generative task, or a binary / regression
    loss would fail inside `tf.function` with a shape error.

    Args:
        names: augmentation names.
        spec: the model's `ModelSpec`.
        loss: the loss the run trains with (the recipe's, after overrides; None:
            the task's default). Defaults to None.
        argument: the name the user gave the names under. Defaults to "augment".
    """
    names = check_names(names, argument=argument)
    soft = [n for n in names if n in SOFT_LABEL_AUGMENTATIONS]
    if not soft:
        return names
    received = f"Received: {argument}={list(names)!r}"
    if spec.task != "classification":
        raise ValueError(f"{soft} mix labels into soft one-hot class vectors, so they apply to "
                         f"classifiers only; model '{spec.name}' is a {spec.task} model. {received}")
    # A registered classifier without num_classes has one sigmoid unit (perceptron).
    single_unit = spec.builder is not None and "num_classes" not in (spec.arguments or {})
    if single_unit or loss == "binary_crossentropy":
        raise ValueError(f"{soft} make soft one-hot labels, one value per class, but model "
                         f"'{spec.name}' has a single sigmoid output (binary labels). Use a "
                         f"classifier with one output per class (e.g. mlp), or leave out "
                         f"{soft}. {received}")
    if loss not in SOFT_LABEL_LOSSES:
        raise ValueError(f"{soft} make soft one-hot labels, which loss={loss!r} cannot train "
                         f"on; use 'categorical_crossentropy'. {received}")
    return names


def check_example_shape(names, example_shape, *, argument="augment"):
    """Refuse augmenting examples that are not images, before any `tf.data` map.

    Every augmentation here (Keras's image layers included) works on
    (height, width[, channels]) examples; a feature vector (a CSV row, an
    embedding) would fail inside `tf.function`, so it is refused here with the
    shape the data has.
    """
    names = check_names(names, argument=argument)
    shape = tuple(example_shape)
    if names and len(shape) not in (2, 3):
        raise ValueError(f"Augmentations transform images of shape (height, width[, channels]), "
                         f"but the examples have shape {shape}: train without augmentation "
                         f"(CLI: leave out --augment). Received: {argument}={list(names)!r}")
    return names


def make_augmenter(names, *, seed=0, num_classes=None, value_range=(0.0, 1.0), crop_padding=4,
                   example_shape=None):
    """A callable (images, labels) -> (images, labels) that augments a training batch.

    Args:
        names: augmentation names (a string or a sequence), applied in the given
            order, except that mixup/cutmix always come last (they mix whole
            augmented images).  One of `AUGMENTATIONS` each.
        seed: non-negative integer seed. Defaults to 0.
        num_classes: number of classes; required for mixup/cutmix, which turn
            integer labels into one-hot vectors. Defaults to None.
        value_range: (low, high) range of the pixel values; color operations
            keep images inside it. Defaults to (0.0, 1.0).
        crop_padding: pixels of zero padding for "crop". Defaults to 4.
        example_shape: the shape of one example, checked to be an image's
            ((H, W) or (H, W, C)) before any `tf.data` map is traced; None
            leaves the check to the first call. Defaults to None.

    Returns:
        An `Augmenter` (callable, with `names`, `seed` and `soft_labels`).
    """
    names = check_names(names, argument="names")
    if example_shape is not None:
        check_example_shape(names, example_shape, argument="names")
    checks.non_negative_int("seed", seed)
    soft = any(n in SOFT_LABEL_AUGMENTATIONS for n in names)
    if soft:
        checks.positive_int("num_classes", num_classes)
    else:
        checks.positive_int("num_classes", num_classes, allow_none=True)
    if (not isinstance(value_range, (tuple, list)) or len(value_range) != 2
            or not all(isinstance(v, (int, float)) for v in value_range)
            or not value_range[0] < value_range[1]):
        raise ValueError(f"value_range must be (low, high) with low < high. "
                         f"Received: value_range={value_range!r}")
    checks.positive_int("crop_padding", crop_padding)
    return Augmenter(names, seed=seed, num_classes=num_classes,
                     value_range=tuple(float(v) for v in value_range), crop_padding=crop_padding)


class Augmenter:
    """Applies named augmentations to batches; build it with `make_augmenter`."""

    def __init__(self, names, *, seed, num_classes, value_range, crop_padding):
        import keras

        self.names = tuple(names)
        self.seed = seed
        self.num_classes = num_classes
        self.value_range = value_range
        self.crop_padding = crop_padding
        self.soft_labels = any(n in SOFT_LABEL_AUGMENTATIONS for n in names)
        layers = keras.layers
        # Distinct seeds per operation, so two operations never share random draws.
        seeds = {name: seed * 1009 + i for i, name in enumerate(AUGMENTATIONS)}
        builders = {
            "flip": lambda s: layers.RandomFlip("horizontal", seed=s),
            "crop": lambda s: _pad_crop(crop_padding, seed=s),
            "rotation": lambda s: layers.RandomRotation(15 / 360, seed=s),
            "translation": lambda s: layers.RandomTranslation(0.1, 0.1, seed=s),
            "zoom": lambda s: layers.RandomZoom(0.1, 0.1, seed=s),
            "contrast": lambda s: layers.RandomContrast(0.2, value_range=value_range, seed=s),
            "brightness": lambda s: layers.RandomBrightness(0.2, value_range=value_range,
                                                            seed=s),
            "randaugment": lambda s: layers.RandAugment(value_range=value_range, seed=s),
            "mixup": lambda s: layers.MixUp(alpha=0.2, seed=s),
            "cutmix": lambda s: layers.CutMix(factor=1.0, seed=s),
            # factor (0.5, 0.5): each image is erased with probability 0.5, the paper's p.
            "erasing": lambda s: layers.RandomErasing(factor=(0.5, 0.5), scale=(0.02, 0.33),
                                                      value_range=value_range, seed=s),
        }
        self._image_ops = [(n, builders[n](seeds[n])) for n in names
                           if n not in SOFT_LABEL_AUGMENTATIONS]
        self._mix_ops = [(n, builders[n](seeds[n])) for n in names
                         if n in SOFT_LABEL_AUGMENTATIONS]
        self._generators = []  # every SeedGenerator the operations draw from
        for _, op in self._image_ops + self._mix_ops:
            if isinstance(op, keras.layers.Layer):
                for layer in op._flatten_layers():
                    self._generators += [g for g in getattr(layer, "_seed_generators", ())
                                         if all(g is not h for h in self._generators)]
            else:
                self._generators.append(op.generator)

    def __repr__(self):
        return f"Augmenter(names={self.names!r}, seed={self.seed})"

    def reseed(self, value):
        """Reset every random operation's state from `value` (an integer or scalar tensor).

        Generator i restarts at (value, i * 2**32): distinct streams for
        distinct operations, the same stream for the same value.
        """
        from keras import ops

        value = ops.cast(value, "int64")
        for i, generator in enumerate(self._generators):
            state = ops.stack([value, ops.cast(i * 2 ** 32, "int64")])
            generator.state.assign(ops.cast(state, generator.state.dtype))

    def __call__(self, images, labels=None, seed=None):
        from keras import ops

        if seed is not None:
            self.reseed(seed)
        rank = len(images.shape)
        if rank == 2:
            # Reached only when the caller did not pass example_shape: a batch of
            # feature vectors, which Keras's image layers would misread.
            check_example_shape(self.names, tuple(images.shape[1:]), argument="names")
        if rank == 3:
            # (N, H, W) grayscale batches (digits for a vector model): without a
            # channel axis Keras's layers would take the batch for one (H, W, C) image.
            images = ops.expand_dims(images, -1)
        for _, op in self._image_ops:
            images = op(images, training=True)
        if self._mix_ops and labels is not None:
            labels = self._soft(labels)
            for _, op in self._mix_ops:
                mixed = op({"images": images, "labels": labels}, training=True)
                images, labels = mixed["images"], mixed["labels"]
        images = ops.cast(images, "float32")
        if rank == 3:
            images = ops.squeeze(images, -1)
        return images, labels

    def _soft(self, labels):
        from keras import ops

        if len(labels.shape) >= 2 and labels.shape[-1] == self.num_classes \
                and "float" in str(labels.dtype):
            return labels
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        return ops.one_hot(labels, self.num_classes)


def _pad_crop(padding, *, seed):
    """Per-image random crop after zero padding (He et al. 2015, section 4.2)."""
    import keras
    from keras import ops

    generator = keras.random.SeedGenerator(seed)

    def crop(images, training=True):
        if not training:
            return images
        height, width = images.shape[1], images.shape[2]
        if height is None or width is None:
            raise ValueError(f"crop needs a static image height and width. "
                             f"Received: images.shape={tuple(images.shape)}")
        batch = ops.shape(images)[0]
        channels = ops.shape(images)[3]
        padded = ops.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
        offsets = keras.random.randint((batch, 2), 0, 2 * padding + 1, seed=generator)
        rows = offsets[:, 0:1] + ops.arange(height, dtype="int32")[None, :]  # (N, H)
        cols = offsets[:, 1:2] + ops.arange(width, dtype="int32")[None, :]  # (N, W)
        rows = ops.broadcast_to(rows[:, :, None, None],
                                (batch, height, width + 2 * padding, channels))
        picked = ops.take_along_axis(padded, rows, axis=1)  # (N, H, W + 2p, C)
        cols = ops.broadcast_to(cols[:, None, :, None], (batch, height, width, channels))
        return ops.take_along_axis(picked, cols, axis=2)

    crop.generator = generator
    return crop
