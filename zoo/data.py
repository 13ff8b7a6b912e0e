"""Named datasets -> a validated, split index -> `tf.data` pipelines.

`load(spec, data)` is the one entry point.  A source becomes an index first:
the image sources that can be large (`folder:`, `tfrecord:`) become file
paths or record ids plus labels (`zoo.images`; a text `folder:` becomes a
`zoo.readers.TextIndex` in `zoo.tasks.text`), split and validated by
`zoo.splits` without decoding an image, and every example is decoded and
resized inside a parallel `tf.data` map, so memory stays flat whatever the
folder's size.  A user's `tf.data.Dataset` and `tfds:` splits are used as
streams (`zoo.streams`).  The small named sets, `npz:` and `csv:` are read
into numpy arrays (they fit in memory), split and validated the same way.
Each split then becomes a pipeline: scale, resize to the model input,
shuffle (training only; by index for streamed sources), batch, augment
(training only), prefetch; `options["cache"]` adds a `tf.data` disk cache.
Files are parsed by `zoo.readers` (CSV, prepared TFDS datasets).

Sources (`data=`):
    digits              scikit-learn's bundled 8x8 digits (offline default)
    mnist, fashion_mnist, cifar10, cifar100
                        Keras loaders and their cache (~/.keras/datasets);
                        fashion_mnist is read from a local IDX folder first
                        (the Debian package dataset-fashion-mnist installs one)
    fashion_mnist:DIR   an IDX folder
    tfds:NAME           a prepared TensorFlow Datasets dataset (no download)
    folder:PATH         one sub-folder of images per class (streamed)
    tfrecord:GLOB       image-classification TFRecord shards (`image/encoded`,
                        `image/class/label`), streamed
    npz:PATH            arrays x, y (or x_train, y_train, x_test, y_test)
    csv:PATH            numeric feature columns and a label column
    (x, y)              arrays from Python

npz, CSV and (x, y) follow one rule set (`zoo.splits.normalize_arrays`):
x has a feature axis, (N,) or (N, 1) class ids, one-hot (N, K) labels, or
label names (encoded, names recorded); NaN or fractional labels are refused.
A data option the source does not read (`OPTION_SOURCES`) is refused.
"""

import dataclasses
import os
from typing import Optional

import numpy as np

from zoo import checks
from zoo.readers import (DataUnavailableError, TextIndex, read_feature_csv, read_idx, read_npz,
                         read_tfds)
from zoo.splits import ArraySplits, IndexSplits, make_splits, normalize_arrays  # noqa: F401

FASHION_MNIST_FILES = ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
                       "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")
# What Keras 3.15's loaders read from their cache, relative to
# <KERAS_HOME>/datasets (`keras.utils.get_file`'s naming), and what to put there.
KERAS_DATASETS = {
    "mnist": (("mnist.npz",), "mnist.npz"),
    "fashion_mnist": (tuple(f"fashion-mnist/{f}" for f in FASHION_MNIST_FILES),
                      "the four gzipped IDX files of Fashion-MNIST"),
    "cifar10": (("cifar-10-batches-py-target_archive",),
                "cifar-10-python.tar.gz, renamed to that name"),
    "cifar100": (("cifar-100-python-target_archive",),
                 "cifar-100-python.tar.gz, renamed to that name"),
}
NAMED_SOURCES = ("digits", *KERAS_DATASETS)
PREFIXES = ("tfds", "folder", "tfrecord", "npz", "csv", "fashion_mnist")
# Images from a folder or TFRecords decode to this size for a model that
# takes its input shape from the data (`input_policy == "data"`).
DEFAULT_IMAGE_SIZE = (64, 64)
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)


