"""Raw arrays -> validated train / validation / test splits (`ArraySplits`).

Two ways to split, shared by every source:

- `make_splits`: seeded random splits, stratified by class for
  classification (numeric arrays, raw strings or token sequences); the
  generic sources (`zoo.data`), text (`zoo.tasks.text`) and seq2seq pairs
  (`zoo.tasks.seq2seq`) all split here.
- `series_splits`: chronological splits of a time series, each part cut
  into (lookback, horizon) windows separately (`zoo.tasks.timeseries`).

Every split is validated (non-empty, finite, labels in range) before
TensorFlow sees it.  Nothing here imports TensorFlow.
"""

import dataclasses
from typing import Optional

import numpy as np

from zoo import checks


@dataclasses.dataclass
class ArraySplits:
    """Validated numpy splits; `y_*` is None for unlabeled data."""

    x_train: np.ndarray
    y_train: Optional[np.ndarray]
    x_val: np.ndarray
    y_val: Optional[np.ndarray]
    x_test: np.ndarray
    y_test: Optional[np.ndarray]
    class_names: Optional[list] = None
    num_classes: Optional[int] = None
    extras: dict = dataclasses.field(default_factory=dict)

    def split(self, name):
        """(x, y) of "train", "validation" or "test"."""
        key = {"train": "train", "validation": "val", "test": "test"}[name]
        return getattr(self, f"x_{key}"), getattr(self, f"y_{key}")


@dataclasses.dataclass
class IndexSplits(ArraySplits):
    """Splits of a source that streams from disk: `x_*` are example ids, never pixels or texts.

    The ids index `index` (a `zoo.images.ImageIndex` or `zoo.readers.TextIndex`:
    `index.paths[id]`; a `zoo.images.RecordIndex`: the id-th record across
    the sorted shards; a `zoo.streams.StreamIndex`: the id-th example of the
    stream); `y_*` are the (possibly relabelled) class ids; `image_shape` is
    the (height, width, channels) each example is decoded to, () for texts.
    """

    index: object = None
    image_shape: tuple = ()

    def manifest(self):
        """What identifies this split: source listing, sizes, and per-split hashes."""
        from zoo.images import manifest_hash
        return {"listing": self.index.listing,
                "counts": {name: int(len(self.split(name)[0]))
                           for name in ("train", "validation", "test")},
                "hashes": {name: manifest_hash(self.names(name))
                           for name in ("train", "validation", "test")}}

    def names(self, split):
        """The examples of `split` by name: relative paths, or "FILE#RECORD" of TFRecords."""
        ids = self.split(split)[0]
        paths = getattr(self.index, "paths", None)
        if paths is not None:
            return [str(p) for p in paths[ids]]
        starts = np.cumsum([0] + list(self.index.counts))
        file_of = np.searchsorted(starts, ids, side="right") - 1
        return [f"{self.index.files[f].rsplit('/', 1)[-1]}#{int(i - starts[f])}"
                for f, i in zip(file_of, ids)]


def index_splits(index, *, image_shape, class_names=None, seed=0, validation_split=0.1,
                 test_split=0.2, classes=None):
    """`make_splits` on an index: ids and labels are split, nothing is decoded.

    Args:
        index: a `zoo.images.ImageIndex` or `RecordIndex`, a `zoo.readers.TextIndex`
            (has `labels`).
        image_shape: (height, width, channels) examples decode to.
        class_names: names of the class ids. Defaults to None.
        seed / validation_split / test_split / classes: as in `make_splits`.
    """
    ids = np.arange(len(index.labels), dtype="int64")
    splits = make_splits((ids, index.labels), None, task="classification",
                         class_names=class_names, seed=seed, validation_split=validation_split,
                         test_split=test_split, classes=classes)
    fields = {f.name: getattr(splits, f.name) for f in dataclasses.fields(splits)}
    # Each split in file order: reads are sequential, and the order is the
    # same whatever train_test_split's permutation was.
    for key in ("train", "val", "test"):
        order = np.argsort(fields[f"x_{key}"], kind="stable")
        fields[f"x_{key}"] = fields[f"x_{key}"][order]
        fields[f"y_{key}"] = fields[f"y_{key}"][order]
    return IndexSplits(**fields, index=index, image_shape=tuple(image_shape))


