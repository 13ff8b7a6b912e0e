"""Image sources as an index: file paths (or TFRecord shards) and labels, decoded lazily.

A `folder:PATH` of images becomes an `ImageIndex` (relative paths, labels
from the sorted sub-folder names, as Keras's `image_dataset_from_directory`
infers them) without decoding a single image; `zoo.data.pipeline` decodes
and resizes inside a parallel `tf.data` map, so memory does not grow with
the folder.  Before training, a cheap header pass finds files TensorFlow
cannot decode (not an image, a format it does not read, a truncated JPEG
or PNG); its result is cached under `<KERAS_HOME>/zoo_index/`, keyed by the
folder's listing (names, sizes, modification times), so a second run over
the same folder starts at once.

A `tfrecord:GLOB` of image-classification shards in the common layout
(`image/encoded` JPEG/PNG bytes, `image/class/label` int64, as the TF Model
Garden and ImageNet conversion scripts write them) becomes a `RecordIndex`:
the file list and one label per record, read in one pass over the label
feature only (cached the same way).

Nothing here imports TensorFlow at module level.
"""

import dataclasses
import glob
import hashlib
import os
import sys
import time

import numpy as np

from zoo import io as zio
from zoo.readers import class_folders, listing_key

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# Formats `tf.io.decode_image` reads (PIL's names for them).
DECODABLE_FORMATS = ("JPEG", "PNG", "GIF", "BMP")
# The common TFRecord layout (Model Garden `tfexample_utils`, ImageNet's
# build_imagenet_data.py): encoded image bytes and an int64 class id.
IMAGE_KEY = "image/encoded"
LABEL_KEY = "image/class/label"
# Show the header pass's progress bar from this many files on.
PROGRESS_FROM = 2000
INDEX_VERSION = 1


def cache_dir():
    """Where header-pass and label-pass results are cached: <KERAS_HOME>/zoo_index."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "zoo_index")


@dataclasses.dataclass
class ImageIndex:
    """The images of a folder: paths relative to `root`, int32 labels, class names."""

    root: str
    paths: np.ndarray
    labels: np.ndarray
    class_names: list
    listing: str
    counts: np.ndarray
    skipped: list = dataclasses.field(default_factory=list)

    def full_paths(self, relative):
        return np.array([os.path.join(self.root, p) for p in relative], dtype=object)


@dataclasses.dataclass
class RecordIndex:
    """TFRecord shards: sorted files, records per file, one int label per record."""

    pattern: str
    files: list
    counts: list
    labels: np.ndarray
    listing: str


# ---------------------------------------------------------------------- listing


def _listing_key(root, entries, what):
    """A hash of the files' names, sizes and modification times (the cache key)."""
    return listing_key(root, entries, what, INDEX_VERSION)


def list_folder(path):
    """(class names, [(relative path, label, size, mtime_ns)]) of an image folder.

    Sub-folders are the classes, sorted; each is walked recursively (links
    not followed), keeping files with an image extension (any case) in
    sorted order, as Keras's `image_dataset_from_directory` lists them.
    """
    classes = class_folders(path, "Image")
    files = []
    for label, name in enumerate(classes):
        top = os.path.join(path, name)
        for folder, dirs, names in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for file in sorted(names):
                if file.startswith(".") or not file.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                full = os.path.join(folder, file)
                try:
                    st = os.stat(full)
                except OSError:
                    continue  # vanished or a dangling link: not an image we can read
                files.append((os.path.relpath(full, path), label, st.st_size, st.st_mtime_ns))
    return classes, files


# ------------------------------------------------------------------ header pass


def _tail(f, n):
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - n))
    return f.read()


def image_problem(path):
    """Why TensorFlow would fail to decode `path`, or None when it looks decodable.

    PIL reads the header (and for PNG verifies every chunk's checksum); a JPEG
    must also end with its end-of-image marker (trailing zero padding allowed),
    which catches the usual truncated download.  Cheaper than decoding:
    PIL's `verify` does not decompress the pixels.
    """
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            kind = image.format
            if kind not in DECODABLE_FORMATS:
                return f"{kind} images are not decodable by TensorFlow"
            image.verify()
        if kind == "JPEG":
            with open(path, "rb") as f:
                if not _tail(f, 64).rstrip(b"\0").endswith(b"\xff\xd9"):
                    return "truncated JPEG (no end-of-image marker)"
    except UnidentifiedImageError:
        return "not an image"
    except (OSError, SyntaxError, ValueError) as err:  # PIL raises these for damaged data
        return f"damaged ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    return None