def keras_datasets_dir():
    """Where Keras caches datasets: $KERAS_HOME/datasets (default ~/.keras/datasets)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "datasets")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
from zoo.images import IMAGE_EXTENSIONS  # noqa: E402,F401 (listed here since before zoo.images)


@dataclasses.dataclass
class DataBundle:
    """What training needs: three batched pipelines plus metadata."""

    train: object
    validation: object
    test: object
    input_shape: tuple
    num_classes: Optional[int]
    class_names: Optional[list]
    source: str
    num_examples: dict
    batch_size: int
    arrays: ArraySplits
    extras: dict = dataclasses.field(default_factory=dict)
    # Labels are one-hot vectors (asked for, or soft labels from MixUp/CutMix):
    # the loss must then be categorical rather than sparse.
    one_hot_labels: bool = False
    # Unbatched (input, label) pipelines of each split, decoded and sized as
    # the model receives them, in split order, without augmentation: bounded
    # samples (export inputs, the probe head) take from these.
    examples: dict = dataclasses.field(default_factory=dict)

    @property
    def splits(self):
        """The validated split (`ArraySplits`, or `IndexSplits` for a streamed source)."""
        return self.arrays

    def take_inputs(self, split="test", n=8):
        """The first `n` inputs of a split exactly as the model receives them."""
        import numpy as np
        if split in self.examples:
            # Bounded: n examples are decoded, not a whole batch of a big split.
            inputs = np.concatenate([np.asarray(item[0])[None]
                                     for item in self.examples[split].take(n)])
        else:
            xs = []
            for batch in getattr(self, split):
                xs.append(np.asarray(batch[0] if isinstance(batch, tuple) else batch))
                if sum(len(x) for x in xs) >= n:
                    break
            inputs = np.concatenate(xs)[:n]
        # Raw text arrives as an object array of bytes; fixed-width bytes keep
        # it loadable by np.load(allow_pickle=False) in the export check.
        return inputs.astype(bytes) if inputs.dtype == object else inputs


# --------------------------------------------------------------------------- sources


def describe_source(data):
    """A short printable name for a data argument."""
    return data if isinstance(data, str) else type(data).__name__


def check_data_argument(data):
    """Refuse a data argument no reader accepts, before anything is read.

    Raises:
        ValueError: an unknown source name or prefix.
        TypeError: neither a name, an (x, y) tuple nor a `tf.data.Dataset`.
    """
    if isinstance(data, str):
        if data in NAMED_SOURCES:
            return
        prefix, sep, rest = data.partition(":")
        if sep and prefix in PREFIXES and rest:
            return
        allowed = ", ".join([*NAMED_SOURCES, *(f"{p}:..." for p in PREFIXES)])
        raise ValueError(f"Unknown dataset. Received: data={data!r}. Allowed: {allowed}, "
                         f"or an (x, y) tuple of arrays.")
    if isinstance(data, tuple) and len(data) == 2:
        return
    from zoo.streams import is_stream
    if is_stream(data):
        return
    if type(data).__name__ in ("DatasetV2", "_TensorSliceDataset") or hasattr(data, "element_spec"):
        return
    raise TypeError(f"data must be a dataset name, an (x, y) tuple, a tf.data.Dataset or a "
                    f"(train, validation[, test]) tuple of them. Received: data of type "
                    f"{type(data).__name__}")


def _offline():
    return os.environ.get("ZOO_OFFLINE", "").lower() in ("1", "true", "yes")


def _load_digits():
    from sklearn.datasets import load_digits
    bunch = load_digits()
    x = (bunch.images / 16.0).astype("float32")[..., None]
    return (x, bunch.target.astype("int32")), None, [str(c) for c in bunch.target_names]


def _read_idx(path):
    return read_idx(path)  # checked: a damaged file is one line naming it


def _idx_file(folder, stem):
    for name in (stem, stem + ".gz"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    return None


def _load_idx_folder(folder):
    """Fashion-MNIST / MNIST style IDX files in `folder`."""
    stems = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
    paths = {k: _idx_file(folder, s) for k, s in stems.items()}
    missing = [stems[k] for k, p in paths.items() if p is None]
    if missing:
        raise DataUnavailableError(f"IDX folder {folder!r} lacks {missing} (optionally .gz).")
    arrays = {k: _read_idx(p) for k, p in paths.items()}
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"IDX files do not match: {paths[f'x_{part}']} holds images of "
                             f"shape {x.shape} and {paths[f'y_{part}']} labels of shape "
                             f"{y.shape}; expected (N, height, width) images and N labels.")
    return ((arrays["x_train"][..., None], arrays["y_train"].astype("int32")),
            (arrays["x_test"][..., None], arrays["y_test"].astype("int32")))


def _load_keras_dataset(name):
    if name == "fashion_mnist":
        folders = (*FASHION_MNIST_DIRS, os.path.join(keras_datasets_dir(), "fashion-mnist"))
        for folder in folders:
            if os.path.isdir(folder) and _idx_file(folder, "train-images-idx3-ubyte"):
                train, test = _load_idx_folder(folder)
                return train, test, FASHION_MNIST_CLASSES
    relative, what = KERAS_DATASETS[name]
    root = keras_datasets_dir()
    paths = [os.path.join(root, r) for r in relative]
    where = paths[0] if len(paths) == 1 else os.path.dirname(paths[0]) + os.sep
    place = (f"Place {what} at {where}"
             + (" (or the IDX files in /usr/share/datasets/fashion-mnist/: "
                "`apt-get install dataset-fashion-mnist`)" if name == "fashion_mnist" else "")
             + ", or pass data='npz:PATH'.")
    cached = all(os.path.exists(p) for p in paths)
    if _offline():
        if not cached:
            raise DataUnavailableError(f"Dataset {name!r} is not cached and ZOO_OFFLINE is set. "
                                       f"{place}")
        # Read the cache ourselves: Keras's loader re-downloads a file whose
        # hash it does not recognise, and ZOO_OFFLINE means never the network.
        (x_train, y_train), (x_test, y_test) = _read_keras_cache(name, paths)
    else:
        import keras
        loader = getattr(keras.datasets, name)
        try:
            (x_train, y_train), (x_test, y_test) = loader.load_data()
        except Exception as err:  # urllib/keras raise bare Exception on a failed fetch
            raise DataUnavailableError(f"Could not load dataset {name!r}: {err}. {place}") \
                from err
    if x_train.ndim == 3:
        x_train, x_test = x_train[..., None], x_test[..., None]
    class_names = CIFAR10_CLASSES if name == "cifar10" else None
    return ((x_train, np.asarray(y_train).reshape(-1).astype("int32")),
            (x_test, np.asarray(y_test).reshape(-1).astype("int32")), class_names)


def _read_keras_cache(name, paths):
    """((x_train, y_train), (x_test, y_test)) from the files Keras caches, without Keras's loader."""
    import pickle
    import tarfile
    try:
        if name == "mnist":
            f = read_npz(paths[0])
            return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])
        if name == "fashion_mnist":
            return _load_idx_folder(os.path.dirname(paths[0]))
        from keras.src.datasets.cifar import load_batch  # Keras's restricted unpickler
        target = paths[0][:-len("_archive")]
        inner = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
        if not os.path.isdir(os.path.join(target, inner)):
            with tarfile.open(paths[0]) as archive:
                archive.extractall(target, filter="data")
        folder = os.path.join(target, inner)

        def batch(file, key):
            x, y = load_batch(os.path.join(folder, file), label_key=key)
            return x.transpose(0, 2, 3, 1), np.asarray(y)
        if name == "cifar10":
            parts = [batch(f"data_batch_{i}", "labels") for i in range(1, 6)]
            train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
            return train, batch("test_batch", "labels")
        return batch("train", "fine_labels"), batch("test", "fine_labels")
    except (OSError, KeyError, ValueError, EOFError, AttributeError, TypeError, IndexError,
            pickle.UnpicklingError, tarfile.TarError) as err:
        # Keras's restricted unpickler refuses a malicious batch file with an
        # UnpicklingError; a damaged one fails in any of these ways.
        raise DataUnavailableError(f"The cached files of dataset {name!r} cannot be read "
                                   f"({type(err).__name__}: {err}); delete them to download "
                                   f"again: {', '.join(paths)}") from None


