"""Text classification data: CSV / folder / TFDS sources -> raw-string splits.

`TextHooks` (the hooks of the token classifiers) reads a text source into
stratified, seeded train/validation/test splits of raw strings, and
`wrap_model` puts a `keras.layers.TextVectorization` adapted on the TRAINING
split only in front of the token model, so the trained, saved and exported
model takes a batch of raw strings:

    zoo train lstm_classifier --data csv:reviews.csv --text-column text --label-column label

Sources:
    csv:PATH        a text column and a label column (options text_column,
                    label_column; defaults "text" and "label")
    folder:PATH     one sub-folder of text files per class
    tfds:NAME       a prepared TFDS text dataset with (text, label), e.g.
                    tfds:imdb_reviews (never downloaded here)
"""

import csv
import os

import numpy as np

from zoo import checks
from zoo.tasks import TaskHooks

DEFAULT_TEXT_COLUMN = "text"
DEFAULT_LABEL_COLUMN = "label"


def _read_csv(path, text_column, label_column):
    if not os.path.isfile(path):
        raise ValueError(f"File does not exist. Received: data='csv:{path}'")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise ValueError(f"CSV file has no data rows. Received: data='csv:{path}'")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    for arg, column in (("text_column", text_column), ("label_column", label_column)):
        if column not in header:
            raise ValueError(f"{arg} not found in the CSV header {header} of {path}. "
                             f"Received: {arg}={column!r}")
    ti, li = header.index(text_column), header.index(label_column)
    texts, labels, where = [], [], []
    for line, row in enumerate(body, start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank line
        if len(row) != len(header):
            raise ValueError(f"{path} line {line} has {len(row)} fields but the header has "
                             f"{len(header)}.")
        texts.append(row[ti])
        labels.append(row[li].strip())
        where.append(f"{path} line {line}")
    return texts, labels, where


def _read_folder(path):
    if not os.path.isdir(path):
        raise ValueError(f"Text folder does not exist. Received: data='folder:{path}'")
    classes = sorted(d for d in os.listdir(path)
                     if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))
    if not classes:
        raise ValueError(f"Text folder has no class sub-folders. Received: data='folder:{path}'")
    texts, labels, where = [], [], []
    for name in classes:
        folder = os.path.join(path, name)
        for file in sorted(os.listdir(folder)):
            full = os.path.join(folder, file)
            if file.startswith(".") or not os.path.isfile(full):
                continue
            with open(full, encoding="utf-8", errors="replace") as f:
                texts.append(f.read())
            labels.append(name)
            where.append(full)
    if not texts:
        raise ValueError(f"Text folder contains no files. Received: data='folder:{path}'")
    return texts, labels, where, classes


def _read_tfds(name):
    from zoo.data import read_tfds

    train, test, names = read_tfds(name)

    def decode(pairs):
        texts = [text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)
                 for text, _ in pairs]
        return texts, [int(label) for _, label in pairs]

    return decode(train), (decode(test) if test is not None else None), names or []


def _check_texts(texts, where, argument):
    for text, place in zip(texts, where):
        if not text.strip():
            raise ValueError(f"Empty text at {place}: every example needs some text. "
                             f"Received: {argument} with an empty value")


def _encode_labels(labels, classes, argument):
    """Map label strings to ids 0..k-1; `classes` (if given) fixes names and order."""
    missing = sum(1 for lab in labels if not str(lab).strip())
    if missing:
        raise ValueError(f"{argument} has {missing} empty label(s); every example needs one.")
    present = sorted(set(labels), key=lambda s: (not s.lstrip("-").isdigit(),
                                                 int(s) if s.lstrip("-").isdigit() else 0, s))
    if classes is None:
        names = present
    else:
        if isinstance(classes, str):
            classes = [c.strip() for c in classes.split(",") if c.strip()]
        names = [str(c) for c in classes]
        unknown = [lab for lab in present if lab not in names]
        if unknown:
            raise ValueError(f"{argument} has labels {unknown[:5]} that are not among the "
                             f"declared classes {names}. Received: classes={classes!r}")
    if len(names) < 2:
        raise ValueError(f"{argument} must have at least two distinct labels. "
                         f"Received: labels {present}")
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[lab] for lab in labels], "int32"), names


def text_splits(texts, labels, *, class_names, test=None, seed=0, validation_split=0.1,
                test_split=0.2):
    """Stratified, seeded train/validation/test splits of raw strings (`ArraySplits`)."""
    from sklearn.model_selection import train_test_split

    from zoo.data import ArraySplits

    checks.fraction("validation_split", validation_split, low=0.0)
    checks.fraction("test_split", test_split, low=0.0)
    x, y = np.array(texts, dtype=object), np.asarray(labels, "int32")

    def stratify(labels_):
        counts = np.bincount(labels_)
        return labels_ if counts[counts > 0].min() >= 2 else None

    try:
        if test is None:
            x, x_test, y, y_test = train_test_split(x, y, test_size=test_split,
                                                    random_state=seed, stratify=stratify(y))
        else:
            x_test, y_test = np.array(test[0], dtype=object), np.asarray(test[1], "int32")
        x_train, x_val, y_train, y_val = train_test_split(
            x, y, test_size=validation_split, random_state=seed, stratify=stratify(y))
    except ValueError as err:
        raise ValueError(f"Too few examples ({len(texts)}) to split into train/validation/"
                         f"test: {err}") from err
    return ArraySplits(x_train, y_train, x_val, y_val, x_test, y_test,
                       class_names=list(class_names), num_classes=len(class_names))