def stream_splits(index, *, image_shape, class_names=None, seed=0, validation_split=0.1,
                  test_split=0.2, classes=None):
    """`IndexSplits` of a `zoo.streams.StreamIndex`: its parts' roles decide what is carved.

    One part ("all"): train, validation and test are carved from it as by
    `index_splits`.  ("all", "validation"): the given validation part is
    kept; test is carved from the first part (`test_split`).  ("train",
    "validation", "test"): each part is its split, validated and relabelled
    the same way.
    """
    roles = tuple(index.roles)
    if roles == ("all",):
        return index_splits(index, image_shape=image_shape, class_names=class_names, seed=seed,
                            validation_split=validation_split, test_split=test_split,
                            classes=classes)
    starts = np.cumsum([0] + list(index.counts))
    parts = [(np.arange(starts[i], starts[i + 1], dtype="int64"),
              index.labels[starts[i]:starts[i + 1]]) for i in range(len(roles))]
    if roles == ("all", "validation"):
        # make_splits carves its "validation" from train and keeps the given
        # part as "test": carve by test_split, then swap the two roles.
        splits = make_splits(parts[0], parts[1], class_names=class_names, seed=seed,
                             validation_split=test_split, test_split=test_split,
                             classes=classes)
        fields = {f.name: getattr(splits, f.name) for f in dataclasses.fields(splits)}
        fields.update(x_val=splits.x_test, y_val=splits.y_test, x_test=splits.x_val,
                      y_test=splits.y_val)
    else:
        (x, y), val, test = parts
        for what, (xs, ys) in zip(("train", "validation", "test"), parts):
            validate_xy(xs, ys, what=what)
        _, _, val, _, _ = _class_ids(x, y, val, classes, class_names)
        x, y, test, names, num_classes = _class_ids(x, y, test, classes, class_names)
        for what, (xs, ys) in (("validation", val), ("test", test)):
            validate_xy(xs, ys, what=what, num_classes=num_classes)
        _check_classes_present(y, what="train split")
        fields = dict(x_train=x, y_train=y, x_val=val[0], y_val=val[1], x_test=test[0],
                      y_test=test[1], class_names=list(names) if names else None,
                      num_classes=num_classes)
    return IndexSplits(**fields, index=index, image_shape=tuple(image_shape))


# ------------------------------------------------------------- arrays: one rule set


def _place(where, n, argument):
    return where[n] if where is not None else f"{argument}[{n}]"


def _from_one_hot(y, argument):
    """Class ids of one-hot rows (N, K); soft or multi-hot rows are refused."""
    values = np.asarray(y, "float64")
    hard = np.isin(values, (0.0, 1.0)).all(axis=1) & (values.sum(axis=1) == 1)
    if not hard.all():
        n = int(np.argmin(hard))
        raise ValueError(f"{argument} of shape {tuple(y.shape)} must be one-hot (one 1 per row, "
                         f"else 0) or class ids of shape (N,) or (N, 1); soft or multi-label "
                         f"rows are not read. Received: {argument}[{n}]="
                         f"{np.round(values[n][:10], 4).tolist()}")
    return values.argmax(axis=1)


def _numeric_labels(values, argument, where):
    """float64 labels -> int64 class ids: finite, whole, within int32."""
    bad = ~np.isfinite(values)
    if bad.any():
        n = int(np.argmax(bad))
        raise ValueError(f"{argument} has {int(bad.sum())} missing or infinite label(s) "
                         f"(the first, {values[n]}, at {_place(where, n, argument)}); every "
                         f"example needs a class label.")
    fractional = np.mod(values, 1) != 0
    if fractional.any():
        n = int(np.argmax(fractional))
        raise ValueError(f"Classification labels must be integers (class ids 0..k-1) or names. "
                         f"Received: {argument} labels like {values[fractional][:3].tolist()} "
                         f"(the first at {_place(where, n, argument)})")
    large = np.abs(values) > np.iinfo("int32").max
    if large.any():
        n = int(np.argmax(large))
        raise ValueError(f"Labels must be class ids 0..k-1. Received: {argument} label "
                         f"{values[n]:g} at {_place(where, n, argument)}")
    return values.astype("int64")


