"""Sources that are already streams: a user's `tf.data.Dataset` and `tfds:` splits.

A stream is never materialized.  It becomes a `StreamIndex`: its parts (one
`tf.data.Dataset` of unbatched (input, label) examples each: the user's
train[, validation[, test]], or TFDS's train slices and test split) and the
labels of every example, read in one pass that skips the inputs where it
can (TFDS: `SkipDecoding`, so no image is decoded).  From the labels come
the class counts, the checks (single class, label range, `classes=`) and a
seeded, stratified split by example number, exactly as for arrays; the
pipelines then number the examples of a part as they stream past and keep
those of their split (`zoo.data.index_examples`).

Nothing here imports TensorFlow at module level.
"""

import dataclasses
import hashlib

import numpy as np

from zoo.readers import DataUnavailableError


@dataclasses.dataclass
class StreamIndex:
    """Parts of a streamed source: datasets, examples per part, one label per example."""

    datasets: list
    counts: list
    labels: np.ndarray
    listing: str
    element_shape: tuple
    # Which split each part is: "all" (to be split), "train", "validation", "test".
    roles: tuple = ("all",)
    class_names: list = None

    @property
    def files(self):  # names for the manifest: "part#number"
        return list(self.roles)


def is_dataset(obj):
    return hasattr(obj, "element_spec") and hasattr(obj, "as_numpy_iterator")


def is_stream(data):
    """A `tf.data.Dataset`, or a tuple of 2 or 3 of them (train, validation[, test])."""
    if is_dataset(data):
        return True
    return (isinstance(data, tuple) and len(data) in (2, 3)
            and all(is_dataset(d) for d in data))


def _examples(ds, what):
    """`ds` as unbatched (input, label) examples, checked by its element spec alone."""
    import tensorflow as tf
    spec = ds.element_spec
    if isinstance(spec, dict) or not isinstance(spec, tuple) or len(spec) != 2:
        raise ValueError(f"{what} must yield (input, label) pairs. Received: a dataset of "
                         f"{spec}")
    inputs, label = spec
    if not isinstance(inputs, tf.TensorSpec) or not isinstance(label, tf.TensorSpec):
        raise ValueError(f"{what} must yield (input, label) tensors. Received: a dataset of "
                         f"{spec}")
    if label.shape.rank == 1 and inputs.shape.rank is not None and inputs.shape.rank >= 2 \
            and inputs.shape[0] is None:
        ds = ds.unbatch()  # a batched dataset: the pipelines batch it themselves
        inputs, label = ds.element_spec
    if label.shape.rank != 0 or not label.dtype.is_integer:
        raise ValueError(f"{what} must have integer class ids as labels (one per example). "
                         f"Received: labels of {label}")
    return ds


def _label_pass(ds, what, *, labels_only=None):
    """Every label of `ds`, in order, in one pass (inputs skipped where `labels_only` says how)."""
    import tensorflow as tf
    source = labels_only if labels_only is not None else ds.map(lambda x, y: y)
    got = []
    try:
        for batch in source.batch(4096).prefetch(2):
            got.append(batch.numpy())
    except tf.errors.OpError as err:
        raise ValueError(f"{what} could not be read: {err.message.splitlines()[0]}") from None
    labels = np.concatenate(got) if got else np.zeros((0,), "int64")
    if not len(labels):
        raise ValueError(f"{what} is an empty tf.data.Dataset.")
    return labels