def _progress(total, what):
    if total < PROGRESS_FROM:
        return None
    import keras
    print(f"{what}: {total} files (cached for the next run)", file=sys.stderr)
    return keras.utils.Progbar(total, unit_name="file")


def _cached(key):
    path = os.path.join(cache_dir(), f"{key}.json")
    try:
        return zio.read_json(path, None, max_bytes=256 * 2 ** 20)
    except (OSError, ValueError):
        return None  # a damaged cache entry is simply redone


def _store(key, value):
    try:
        os.makedirs(cache_dir(), exist_ok=True)
        zio.write_json(os.path.join(cache_dir(), f"{key}.json"), value, indent=None)
    except OSError:
        pass  # a read-only home only costs the next run another pass


def check_headers(root, relative, key):
    """{relative path: problem} of the files TensorFlow cannot decode (cached by `key`)."""
    found = _cached(key)
    if isinstance(found, dict) and isinstance(found.get("bad"), dict):
        return found["bad"]
    bad, bar = {}, _progress(len(relative), "Checking image headers")
    for n, rel in enumerate(relative):
        problem = image_problem(os.path.join(root, rel))
        if problem:
            bad[rel] = problem
        if bar is not None and ((n + 1) % 200 == 0 or n + 1 == len(relative)):
            bar.update(n + 1)
    _store(key, {"bad": bad, "files": len(relative), "written": time.time()})
    return bad


def index_folder(path, *, skip_bad_images=False):
    """The `ImageIndex` of a `folder:PATH` source: listed, labelled, header-checked.

    Args:
        path: the folder (one sub-folder of images per class).
        skip_bad_images: leave out files that cannot be decoded instead of
            failing on the first. Defaults to False.
    """
    source = f"data='folder:{path}'"
    classes, files = list_folder(path)
    if not files:
        raise ValueError(f"Image folder contains no images ({', '.join(IMAGE_EXTENSIONS)}). "
                         f"Received: {source}")
    listing = _listing_key(path, [(f[0], f[2], f[3]) for f in files], "folder")
    relative = [f[0] for f in files]
    bad = check_headers(path, relative, listing)
    if bad and not skip_bad_images:
        first = next(rel for rel in relative if rel in bad)
        more = f" ({len(bad) - 1} more bad file(s))" if len(bad) > 1 else ""
        raise ValueError(f"Image folder: {os.path.join(path, first)} cannot be decoded as an "
                         f"image ({bad[first]}){more}; remove or replace it, or pass "
                         f"skip_bad_images=True (--skip-bad-images). Received: {source}")
    if bad:
        print(f"Skipping {len(bad)} of {len(files)} image(s) that cannot be decoded (the first: "
              f"{os.path.join(path, min(bad))}: {bad[min(bad)]}).", file=sys.stderr)
    keep = [f for f in files if f[0] not in bad]
    counts = np.bincount([f[1] for f in keep], minlength=len(classes))
    if not keep:
        raise ValueError(f"Image folder contains no decodable images. Received: {source}")
    return ImageIndex(root=os.path.abspath(path),
                      paths=np.array([f[0] for f in keep], dtype=object),
                      labels=np.array([f[1] for f in keep], "int32"), class_names=classes,
                      listing=listing, counts=counts, skipped=sorted(bad.items()))


def check_class_counts(counts, class_names, source, *, selected=None):
    """Refuse an empty class sub-folder (among the `selected` class ids, if given)."""
    ids = range(len(class_names)) if selected is None else selected
    empty = [class_names[i] for i in ids if counts[i] == 0]
    if empty:
        raise ValueError(f"Image folder: class sub-folder(s) {empty} hold no decodable images; "
                         f"every class needs examples (or pass classes= to leave it out). "
                         f"Received: {source}")


# ---------------------------------------------------------------------- TFRecord