def class_labels(y, *, argument="y", where=None):
    """Classification labels as int64 class ids, by the one rule for every array source.

    - Shape (N,) or (N, 1) (what many Keras loaders give): squeezed.
    - One-hot (N, K): the class ids (argmax), with K classes.  Training
      keeps integer ids (stratified splits, `classes=`, the sparse losses);
      `one_hot=True` or MixUp/CutMix one-hot them again in the pipeline.
    - Numbers (ints, or floats / strings that are whole numbers): kept as
      class ids; NaN, inf, fractions and values beyond int32 are refused,
      naming the first place.
    - Names (strings, bytes): encoded as `zoo.readers.encode_labels` does
      for a CSV (numbers first, then names), the names recorded.

    Args:
        y: the labels (any array-like).
        argument: what they came from, for messages. Defaults to "y".
        where: each label's place ("PATH line L"), for messages. Defaults to
            None (`argument[i]`).

    Returns:
        (class ids, class names or None).
    """
    from zoo.readers import encode_labels

    y = np.asarray(y)
    names = None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2 and y.dtype.kind in "biuf" and y.shape[1] > 1:
        names = [str(i) for i in range(y.shape[1])]  # K columns: K classes, even unseen ones
        y = _from_one_hot(y, argument)
    if y.ndim != 1:
        raise ValueError(f"{argument} must be class labels of shape (N,), (N, 1) or one-hot "
                         f"(N, K). Received: {argument} of shape {tuple(y.shape)}")
    if y.dtype.kind == "b":
        return y.astype("int64"), names
    if y.dtype.kind in "iu":
        return y.astype("int64"), names
    if y.dtype.kind == "f":
        return _numeric_labels(y.astype("float64"), argument, where), names
    if y.dtype.kind not in "USO":
        raise TypeError(f"{argument} must be numbers or strings. Received: dtype {y.dtype}")
    labels = [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)
              for v in y.tolist()]
    labels = [label.strip() for label in labels]
    numbers = []
    for label in labels:
        try:
            numbers.append(float(label))
        except ValueError:
            break
    if len(numbers) == len(labels):
        return _numeric_labels(np.array(numbers, "float64"), argument, where), None
    for n, label in enumerate(labels):
        try:
            value = float(label)
        except ValueError:
            continue
        if not np.isfinite(value):
            raise ValueError(f"{argument} has a missing label ({label!r} at "
                             f"{_place(where, n, argument)}); every example needs a class "
                             f"label.")
    ids, names = encode_labels(labels, argument=argument, where=where)
    return ids.astype("int64"), names