def _load_tfds(name):
    train, test, class_names = read_tfds(name)

    def stack(pairs):
        if not pairs:
            return np.zeros((0,)), np.zeros((0,), "int32")
        xs, ys = zip(*pairs)
        return np.stack(xs), np.asarray(ys)

    return stack(train), (stack(test) if test is not None else None), class_names


NPZ_KEYS = ("x", "y", "x_train", "y_train", "x_test", "y_test")


def _load_npz(path):
    """(train, test or None, None) of an npz: x, y or x_train, y_train[, x_test, y_test].

    Every array in the file is read or refused: a test part without its
    other half, x beside x_train, or an array of another name is named,
    never silently dropped.
    """
    source = f"data='npz:{path}'"
    if not os.path.exists(path):  # a folder, FIFO or device: read_npz names it
        raise ValueError(f"File does not exist. Received: {source}")
    f = read_npz(path, source=source)
    keys = set(f)
    allowed = "x, y or x_train, y_train[, x_test, y_test]"
    other = sorted(keys - set(NPZ_KEYS))
    if other:
        raise ValueError(f"npz file must hold arrays {allowed}; it also holds {other}, which "
                         f"would not be read. Received keys {sorted(keys)} in {source}")
    if keys & {"x", "y"} and keys & {"x_train", "y_train"}:
        raise ValueError(f"npz file must hold arrays {allowed}, not both x/y and x_train/"
                         f"y_train. Received keys {sorted(keys)} in {source}")
    stem = "_train" if keys & {"x_train", "y_train"} else ""
    for pair in ((f"x{stem}", f"y{stem}"), ("x_test", "y_test")):
        present = [k for k in pair if k in keys]
        if not present and pair[0] == "x_test":
            continue
        if not present:
            raise ValueError(f"npz file must hold arrays {allowed}. Received keys "
                             f"{sorted(keys)} in {source}")
        if len(present) == 1:
            missing = pair[1] if present[0] == pair[0] else pair[0]
            raise ValueError(f"npz file holds {present[0]!r} but no {missing!r}: both are "
                             f"needed ({allowed}); nothing is dropped silently. Received keys "
                             f"{sorted(keys)} in {source}")
    train = (f[f"x{stem}"], f[f"y{stem}"])
    test = (f["x_test"], f["y_test"]) if "x_test" in keys else None
    return train, test, None


def read_source(data, *, image_size=None, options=None):
    """Raw arrays of a source: ((x, y), (x_test, y_test) or None, class_names)."""
    check_data_argument(data)
    options = options or {}
    from zoo.streams import is_stream
    if is_stream(data):
        raise ValueError("tf.data.Dataset sources are streamed; use zoo.data.source_splits.")
    if isinstance(data, tuple):
        return (np.asarray(data[0]), np.asarray(data[1])), None, None
    if data == "digits":
        return _load_digits()
    if data in KERAS_DATASETS:
        return _load_keras_dataset(data)
    prefix, _, rest = data.partition(":")
    if prefix == "fashion_mnist":
        train, test = _load_idx_folder(rest)
        return train, test, FASHION_MNIST_CLASSES
    if prefix == "tfds":
        return _load_tfds(rest)
    if prefix in ("folder", "tfrecord"):
        raise ValueError(f"{prefix}: sources stream from disk; use zoo.data.source_splits. "
                         f"Received: data={data!r}")
    if prefix == "npz":
        return _load_npz(rest)
    x, y, _, _ = read_feature_csv(rest, options.get("label_column"))
    return (x, y), None, None  # raw label cells: zoo.splits.normalize_arrays reads them


# -------------------------------------------------------------------------- shapes


def example_shape(x):
    """Per-example shape; grayscale images gain a channel axis."""
    return tuple(x.shape[1:])


def resolve_input_shape(spec, data_shape, input_shape=None):
    """The model's input shape for data of `data_shape` (see `INPUT_POLICIES`)."""
    if input_shape is not None:
        return checks.shape("input_shape", input_shape)
    if spec.input_policy == "data" or spec.input_kind != "image":
        return tuple(data_shape)
    if len(data_shape) != 3:
        raise ValueError(f"Model '{spec.name}' takes images (height, width, channels); the data "
                         f"has examples of shape {tuple(data_shape)}.")
    return tuple(spec.input_shape[:-1]) + (data_shape[-1],)