def _vocab_size(model):
    for layer in model._flatten_layers(include_self=False):
        if hasattr(layer, "vocab_size"):  # PositionalEmbedding
            return int(layer.vocab_size)
        if hasattr(layer, "input_dim") and type(layer).__name__ == "Embedding":
            return int(layer.input_dim)
    raise ValueError(f"Model {model.name!r} has no token embedding to size a vocabulary for.")


def vectorizer(texts, *, vocab_size, sequence_length):
    """A TextVectorization layer adapted on `texts` (0 pads, 1 is out-of-vocabulary)."""
    import keras

    layer = keras.layers.TextVectorization(max_tokens=vocab_size, output_mode="int",
                                           output_sequence_length=sequence_length,
                                           name="text_vectorization")
    layer.adapt(np.asarray(texts, dtype=object).astype(str), batch_size=256)
    return layer


def with_text_input(model, train_texts):
    """`model` (int token ids) behind a TextVectorization adapted on `train_texts`."""
    import keras

    if model.inputs[0].dtype == "string":
        return model  # already takes raw strings (e.g. a resumed run)
    sequence_length = model.inputs[0].shape[1]
    layer = vectorizer(train_texts, vocab_size=_vocab_size(model),
                       sequence_length=sequence_length)
    inputs = keras.Input(shape=(), dtype="string", name="text")
    # Identity names the served output "predictions", as in every other family.
    outputs = keras.layers.Identity(name="predictions")(model(layer(inputs)))
    return keras.Model(inputs, outputs, name=f"{model.name}_text")


class TextHooks(TaskHooks):
    """Raw-text sources and a vocabulary layer for the token classifiers."""

    # load_source also receives seed, validation_split, test_split and classes.
    data_options = {
        "text_column": "CSV column holding the text (default 'text')",
        "label_column": "CSV column holding the label (default 'label')",
        "sequence_length": "tokens per text; longer texts are truncated",
    }


    def load_source(self, spec, source, options):
        if not isinstance(source, str):
            return None
        prefix, _, rest = source.partition(":")
        options = dict(options or {})
        seed = options.get("seed", 0)
        validation_split = options.get("validation_split", 0.1)
        test_split = options.get("test_split", 0.2)
        classes = options.get("classes")
        test = None
        if prefix == "csv":
            text_column = options.get("text_column") or DEFAULT_TEXT_COLUMN
            label_column = options.get("label_column") or DEFAULT_LABEL_COLUMN
            texts, labels, where = _read_csv(rest, text_column, label_column)
            if not texts:
                raise ValueError(f"CSV file has no data rows. Received: data='csv:{rest}'")
            _check_texts(texts, where, f"text_column={text_column!r}")
            y, names = _encode_labels(labels, classes, f"label_column={label_column!r}")
        elif prefix == "folder":
            texts, labels, where, folders = _read_folder(rest)
            _check_texts(texts, where, f"data='folder:{rest}'")
            y, names = _encode_labels(labels, classes if classes is not None else folders,
                                      f"data='folder:{rest}' (class sub-folders)")
        elif prefix == "tfds":
            (texts, y), test, names = _read_tfds(rest)
            if not texts:
                raise ValueError(f"TFDS dataset has no examples. Received: data={source!r}")
            names = names or [str(i) for i in range(max(y) + 1)]
            if classes is not None:
                # tfds labels are ids; declared classes must name every one of them.
                argument = f"data={source!r}"
                original = names
                y, names = _encode_labels([original[i] for i in y], classes, argument)
                if test is not None:
                    test_y, _ = _encode_labels([original[i] for i in test[1]], names, argument)
                    test = (test[0], test_y)
        else:
            return None
        splits = text_splits(texts, y, class_names=names, test=test, seed=seed,
                             validation_split=validation_split, test_split=test_split)
        sequence_length = options.get("sequence_length")
        if sequence_length is not None:
            splits.extras["sequence_length"] = checks.positive_int("sequence_length",
                                                                   sequence_length)
        return splits

    def prepare_data(self, spec, bundle):
        import dataclasses

        if len(bundle.input_shape) == 0:
            # Raw strings: the token model keeps its own sequence length (the
            # vectorizer pads or truncates every text to it).
            length = bundle.extras.get("sequence_length", spec.input_shape[0])
            bundle = dataclasses.replace(bundle, input_shape=(int(length),))
        return bundle

    def wrap_model(self, model, bundle):
        x_train = bundle.arrays.x_train
        if x_train.dtype.kind not in "OUS":
            return model  # already token ids
        return with_text_input(model, x_train)