def normalize_arrays(train, test=None, *, task="classification", class_names=None,
                     where=None, labels="y", source="data"):
    """(x, y) from an npz, a CSV or Python, checked and labelled by one rule set.

    Features must be numbers with at least one feature axis per example
    ((N, features...), never (N,)); classification labels follow
    `class_labels`, the train and test labels encoded together (one set of
    class names); other tasks' targets must be numbers.

    Args:
        train: (x, y).
        test: (x_test, y_test) or None.
        task: "classification" or another task. Defaults to "classification".
        class_names: names of the class ids, if the source has them. Defaults to None.
        where: each training label's place, for messages. Defaults to None.
        labels: what the training labels are called in messages (e.g.
            "label_column='species'"). Defaults to "y".
        source: the source in messages (e.g. "data='npz:d.npz'"). Defaults to "data".

    Returns:
        ((x, y), (x_test, y_test) or None, class names or None).
    """
    parts = [("x", labels, train)] + ([("x_test", "y_test", test)] if test is not None else [])
    xs = []
    for x_name, _, (x, _) in parts:
        x = np.asarray(x)
        if x.ndim < 2:
            raise ValueError(f"Examples need at least one feature axis: {x_name} has shape "
                             f"{tuple(x.shape)} (one number per example, or none). Pass "
                             f"(N, features...), e.g. x[:, None] for one feature. Received: "
                             f"{x_name} of shape {tuple(x.shape)} from {source}")
        if 0 in x.shape[1:]:
            raise ValueError(f"Examples have no features: {x_name} has shape {tuple(x.shape)}. "
                             f"Received: {source}")
        if x.dtype.kind not in "biuf":
            raise ValueError(f"Features must be numeric. Received: {x_name} of dtype {x.dtype} "
                             f"from {source}")
        xs.append(x)
    ys = [np.asarray(y) for _, _, (_, y) in parts]
    if task != "classification":
        for (_, y_name, _), y in zip(parts, ys):
            if y.dtype.kind not in "biuf":
                raise ValueError(f"Targets must be numeric for this task. Received: {y_name} "
                                 f"of dtype {y.dtype} from {source}")
        out = [(x, y) for x, y in zip(xs, ys)]
        return out[0], (out[1] if test is not None else None), class_names
    try:
        ids, names = _joint_labels(parts, ys, where)
    except ValueError as err:
        if where is not None:  # a CSV's messages name the file and line already
            raise
        raise ValueError(f"{err} (in {source})") from None
    if class_names is not None and (names is None or names == [str(i) for i in range(len(names))]):
        names = class_names  # the source's own names over a one-hot's column numbers
    out = [(x, y) for x, y in zip(xs, ids)]
    return out[0], (out[1] if test is not None else None), names


def _joint_labels(parts, ys, where):
    ids, names = [], None
    if len(ys) == 2 and ys[0].dtype.kind in "USO" and ys[1].dtype.kind in "USO":
        # One encoding for both splits: their names together, then cut apart.
        joined = np.concatenate([ys[0].reshape(len(ys[0]), -1), ys[1].reshape(len(ys[1]), -1)])
        both, names = class_labels(joined, argument="y_train and y_test")
        ids = [both[:len(ys[0])], both[len(ys[0]):]]
    else:
        for (_, y_name, _), y, w in zip(parts, ys, (where, None)):
            y_ids, y_names = class_labels(y, argument=y_name, where=w)
            if y_names is not None and names is not None and y_names != names:
                raise ValueError(f"y and y_test must label the same classes. Received: "
                                 f"{names} and {y_names}")
            names = y_names if y_names is not None else names
            ids.append(y_ids)
    return ids, names


def validate_xy(x, y, *, what, task="classification", num_classes=None, texts=False):
    """Check one split: non-empty, matching lengths, finite, labels in range.

    Args:
        x: inputs.
        y: labels or targets, or None.
        what: the split's name in messages.
        task: "classification" checks integer labels in range; any other
            task checks finite targets. Defaults to "classification".
        num_classes: labels must lie in [0, num_classes). Defaults to None.
        texts: the inputs are raw strings rather than numbers. Defaults to False.
    """
    if x is None or len(x) == 0:
        raise ValueError(f"The {what} split is empty. Received: {what} with 0 examples")
    if y is not None and len(y) != len(x):
        raise ValueError(f"The {what} split has {len(x)} inputs but {len(y)} labels.")
    if texts:
        if x.dtype.kind not in "OUS":
            raise ValueError(f"Texts must be strings. Received: {what} inputs of dtype {x.dtype}")
    else:
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
            raise ValueError(f"The {what} split has non-finite feature values (NaN or inf) "
                             f"in {bad} example(s).")
        if x.dtype.kind not in "fiub":
            raise ValueError(f"Features must be numeric. Received: {what} features of dtype "
                             f"{x.dtype}")
    if y is None:
        return
    if task == "classification":
        if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
            raise ValueError(f"Classification labels must be integers. Received: {what} labels "
                             f"like {y[:3].tolist()}")
        if num_classes is not None and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"Labels must lie in [0, {num_classes}). Received: {what} labels "
                             f"from {int(y.min())} to {int(y.max())}")
    elif y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError(f"The {what} split has non-finite targets (NaN or inf).")