def check_compatible(spec, data_shape, input_shape):
    """Raise if examples of `data_shape` cannot be fed to a model taking `input_shape`."""
    if spec.input_kind == "image":
        if len(data_shape) != 3 or len(input_shape) != 3:
            raise ValueError(f"Data shape {tuple(data_shape)} is incompatible with model "
                             f"'{spec.name}' input_shape={tuple(input_shape)}: both must be "
                             f"(height, width, channels).")
        if data_shape[-1] != input_shape[-1] and data_shape[-1] != 1:
            raise ValueError(f"Data has {data_shape[-1]} channels but the model takes "
                             f"{input_shape[-1]}. Received: input_shape={tuple(input_shape)}")
        if spec.min_input_shape:
            checks.shape("input_shape", input_shape, min_shape=spec.min_input_shape[:2])
    elif spec.input_policy == "data":
        flat = int(np.prod(data_shape))
        if int(np.prod(input_shape)) != flat:
            raise ValueError(f"Data examples of shape {tuple(data_shape)} do not fit model "
                             f"'{spec.name}' input_shape={tuple(input_shape)}.")


# ------------------------------------------------------------------------- pipeline


def _prepare(input_shape, one_hot_classes, image):
    """The per-example map: scale uint8 to [0, 1], resize / tile channels, one-hot labels."""
    import tensorflow as tf

    def prepare(*item):
        inputs = item[0]
        if inputs.dtype == tf.uint8:
            # Pixels, whatever model reads them: an MLP on Fashion-MNIST gets
            # [0, 1] like a CNN (raw 0..255 trained it worse than a plain script).
            inputs = tf.cast(inputs, tf.float32) / 255.0
        if image:
            inputs = tf.cast(inputs, tf.float32)
            if input_shape is not None and len(input_shape) == 3:
                if inputs.shape.rank == 2:
                    inputs = inputs[..., None]  # grayscale examples of a stream
                if tuple(inputs.shape[:2]) != tuple(input_shape[:2]):
                    inputs = tf.image.resize(inputs, input_shape[:2])
                if inputs.shape[-1] == 1 and input_shape[-1] != 1:
                    inputs = tf.tile(inputs, [1, 1, input_shape[-1]])
        if len(item) == 1:
            return (inputs,)
        target = item[1]
        if one_hot_classes:
            target = tf.one_hot(tf.cast(target, tf.int32), one_hot_classes)
        return inputs, target

    return prepare


def _shard_policy(ds, policy):
    """Multi-worker sharding: FILE where each worker can read its own files, else DATA."""
    import tensorflow as tf
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = getattr(
        tf.data.experimental.AutoShardPolicy, policy)
    return ds.with_options(options)


def _batched(ds, *, batch_size, seed, augmenter):
    import tensorflow as tf
    ds = ds.batch(batch_size)
    if augmenter is not None:
        # Each batch's augmentation is seeded from its own number, drawn from a
        # stream that, like the shuffle, is redrawn for every iterator (every
        # epoch): a resumed run, which makes and drops one iterator per
        # completed epoch, augments the next epoch as the uninterrupted run did.
        # Sequential on purpose: the augmenter resets and then draws from its
        # generators (see zoo/augment.py).
        draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, draws)).map(
            lambda b, r: augmenter(*b, seed=r) if len(b) == 2 else
            (augmenter(b[0], None, seed=r)[0],))
    return ds.prefetch(tf.data.AUTOTUNE)