def record_files(pattern):
    """The sorted files matching a `tfrecord:GLOB` (a folder means every file in it)."""
    source = f"data='tfrecord:{pattern}'"
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, "*")
    files = sorted(f for f in glob.glob(pattern) if os.path.isfile(f))
    if not files:
        raise ValueError(f"No TFRecord files match. Received: {source}")
    return files


def index_records(pattern):
    """The `RecordIndex` of `tfrecord:GLOB`: one pass over the label feature, cached.

    Only `image/class/label` is parsed (the image bytes are read from disk but
    never decoded); the result is cached by the shards' names, sizes and
    modification times.
    """
    import tensorflow as tf
    source = f"data='tfrecord:{pattern}'"
    files = record_files(pattern)
    stats = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    listing = _listing_key(os.path.dirname(files[0]), stats, "tfrecord")
    found = _cached(listing)
    if isinstance(found, dict) and isinstance(found.get("counts"), list):
        counts, labels = found["counts"], np.asarray(found["labels"], "int32")
    else:
        spec = {LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
        counts, parts = [], []
        bar = _progress(len(files), "Reading TFRecord labels")
        for n, file in enumerate(files):
            ds = tf.data.TFRecordDataset(file).map(
                lambda r: tf.io.parse_single_example(r, spec)[LABEL_KEY],
                num_parallel_calls=tf.data.AUTOTUNE).batch(4096)
            try:
                got = [b.numpy() for b in ds]
            except tf.errors.OpError as err:
                raise ValueError(f"{file} is not a TFRecord file of image examples with an int64 "
                                 f"{LABEL_KEY!r} feature ({err.message.splitlines()[0]}). "
                                 f"Received: {source}") from None
            labels = np.concatenate(got) if got else np.zeros((0,), "int64")
            counts.append(int(len(labels)))
            parts.append(labels)
            if bar is not None:
                bar.update(n + 1)
        labels = np.concatenate(parts).astype("int64")
        if labels.size and (labels.min() < 0 or labels.max() > np.iinfo("int32").max):
            raise ValueError(f"{LABEL_KEY} must hold class ids 0..k-1. Received: labels from "
                             f"{int(labels.min())} to {int(labels.max())} in {source}")
        labels = labels.astype("int32")
        _store(listing, {"counts": counts, "labels": labels.tolist(), "written": time.time()})
    if not sum(counts):
        raise ValueError(f"The TFRecord files hold no records. Received: {source}")
    return RecordIndex(pattern=pattern, files=files, counts=list(counts), labels=labels,
                       listing=listing)


def record_probe(files):
    """(height, width, channels) of the first record's image (decoded once), for messages."""
    import tensorflow as tf
    spec = {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}
    for record in tf.data.TFRecordDataset(files[:1]).take(1):
        encoded = tf.io.parse_single_example(record, spec)[IMAGE_KEY]
        return tuple(int(d) for d in tf.io.decode_image(encoded, expand_animations=False).shape)
    return None


# --------------------------------------------------------------------- decoding


def decoder(image_size, channels):
    """A `tf.data` map function: encoded image bytes -> float32 (H, W, C) in [0, 1].

    `decode_image` with fixed channels (grayscale and RGBA become `channels`),
    bilinear `resize` to `image_size` as Keras's directory loader does.
    """
    import tensorflow as tf
    height, width = int(image_size[0]), int(image_size[1])

    def decode(encoded):
        image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
        image = tf.image.resize(image, (height, width))
        image.set_shape((height, width, channels))
        return image / 255.0

    return decode


def manifest_hash(paths):
    """A short hash of a list of relative paths (one split)."""
    return hashlib.sha256("\n".join(map(str, paths)).encode()).hexdigest()[:16]


def describe_change(recorded, current, limit=3):
    """"N added (e.g. ...), M removed (e.g. ...)" between two path lists, or ''."""
    recorded, current = set(recorded), set(current)
    added, removed = sorted(current - recorded), sorted(recorded - current)
    parts = []
    if added:
        parts.append(f"{len(added)} file(s) added (e.g. {', '.join(added[:limit])})")
    if removed:
        parts.append(f"{len(removed)} file(s) removed (e.g. {', '.join(removed[:limit])})")
    return "; ".join(parts)