def _select_classes(x, y, classes, class_names):
    classes = list(classes)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ValueError(f"classes must list at least two distinct labels. Received: "
                         f"classes={classes!r}")
    present = set(np.unique(y).tolist())
    missing = [c for c in classes if c not in present]
    if missing:
        raise ValueError(f"classes {missing} do not occur in the data. Received: "
                         f"classes={classes!r}; labels present: {sorted(present)}")
    keep = np.isin(y, classes)
    remap = {c: i for i, c in enumerate(classes)}
    names = [class_names[c] for c in classes] if class_names else [str(c) for c in classes]
    return x[keep], np.array([remap[v] for v in y[keep]], "int32"), names


def _stratify(labels, fraction):
    # Stratification needs two examples per class and a held-out part at
    # least as large as the number of classes; otherwise split at random.
    counts = np.bincount(labels)
    present = counts[counts > 0]
    held_out = int(np.ceil(len(labels) * fraction))
    if present.min() < 2 or held_out < len(present) or len(labels) - held_out < len(present):
        return None
    return labels


# A test split smaller than this measures nothing (one example is 20% accuracy).
MIN_TEST_EXAMPLES = 5


def _check_classes_present(y, *, what):
    present = np.unique(y)
    if len(present) < 2:
        raise ValueError(f"The {what} has a single class (every label is {int(present[0])}): "
                         f"a classifier needs examples of at least two classes. Received: "
                         f"{len(y)} examples, all labelled {int(present[0])}")


def _class_ids(x, y, test, classes, class_names):
    """Labels as int32 class ids 0..k-1 (only `classes`, relabelled, when given), checked.

    Returns (x, y, test, class_names, num_classes).
    """
    for labels in (y, test[1] if test is not None else y):
        if labels.size and np.abs(labels.astype("float64")).max() > np.iinfo("int32").max:
            raise ValueError(f"Labels must be class ids 0..k-1. Received: labels up to "
                             f"{labels.astype('float64').max():.0f}")
    y = y.astype("int64").astype("int32")
    if test is not None:
        test = (test[0], test[1].astype("int64").astype("int32"))
    if classes is not None:
        x, y, class_names = _select_classes(x, y, classes, class_names)
        if test is not None:
            tx, ty, _ = _select_classes(test[0], test[1], classes, None)
            test = (tx, ty)
    if y.min() < 0:
        raise ValueError(f"Labels must be non-negative integers. Received: labels from "
                         f"{int(y.min())} to {int(y.max())}")
    num_classes = len(class_names) if class_names else int(y.max()) + 1
    if y.max() >= num_classes:
        raise ValueError(f"Labels must lie in [0, {num_classes}) for the {num_classes} "
                         f"class names. Received: labels up to {int(y.max())}")
    _check_classes_present(y, what="data")
    examples = len(y) + (len(test[1]) if test is not None else 0)
    if not class_names and num_classes > examples:
        raise ValueError(f"Labels must be class ids 0..k-1: the largest label, "
                         f"{int(y.max())}, implies {num_classes} classes but there are only "
                         f"{examples} examples. Received: labels up to {int(y.max())}")
    return x, y, test, class_names, num_classes