def pipeline(x, y, *, batch_size, input_shape=None, shuffle=False, seed=0, augmenter=None,
             one_hot_classes=None, image=True, cache=None):
    """A batched `tf.data` pipeline over arrays: scale, resize, cache, shuffle, batch, prefetch.

    Args:
        x: inputs; uint8 images are scaled to [0, 1].
        y: targets, or None for input-only data.
        batch_size: batch size.
        input_shape: the model's (H, W, C) to resize / tile channels to (images only).
        shuffle: reshuffle every epoch (training). Defaults to False.
        seed: shuffle and augmentation seed. Defaults to 0.
        augmenter: callable (images, labels) -> (images, labels) on batches. Defaults to None.
        one_hot_classes: one-hot encode integer labels to this many classes. Defaults to None.
        image: apply image scaling/resizing. Defaults to True.
        cache: a file prefix for `tf.data`'s disk cache; None caches in
            memory (the arrays are in memory already). Defaults to None.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y) if y is not None else (x,))
    ds = ds.map(_prepare(input_shape, one_hot_classes, image),
                num_parallel_calls=tf.data.AUTOTUNE).cache(cache or "")
    if shuffle:
        ds = ds.shuffle(min(len(x), 10_000), seed=seed, reshuffle_each_iteration=True)
    return _shard_policy(_batched(ds, batch_size=batch_size, seed=seed, augmenter=augmenter),
                         "DATA")


def worker_share(strategy):
    """(number of workers, this worker's index) when each worker reads its own share, else None.

    Under `MultiWorkerMirroredStrategy` with one replica per worker (a CPU,
    or one accelerator, per process): the `tf.distribute.InputContext` the
    strategy hands `distribute_datasets_from_function`, caught from one
    call of it (the public way to learn it).  Several replicas per worker,
    TPUs (one host reads for all its cores) and single-process strategies
    return None: their pipelines stay as they are, sharded by tf.distribute.
    """
    import tensorflow as tf
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    contexts = []
    strategy.distribute_datasets_from_function(
        lambda context: contexts.append(context) or tf.data.Dataset.range(1))
    context = contexts[0]
    if context.num_input_pipelines < 2 or \
            context.num_replicas_in_sync != context.num_input_pipelines:
        return None
    return context.num_input_pipelines, context.input_pipeline_id


def check_workers(workers, count, what="train split"):
    """`workers` as (number, index), refused where a worker would get no example."""
    if workers is None:
        return None
    number, index = (int(v) for v in workers)
    if number < 1 or not 0 <= index < number:
        raise ValueError(f"workers must be (number of workers, worker index) with "
                         f"0 <= index < number. Received: workers={tuple(workers)!r}")
    if count < number:
        raise ValueError(f"The {what} has {count} example(s), fewer than the {number} "
                         f"workers that share it: use fewer workers or more data.")
    return number, index


def shard_for_worker(ds, count, workers):
    """This worker's share of `ds` (`count` entries): every `number`-th, from its `index`.

    The shares are disjoint and equal: each worker takes `count // number`
    entries, so the last `count % number` (fewer than the workers) are left
    out of that epoch (a different few each epoch when `ds` is reshuffled
    before this).  Equal shares give every worker the same number of steps
    and the same batch size at each step: a multi-worker step needs every
    worker, and a padded or empty batch would be an example counted twice
    or a batch-norm step over nothing.
    """
    if workers is None or workers[0] == 1:
        return ds
    number, index = workers
    return ds.shard(number, index).take(count // number)


def index_examples(splits, split, *, input_shape=None, one_hot_classes=None, shuffle=False,
                   seed=0, image=True, workers=None):
    """Unbatched (input, label) examples of one split of an `IndexSplits`, decoded lazily.

    Folder images (and text files): the paths (and labels) are sliced,
    shuffled by index when `shuffle` (every epoch anew, seeded: memory holds
    paths, not images or texts), then read, decoded and resized (a text: read
    as one UTF-8 string) in a parallel, order-keeping map.  TFRecords:
    the shards are read in order (interleaved, order kept), each record
    numbered across the shards, and the split's records kept by that number;
    `shuffle` then shuffles the shard order every epoch and a 10,000-record
    buffer.

    `workers` = (number, index): this worker's share only, taken after the
    shuffle (the same seeded order on every worker) and before decoding, so
    each worker decodes only its own examples (`shard_for_worker`); the
    pipeline's auto-shard policy is then OFF.
    """
    import tensorflow as tf
    from zoo import images, streams

    ids, labels = splits.split(split)
    workers = check_workers(workers, len(ids), f"{split} split")
    index = splits.index
    prepare = _prepare(input_shape, one_hot_classes, image)
    if isinstance(index, streams.StreamIndex):
        return _stream_examples(splits, ids, labels, prepare, shuffle=shuffle, seed=seed,
                                workers=workers), "OFF" if workers else "DATA"
    if isinstance(index, (images.ImageIndex, TextIndex)):
        if isinstance(index, TextIndex):
            # The file's bytes, as a served model receives them (TextVectorization
            # reads any bytes; zoo.tasks.text cleans its vocabulary pass only).
            def decode(raw):
                return raw
        else:
            decode = images.decoder(splits.image_shape[:2], splits.image_shape[-1])
        paths = np.array([os.path.join(index.root, p) for p in index.paths[ids]], dtype=object)
        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        if shuffle:
            ds = ds.shuffle(len(ids), seed=seed, reshuffle_each_iteration=True)
        ds = shard_for_worker(ds, len(ids), workers)
        return ds.map(lambda path, label: prepare(decode(tf.io.read_file(path)), label),
                      num_parallel_calls=tf.data.AUTOTUNE), "OFF" if workers else "DATA"
    decode = images.decoder(splits.image_shape[:2], splits.image_shape[-1])
    # Record number -> this split's label, -1 for records of other splits.
    label_of = np.full(len(index.labels), -1, "int32")
    label_of[ids] = labels
    label_of = tf.constant(label_of)
    starts = np.cumsum([0] + list(index.counts))[:-1].astype("int64")
    files = tf.data.Dataset.from_tensor_slices((index.files, starts))
    if shuffle:
        files = files.shuffle(len(index.files), seed=seed, reshuffle_each_iteration=True)
    feature = {images.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}
    ds = files.interleave(
        lambda file, start: tf.data.TFRecordDataset(file).enumerate(start),
        cycle_length=min(len(index.files), 8), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)
    ds = ds.map(lambda number, record: (record, tf.gather(label_of, number)))
    ds = ds.filter(lambda record, label: label >= 0)
    if shuffle:
        ds = ds.shuffle(min(len(ids), 10_000), seed=seed, reshuffle_each_iteration=True)
    # Each worker reads every record (the split is by record number, not by
    # file) but parses and decodes only its share.
    ds = shard_for_worker(ds, len(ids), workers)
    ds = ds.map(lambda record, label: prepare(
        decode(tf.io.parse_single_example(record, feature)[images.IMAGE_KEY]), label),
        num_parallel_calls=tf.data.AUTOTUNE)
    return ds, ("OFF" if workers else "FILE" if len(index.files) > 1 else "DATA")


def _stream_examples(splits, ids, labels, prepare, *, shuffle, seed, workers=None):
    """A user's dataset or TFDS parts, numbered as they stream, keeping this split's examples.

    Only the parts holding some of `ids` are read; the shuffle is a seeded
    10,000-example buffer redrawn every epoch (the stream's own order is the
    user's or TFDS's, read with `shuffle_files=False`).
    """
    import tensorflow as tf
    index = splits.index
    label_of = np.full(len(index.labels), -1, "int32")
    label_of[ids] = labels
    label_of = tf.constant(label_of)
    starts = np.cumsum([0] + list(index.counts))
    ds = None
    for part, start, end in zip(index.datasets, starts[:-1], starts[1:]):
        if not ((ids >= start) & (ids < end)).any():
            continue
        numbered = part.enumerate(int(start))
        ds = numbered if ds is None else ds.concatenate(numbered)
    ds = ds.map(lambda number, item: (item[0], tf.gather(label_of, number)))
    ds = ds.filter(lambda inputs, label: label >= 0)
    if shuffle:
        ds = ds.shuffle(min(len(ids), 10_000), seed=seed, reshuffle_each_iteration=True)
    ds = shard_for_worker(ds, len(ids), workers)
    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)


def index_pipeline(splits, split, *, batch_size, input_shape=None, shuffle=False, seed=0,
                   augmenter=None, one_hot_classes=None, cache=None, image=True, workers=None):
    """A batched pipeline over one split of an `IndexSplits` (see `index_examples`).

    Args:
        splits: the `IndexSplits`.
        split: "train", "validation" or "test".
        batch_size / input_shape / shuffle / seed / augmenter / one_hot_classes:
            as in `pipeline`.
        cache: a folder for a `tf.data` snapshot of the decoded examples
            (`_disk_cache`: later epochs, tuning trials skip decoding); the shuffle
            then runs after the cache over a 10,000-example buffer. Defaults
            to None (decode every epoch; memory stays flat).
        workers: (number of workers, this worker's index) to read only this
            worker's share (see `index_examples`); `batch_size` is then the
            per-worker batch. With `cache`, the shares are fixed (taken
            before the cache, each worker caching its own) and shuffled
            within. Defaults to None (all examples; tf.distribute shards).
    """
    workers = check_workers(workers, len(splits.split(split)[0]), f"{split} split")
    ds, policy = index_examples(splits, split, input_shape=input_shape,
                                one_hot_classes=one_hot_classes, image=image,
                                shuffle=shuffle and cache is None, seed=seed, workers=workers)
    if cache is not None:
        if workers:
            cache = f"{cache}-worker{workers[1]}of{workers[0]}"
        ds = _disk_cache(ds, cache)
        if shuffle:
            ds = ds.shuffle(min(len(splits.split(split)[0]), 10_000), seed=seed,
                            reshuffle_each_iteration=True)
    return _shard_policy(_batched(ds, batch_size=batch_size, seed=seed, augmenter=augmenter),
                         policy)


def _disk_cache(ds, path):
    """`ds` written under `path` by its first complete pass, read from there afterwards.

    `tf.data.Dataset.snapshot`, not `cache(filename)`: TF 2.21's file cache
    logs "The calling iterator did not fully read the dataset being cached"
    whenever a writing iterator is destroyed, even after a complete pass
    (its destructor looks for a shard file the merge has just removed:
    tensorflow/tensorflow#60174, #122752), and two iterators writing one
    prefix at once fail (AlreadyExists).  A snapshot keys what it writes by
    the pipeline's fingerprint and writes a pass that stopped early again
    on the next one; a single shard keeps the examples in order, so the
    seeded shuffle after it is the same on resume.
    """
    import tensorflow as tf
    return ds.snapshot(path, shard_func=lambda *item: tf.constant(0, tf.int64))


GENERIC_OPTIONS = {
    "label_column": "CSV column holding the label (default: the last)",
    "skip_bad_images": "folder: leave out files that cannot be decoded (listed in the run "
                       "directory) instead of failing on the first",
    "cache": "a folder for tf.data's disk cache of decoded examples (folder:, tfrecord:), so "
             "later epochs and tuning trials skip decoding",
}
# Data options that are switches (no value on the command line).
SWITCH_OPTIONS = ("skip_bad_images",)


# The kinds of source each data option is read for (`source_kind`); given with
# any other source it would be ignored, so it is refused.  An option not
# listed applies to every source.
OPTION_SOURCES = {
    "label_column": ("csv",), "text_column": ("csv",), "target": ("csv",),
    "features": ("csv",), "lookback": ("csv",), "horizon": ("csv",), "season": ("csv",),
    "sequence_length": ("csv", "folder", "tfds"),
    "skip_bad_images": ("folder",),
    "cache": ("folder", "tfrecord", "tfds", "dataset"),
}


def source_kind(data):
    """The kind of a data argument: a prefix ("csv", "npz", ...), "named", "arrays" or "dataset"."""
    if isinstance(data, str):
        prefix, sep, _ = data.partition(":")
        return prefix if sep and prefix in PREFIXES else "named"
    if isinstance(data, tuple) and len(data) == 2 and not any(
            hasattr(part, "element_spec") for part in data):
        return "arrays"
    return "dataset"


def check_options(spec, options, allowed=None, *, data=None):
    """A copy of the data `options`, refused if one is not in `allowed` or not read for `data`.

    Args:
        spec: the `ModelSpec` (named in the message).
        options: dict of data options, or None.
        allowed: option names accepted (the generic ones and the task's
            `data_options`); None accepts `GENERIC_OPTIONS`. Defaults to None.
        data: the source; an option it does not read (`OPTION_SOURCES`, e.g.
            label_column with data='digits') is refused, never ignored.
            Defaults to None (not checked).
    """
    options = dict(options or {})
    allowed = set(GENERIC_OPTIONS if allowed is None else allowed)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"Unknown data option(s) {unknown} for model '{spec.name}'. "
                         f"Allowed: {sorted(allowed)}")
    if data is not None:
        kind = source_kind(data)
        for option, value in options.items():
            kinds = OPTION_SOURCES.get(option)
            if kinds and kind not in kinds and value not in (None, False):
                shown = {"arrays": "(x, y) arrays from Python", "dataset": "a tf.data.Dataset",
                         "named": f"data={data!r} (a named dataset)"}.get(kind, f"data={data!r}")
                sources = ", ".join(f"{k}:" for k in kinds if k in PREFIXES) + " sources" + (
                    " or a tf.data.Dataset" if "dataset" in kinds else "")
                raise ValueError(f"Data option {option} does not apply to {shown}; it is read "
                                 f"only for {sources}. Received: {option}={value!r}")
    return options


def _image_size(spec, input_shape):
    """The size images of a folder or TFRecords decode to: the model's, or 64x64."""
    if spec.input_kind == "image" and spec.input_policy == "resize":
        return tuple((input_shape or spec.input_shape)[:2])
    if input_shape is not None and len(input_shape) == 3:
        return tuple(input_shape[:2])
    return DEFAULT_IMAGE_SIZE


def _check_stream_options(options, data):
    skip = options.get("skip_bad_images", False)
    if not isinstance(skip, bool):
        raise TypeError(f"skip_bad_images must be True or False. Received: "
                        f"skip_bad_images={skip!r}")
    cache = options.get("cache")
    if cache is not None:
        if not isinstance(cache, (str, os.PathLike)) or not str(cache):
            raise TypeError(f"cache must be a folder path. Received: cache={cache!r}")
        if os.path.exists(cache) and not os.path.isdir(cache):
            raise ValueError(f"cache must be a folder, not a file. Received: cache={cache!r}")


def source_splits(spec, data, *, input_shape=None, options=None, seed=0, validation_split=0.1,
                  test_split=0.2, classes=None):
    """The validated split of a generic source: `IndexSplits` (streamed) or `ArraySplits`.

    `folder:` and `tfrecord:` are indexed (`zoo.images`) and split on the
    index; nothing is decoded but the header pass (folder) or the label pass
    (TFRecords), both cached.  Every other source is read into arrays.
    """
    from zoo import images
    from zoo.splits import index_splits

    options = options or {}
    task = "classification" if spec.task == "classification" else "regression"
    fractions = dict(seed=seed, validation_split=validation_split, test_split=test_split,
                     classes=classes)
    from zoo import streams
    from zoo.splits import stream_splits
    if streams.is_stream(data) or (isinstance(data, str) and data.startswith("tfds:")):
        if task != "classification":
            raise ValueError(f"Model '{spec.name}' ({spec.task}) cannot train on a labelled "
                             f"stream. Received: data={describe_source(data)!r}")
        index = (streams.index_datasets(data) if streams.is_stream(data) else
                 streams.index_tfds(data.partition(":")[2], validation_split=validation_split))
        return stream_splits(index, image_shape=index.element_shape,
                             class_names=index.class_names, **fractions)
    if isinstance(data, str) and data.partition(":")[0] in ("folder", "tfrecord"):
        if task != "classification":
            raise ValueError(f"Model '{spec.name}' ({spec.task}) cannot train on labelled image "
                             f"files. Received: data={data!r}")
        prefix, _, rest = data.partition(":")
        size = _image_size(spec, input_shape)
        if prefix == "folder":
            index = images.index_folder(rest, skip_bad_images=options.get("skip_bad_images",
                                                                          False))
            if classes is None:
                images.check_class_counts(index.counts, index.class_names, f"data={data!r}")
            return index_splits(index, image_shape=(*size, 3), class_names=index.class_names,
                                **fractions)
        index = images.index_records(rest)
        return index_splits(index, image_shape=(*size, 3), **fractions)
    image_size = None
    if spec.input_kind == "image" and spec.input_policy == "resize":
        image_size = tuple((input_shape or spec.input_shape)[:2])
    where, labels = None, "y"
    if isinstance(data, str) and data.startswith("csv:"):
        # The CSV's rows are named in label messages ("PATH line L").
        x, y, where, column = read_feature_csv(data[4:], options.get("label_column"))
        train, test, class_names = (x, y), None, None
        labels = f"label_column={column!r}"
    else:
        train, test, class_names = read_source(data, image_size=image_size, options=options)
    # One rule set for arrays (npz, CSV, Python): feature axes, (N, 1) and
    # one-hot labels, names, NaN and fractional labels.
    train, test, class_names = normalize_arrays(
        train, test, task=task, class_names=class_names, where=where, labels=labels,
        source=f"data={data!r}" if isinstance(data, str) else "the (x, y) arrays")
    return make_splits(train, test, task=task, class_names=class_names, **fractions)


def load(spec_or_name, data="digits", *, batch_size=32, seed=0, input_shape=None,
         validation_split=0.1, test_split=0.2, augment=(), classes=None, options=None,
         one_hot=False, splits=None, allowed_options=None, workers=None):
    """Load `data` for a model as a validated `DataBundle`.

    Task-specific readers (text, time series) run before this, in
    `zoo.training.load_data`, which passes their result as `splits`; this
    module never calls up into the tasks.

    Args:
        spec_or_name: a `ModelSpec` or registered name.
        data: a source (see the module docstring). Defaults to "digits".
        batch_size: Defaults to 32.
        seed: split, shuffle and augmentation seed. Defaults to 0.
        input_shape: the model input shape; None derives it from the spec and
            the data. Defaults to None.
        validation_split: fraction of the training data held out. Defaults to 0.1.
        test_split: fraction held out for test when the source has no test
            split. Defaults to 0.2.
        augment: augmentation names for the training split. Defaults to ().
        classes: keep only these labels, relabelled 0..k-1. Defaults to None.
        options: source options (label_column, skip_bad_images, cache, or a
            task's options). Defaults to None.
        one_hot: one-hot encode labels (categorical losses). Defaults to False.
        splits: `ArraySplits` / `IndexSplits` already read (a task's reader,
            or a plan re-batching its data); `data` is then only named.
            Defaults to None.
        allowed_options: option names accepted; defaults to `GENERIC_OPTIONS`.
        workers: (number of workers, this worker's index) under a multi-worker
            strategy (`worker_share`): the training pipeline of a streamed
            source then holds only this worker's share, batched at
            `batch_size / number` (`batch_size` stays the global batch), for
            `distribute_datasets_from_function`. Defaults to None.
    """
    from zoo.registry import get_spec

    spec = get_spec(spec_or_name) if isinstance(spec_or_name, str) else spec_or_name
    checks.positive_int("batch_size", batch_size)
    if splits is None:
        check_data_argument(data)
    if isinstance(augment, str):
        raise TypeError(f"augment must be a list of augmentation names, not a string. "
                        f"Received: augment={augment!r}")
    options = check_options(spec, options, allowed_options, data=data)
    _check_stream_options(options, data)
    from zoo import augment as augment_module
    if augment:
        unknown_aug = [a for a in augment if a not in augment_module.AUGMENTATIONS]
        if unknown_aug:
            raise ValueError(f"Unknown augmentation(s) {unknown_aug}. Allowed: "
                             f"{list(augment_module.AUGMENTATIONS)}")

    if splits is None:
        splits = source_splits(spec, data, input_shape=input_shape, options=options, seed=seed,
                               validation_split=validation_split, test_split=test_split,
                               classes=classes)
    streamed = isinstance(splits, IndexSplits)
    data_shape = tuple(splits.image_shape) if streamed else example_shape(splits.x_train)
    if spec.input_kind == "image" and len(data_shape) == 2 and streamed:
        data_shape = data_shape + (1,)  # `_prepare` adds the channel axis per example
    elif spec.input_kind == "image" and len(data_shape) == 2:
        splits = dataclasses.replace(
            splits, x_train=splits.x_train[..., None], x_val=splits.x_val[..., None],
            x_test=splits.x_test[..., None])
        data_shape = data_shape + (1,)
    model_shape = resolve_input_shape(spec, data_shape, input_shape)
    check_compatible(spec, data_shape, model_shape)

    augmenter = None
    if augment:
        augment_module.check_example_shape(augment, data_shape)
        augmenter = augment_module.make_augmenter(tuple(augment), seed=seed,
                                                  num_classes=splits.num_classes)
    soft = bool(getattr(augmenter, "soft_labels", False))
    one_hot_classes = splits.num_classes if (one_hot or soft) and splits.num_classes else None
    is_image = spec.input_kind == "image"
    shape = model_shape if is_image else None
    cache = options.get("cache")
    names = ("train", "validation", "test")
    if streamed:
        manifest = splits.manifest()
        # The listing (names, sizes, modification times): a file rewritten in
        # place is decoded again, not read stale from the cache.
        make = lambda name, **kw: index_pipeline(  # noqa: E731
            splits, name, input_shape=shape, seed=seed,
            one_hot_classes=one_hot_classes, image=is_image,
            cache=_cache_file(cache, name, (manifest["listing"], manifest["hashes"][name],
                                            shape, one_hot_classes)),
            **{"batch_size": batch_size, **kw})
        examples = {name: index_examples(splits, name, input_shape=shape, image=is_image,
                                         one_hot_classes=one_hot_classes)[0] for name in names}
    else:
        make = lambda name, **kw: pipeline(  # noqa: E731
            *splits.split(name), batch_size=batch_size, input_shape=shape, seed=seed,
            one_hot_classes=one_hot_classes, image=is_image, **kw)
        examples = {}
    train_kw = {}
    if streamed and workers is not None and int(workers[0]) > 1:
        # Each worker reads its own share of the training split (validation
        # and test stay whole: tf.distribute shards the one, every worker
        # evaluates the other on its own copy of the model).
        if batch_size % int(workers[0]):
            raise ValueError(f"The global batch_size must be a multiple of the number of "
                             f"workers. Received: batch_size={batch_size} for "
                             f"{int(workers[0])} workers")
        train_kw = dict(workers=tuple(workers), batch_size=batch_size // int(workers[0]))
    return DataBundle(
        train=make("train", shuffle=True, augmenter=augmenter, **train_kw),
        validation=make("validation"), test=make("test"),
        input_shape=tuple(model_shape), num_classes=splits.num_classes,
        class_names=splits.class_names, source=describe_source(data),
        num_examples={name: len(splits.split(name)[0]) for name in names},
        batch_size=batch_size, arrays=splits, extras=dict(splits.extras),
        one_hot_labels=bool(one_hot_classes), examples=examples)


def _cache_file(folder, split, what):
    """The `tf.data` snapshot folder of a split (None: no disk cache), named by what it holds."""
    if folder is None:
        return None
    os.makedirs(folder, exist_ok=True)
    import hashlib
    tag = hashlib.sha256(repr(what).encode()).hexdigest()[:12]
    return os.path.join(folder, f"{split}-{tag}")