def index_datasets(data):
    """The `StreamIndex` of a user's dataset or (train, validation[, test]) datasets."""
    parts = data if isinstance(data, tuple) else (data,)
    roles = {1: ("all",), 2: ("all", "validation"), 3: ("train", "validation", "test")}[
        len(parts)]
    names = ("data", "the validation dataset", "the test dataset")[:len(parts)]
    if len(parts) > 1:
        names = ("the training dataset",) + names[1:]
    datasets = [_examples(ds, what) for ds, what in zip(parts, names)]
    shapes = {tuple(ds.element_spec[0].shape) for ds in datasets}
    if len(shapes) > 1:
        raise ValueError(f"The datasets' inputs differ in shape ({sorted(shapes, key=str)}); "
                         f"train, validation and test must have the same features.")
    labels = [_label_pass(ds, what) for ds, what in zip(datasets, names)]
    digest = hashlib.sha256(b"dataset")
    for part in labels:
        digest.update(part.astype("int64").tobytes())
    return StreamIndex(datasets=datasets, counts=[len(p) for p in labels],
                       labels=np.concatenate(labels), listing=digest.hexdigest(),
                       element_shape=shapes.pop(), roles=roles)


def index_tfds(name, *, validation_split):
    """The `StreamIndex` of `tfds:NAME[/SPLIT]`, never downloading.

    The training split is cut by TFDS slicing (`train[:N]`, `train[N:]`) into
    train and validation (in record order, as `tfds.load` reads it); the
    dataset's own test split is the test split (without one, a test part
    is carved from train like a user's dataset).
    """
    import tensorflow_datasets as tfds
    dataset, _, split = name.partition("/")
    source = f"data='tfds:{name}'"
    try:
        builder = tfds.builder(dataset)
    except Exception as err:  # TFDS raises DatasetNotFoundError and others
        raise ValueError(f"Unknown TFDS dataset. Received: {source} ({err})") from err
    info_splits = builder.info.splits or {}
    base = split or "train"
    # A builder whose split metadata is missing (tfds.testing.mock_data) is
    # taken to have a test split, as tfds.load would find one.
    has_test = not split and ("test" in info_splits or not info_splits)

    def read(part):
        # download=False: TFDS would otherwise retry the network for minutes.
        try:
            examples = builder.as_dataset(split=part, as_supervised=True, shuffle_files=False)
            labels = builder.as_dataset(split=part, as_supervised=True, shuffle_files=False,
                                        decoders=_skip_inputs(builder))
        except (AssertionError, FileNotFoundError) as err:
            raise DataUnavailableError(
                f"TFDS dataset {dataset!r} is not prepared under {builder.data_dir}. Run "
                f"`tfds build {dataset}` on a machine with network and copy that folder "
                f"here.") from err
        except (KeyError, ValueError) as err:
            raise ValueError(f"TFDS dataset {dataset!r} has no split {part!r} ({err}). "
                             f"Received: {source}") from None
        return _examples(examples, source), labels.map(lambda x, y: y)

    examples, label_stream = read(base)
    base_labels = _label_pass(examples, source, labels_only=label_stream)
    if has_test:
        # Validation: the last records of the training split, by TFDS slicing.
        cut = len(base_labels) - max(1, int(round(len(base_labels) * validation_split)))
        datasets = [read(f"{base}[:{cut}]")[0], read(f"{base}[{cut}:]")[0]]
        labels = [base_labels[:cut], base_labels[cut:]]
        test, test_stream = read("test")
        datasets.append(test)
        labels.append(_label_pass(test, source, labels_only=test_stream))
        roles = ("train", "validation", "test")
    else:
        datasets, labels, roles = [examples], [base_labels], ("all",)
    feature = builder.info.features["label"] if "label" in builder.info.features else None
    names = list(getattr(feature, "names", None) or []) or None
    digest = hashlib.sha256(f"tfds:{name}:{builder.info.version}".encode())
    for part in labels:
        digest.update(part.astype("int64").tobytes())
    return StreamIndex(datasets=datasets, counts=[len(p) for p in labels],
                       labels=np.concatenate(labels), listing=digest.hexdigest(),
                       element_shape=tuple(datasets[0].element_spec[0].shape),
                       roles=roles, class_names=names)


def _skip_inputs(builder):
    """TFDS decoders that skip decoding every image feature (the label pass reads labels only)."""
    import tensorflow_datasets as tfds
    features = builder.info.features
    skip = {key: tfds.decode.SkipDecoding() for key, feature in features.items()
            if isinstance(feature, tfds.features.Image)}
    return skip or None