def make_splits(train, test, *, task="classification", class_names=None, seed=0,
                validation_split=0.1, test_split=0.2, classes=None, texts=False):
    """Validate raw arrays and split them: seeded, stratified for classification.

    Args:
        train: (x, y) to split into train and validation (and test, when
            `test` is None).
        test: (x, y) of a source's own test split, or None.
        task: "classification" (integer labels, stratified) or anything else
            (targets split at random). Defaults to "classification".
        class_names: names of the class ids. Defaults to None.
        seed: split seed. Defaults to 0.
        validation_split: fraction of `train` held out for validation. Defaults to 0.1.
        test_split: fraction of `train` held out for test when `test` is None.
            Defaults to 0.2.
        classes: keep only these labels, relabelled 0..k-1. Defaults to None.
        texts: x holds raw strings (kept as an object array). Defaults to False.
    """
    from sklearn.model_selection import train_test_split

    checks.fraction("validation_split", validation_split, low=0.0)
    checks.fraction("test_split", test_split, low=0.0)
    if validation_split <= 0 or (test is None and test_split <= 0):
        raise ValueError(f"validation_split and test_split must be > 0. Received: "
                         f"validation_split={validation_split}, test_split={test_split}")
    as_x = (lambda a: np.array(a, dtype=object)) if texts else np.asarray
    x, y = as_x(train[0]), np.asarray(train[1])
    if test is not None:
        test = (as_x(test[0]), np.asarray(test[1]))
    validate_xy(x, y, what="input", task=task, texts=texts)
    if test is not None and not texts and x.shape[1:] != np.shape(test[0])[1:]:
        raise ValueError(f"The test inputs have examples of shape {tuple(np.shape(test[0])[1:])} "
                         f"but the training inputs {tuple(x.shape[1:])}; both splits must have "
                         f"the same features. Received: x_train of shape {tuple(x.shape)}, "
                         f"x_test of shape {tuple(np.shape(test[0]))}")
    if task == "classification":
        x, y, test, class_names, num_classes = _class_ids(x, y, test, classes, class_names)
    else:
        num_classes = None

    def stratify(labels, fraction):
        return _stratify(labels, fraction) if task == "classification" else None

    try:
        if test is None:
            x, x_test, y, y_test = train_test_split(
                x, y, test_size=test_split, random_state=seed, stratify=stratify(y, test_split))
        else:
            x_test, y_test = test
        x_train, x_val, y_train, y_val = train_test_split(
            x, y, test_size=validation_split, random_state=seed,
            stratify=stratify(y, validation_split))
    except ValueError as err:
        raise ValueError(f"Too few examples ({len(x)}) to split into train/validation/test: "
                         f"{err}") from err
    for what, xs, ys in (("train", x_train, y_train), ("validation", x_val, y_val),
                         ("test", x_test, y_test)):
        validate_xy(xs, ys, what=what, task=task, num_classes=num_classes, texts=texts)
    if len(x_test) < MIN_TEST_EXAMPLES:
        where = ("the data's own test split" if test is not None else
                 f"test_split={test_split} of {len(x) + len(x_test)} examples")
        raise ValueError(f"The test split has {len(x_test)} examples ({where}); at least "
                         f"{MIN_TEST_EXAMPLES} are needed for a test metric to mean anything. "
                         f"Use more data or a larger test_split. Received: "
                         f"test_split={test_split}")
    if task == "classification":
        _check_classes_present(y_train, what="train split")
    return ArraySplits(x_train, y_train, x_val, y_val, x_test, y_test,
                       class_names=list(class_names) if class_names else None,
                       num_classes=num_classes)


# ----------------------------------------------------------------------- time series


def windows(values, target_index, lookback, horizon):
    """All (lookback, horizon) windows of `values` (rows, columns), in time order.

    Returns x (n, lookback, columns) and y (n, horizon, len(target_index)).
    """
    from numpy.lib.stride_tricks import sliding_window_view

    total = lookback + horizon
    if len(values) < total:
        return (np.zeros((0, lookback, values.shape[1]), "float32"),
                np.zeros((0, horizon, len(target_index)), "float32"))
    # sliding_window_view: (n, columns, total) views without copying.
    w = sliding_window_view(values, total, axis=0).transpose(0, 2, 1)
    x = w[:, :lookback, :]
    y = w[:, lookback:, :][:, :, target_index]
    return np.ascontiguousarray(x, "float32"), np.ascontiguousarray(y, "float32")


def estimate_season(series, max_lag):
    """The lag in [2, max_lag] with the highest autocorrelation, or None if none is positive."""
    series = np.asarray(series, "float64")
    series = series - series.mean()
    denom = float((series ** 2).sum())
    if denom == 0 or max_lag < 2:
        return None
    acf = [float((series[lag:] * series[:-lag]).sum()) / denom
           for lag in range(2, min(max_lag, len(series) - 1) + 1)]
    if not acf or max(acf) <= 0:
        return None
    return int(np.argmax(acf)) + 2


def series_splits(values, *, columns, targets, lookback, horizon, validation_split=0.1,
                  test_split=0.2, season=None, source="arrays"):
    """Chronological, windowed `ArraySplits` of a (rows, columns) series.

    Args:
        values: float array (rows, columns) in time order.
        columns: the column names.
        targets: names of the target columns (a subset of `columns`).
        lookback: input window length.
        horizon: steps to forecast.
        validation_split: fraction of rows (after train) for validation. Defaults to 0.1.
        test_split: fraction of the last rows for test. Defaults to 0.2.
        season: seasonal-naive period, None to estimate it, or False for
            none. Defaults to None.
        source: name used in messages. Defaults to "arrays".
    """
    lookback = checks.positive_int("lookback", lookback)
    horizon = checks.positive_int("horizon", horizon)
    checks.fraction("validation_split", validation_split, low=0.0)
    checks.fraction("test_split", test_split, low=0.0)
    if validation_split <= 0 or test_split <= 0 or validation_split + test_split >= 1:
        raise ValueError("validation_split and test_split must be > 0 and sum to < 1. Received: "
                         f"validation_split={validation_split}, test_split={test_split}")
    values = np.asarray(values, "float32")
    if values.ndim == 1:
        values = values[:, None]
    if not np.isfinite(values).all():
        row, col = np.argwhere(~np.isfinite(values))[0]
        raise ValueError(f"Column {columns[col]!r} has a non-finite value at row {row}.")
    target_index = [columns.index(t) for t in targets]
    n = len(values)
    n_test = int(round(n * test_split))
    n_val = int(round(n * validation_split))
    n_train = n - n_val - n_test
    need = lookback + horizon
    parts = {"train": values[:n_train], "validation": values[n_train:n_train + n_val],
             "test": values[n_train + n_val:]}
    for part, rows in parts.items():
        if len(rows) < need:
            raise ValueError(
                f"The series in {source} is too short: its {part} part has {len(rows)} rows "
                f"but one window needs lookback + horizon = {need} rows ({n} rows in all, "
                f"split chronologically {1 - validation_split - test_split:.2f}/"
                f"{validation_split}/{test_split}). Use a longer series or smaller "
                f"lookback/horizon. Received: lookback={lookback}, horizon={horizon}")
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (
        windows(parts[p], target_index, lookback, horizon)
        for p in ("train", "validation", "test"))
    if len(targets) == 1:
        y_tr, y_va, y_te = y_tr[..., 0], y_va[..., 0], y_te[..., 0]
    train = parts["train"].astype("float64")
    std = train.std(axis=0)
    # A constant training column would divide by zero; 1 leaves it centred.
    std = np.where(std > 0, std, 1.0)
    if season is None:
        season = estimate_season(train[:, target_index[0]], lookback)
    elif season is not False:
        season = checks.positive_int("season", season)
        if season > lookback:
            raise ValueError(f"season must be at most lookback={lookback} (the baseline reads "
                             f"it from the window). Received: season={season}")
    extras = {
        "columns": list(columns), "targets": list(targets), "target_index": target_index,
        "lookback": lookback, "horizon": horizon, "season": season or None,
        "feature_mean": train.mean(axis=0).tolist(), "feature_var": (std ** 2).tolist(),
        "target_mean": train.mean(axis=0)[target_index].tolist(),
        "target_std": std[target_index].tolist(),
        "rows": {"train": n_train, "validation": n_val, "test": n - n_train - n_val},
        # zoo.training builds the forecaster for what the data asks.
        "builder_kwargs": {"horizon": horizon, "num_targets": len(targets)},
    }
    return ArraySplits(x_tr, y_tr, x_va, y_va, x_te, y_te, extras=extras)
