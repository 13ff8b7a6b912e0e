"""Readers of files and prepared datasets: a source on disk -> Python lists and numpy arrays.

The one place that parses a CSV file, indexes a text folder, reads a prepared
TensorFlow Datasets split, and turns label strings into class ids.  The
generic sources (`zoo.data`) and the task hooks (`zoo.tasks.text`,
`zoo.tasks.timeseries`) all read through here; splitting the result is
`zoo.splits`' job.  Nothing here imports TensorFlow at module level or
knows about models or tasks.

- `read_csv`: header row, blank lines skipped, every row as wide as the
  header, file line numbers kept for messages.
- `encode_labels`: label strings -> ids 0..k-1, one order for every source.
- `numeric_table`: the numeric columns of a CSV (time series).
- `read_texts`: (texts, labels) of a `csv:` or `tfds:` text source (in memory).
- `index_text_folder`: a `folder:` of text files as paths and labels (streamed).
- `read_tfds`: the examples of a prepared TFDS dataset, never downloading.
"""

import csv
import dataclasses
import math
import os

import numpy as np


class DataUnavailableError(RuntimeError):
    """A dataset is not on this machine and cannot be downloaded."""


# ----------------------------------------------------------------------------- CSV


@dataclasses.dataclass
class CsvTable:
    """The body of a CSV file: stripped header names, raw cells, file line numbers."""

    path: str
    header: list
    rows: list
    lines: list

    def index(self, argument, column):
        """Position of `column` in the header; `argument` names the option in the error."""
        if column not in self.header:
            raise ValueError(f"{argument} not found in the CSV header {self.header} of "
                             f"{self.path}. Received: {argument}={column!r}")
        return self.header.index(column)

    def column(self, argument, column):
        """The cells of `column` (strings, as written)."""
        i = self.index(argument, column)
        return [row[i] for row in self.rows]

    def where(self, n):
        """"PATH line L" of the n-th data row."""
        return f"{self.path} line {self.lines[n]}"


# Delimiters a CSV file may use besides the comma (spreadsheets in many locales
# write ";", exports often "\t"); csv.Sniffer picks among these only.
OTHER_DELIMITERS = ";\t|"
# The largest CSV field read (csv's default is 131,072 characters): a longer one
# is a damaged file or a binary pasted in, refused by name.
MAX_CSV_FIELD = 1 << 20


def _delimiter(path, sample):
    """"," unless the header is one comma-field that another delimiter splits (csv.Sniffer)."""
    header = sample.splitlines()[0] if sample else ""
    if "," in header or not any(d in header for d in OTHER_DELIMITERS):
        return ","
    try:
        return csv.Sniffer().sniff(sample, delimiters="," + OTHER_DELIMITERS).delimiter
    except csv.Error:
        raise ValueError(f"{path} is not comma-separated and its delimiter cannot be "
                         f"detected (header {header[:80]!r}); expected comma-separated "
                         f"values.") from None


def read_csv(path):
    """Read a CSV file with a header row.

    Comma-separated, UTF-8 (a byte-order mark is skipped); a file whose
    header holds no comma but ";", tab or "|" is read with that delimiter
    (detected by `csv.Sniffer`).  Blank lines are skipped; a row with a
    different number of fields than the header raises, naming its line.
    Anything that is not such a file (not UTF-8, a field over
    `MAX_CSV_FIELD` characters, NUL bytes, a FIFO or device) raises one
    `ValueError` naming the file.

    Args:
        path: the file (as in `data="csv:PATH"`).

    Returns:
        A `CsvTable`.
    """
    from zoo import io as zio

    if not os.path.exists(path):  # a folder, FIFO or device: open_regular names it
        raise ValueError(f"File does not exist. Received: data='csv:{path}'")
    rows, lines = [], []
    limit = csv.field_size_limit()
    try:
        csv.field_size_limit(MAX_CSV_FIELD)
        with zio.open_regular(path, newline="", encoding="utf-8-sig", follow=True) as f:
            delimiter = _delimiter(path, f.read(64 * 1024))
            f.seek(0)
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            for row in reader:
                if any(cell.strip() for cell in row):
                    rows.append(row)
                    lines.append(reader.line_num)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 (byte 0x{err.object[err.start]:02x} at offset "
                         f"{err.start} is not valid UTF-8; Latin-1 or another encoding?): save "
                         f"it as UTF-8. Received: data='csv:{path}'") from None
    except csv.Error as err:
        line = f" line {reader.line_num}" if "reader" in locals() else ""
        detail = (f"a field longer than {MAX_CSV_FIELD} characters"
                  if "field larger" in str(err) else str(err))
        raise ValueError(f"{path}{line} cannot be read as CSV ({detail}). Received: "
                         f"data='csv:{path}'") from None
    finally:
        csv.field_size_limit(limit)
    if header is None or not rows:
        raise ValueError(f"CSV file has no data rows. Received: data='csv:{path}'")
    header = [h.strip() for h in header]
    for row, line in zip(rows, lines):
        if len(row) != len(header):
            raise ValueError(f"{path} line {line} has {len(row)} fields but the header has "
                             f"{len(header)}.")
    return CsvTable(path, header, rows, lines)


def _label_order(label):
    # Numbers first, numerically ("2" before "10"); then names alphabetically.
    number = label.lstrip("-").isdigit()
    return (not number, int(label) if number else 0, label)


def encode_labels(labels, classes=None, *, argument, where=None):
    """Map label strings to class ids 0..k-1.

    Args:
        labels: one label string per example.
        classes: the class names in id order (a list or a comma-separated
            string), or None to take the labels present, numbers first
            (numerically), then names (alphabetically). Defaults to None.
        argument: what the labels came from, for messages (e.g.
            "label_column='sentiment'").
        where: each label's location ("PATH line L"), named in messages.
            Defaults to None.

    Returns:
        (int32 ids, class names).
    """
    labels = [str(label).strip() for label in labels]
    missing = [n for n, label in enumerate(labels) if not label]
    if missing:
        first = f" (the first at {where[missing[0]]})" if where else ""
        raise ValueError(f"{argument} has {len(missing)} empty label(s){first}; every example "
                         f"needs one.")
    present = sorted(set(labels), key=_label_order)
    if classes is None:
        names = present
    else:
        if isinstance(classes, str):
            classes = [c.strip() for c in classes.split(",") if c.strip()]
        names = [str(c) for c in classes]
        unknown = [label for label in present if label not in names]
        if unknown:
            raise ValueError(f"{argument} has labels {unknown[:5]} that are not among the "
                             f"declared classes {names}. Received: classes={classes!r}")
    if len(names) < 2:
        raise ValueError(f"{argument} must have at least two distinct labels. "
                         f"Received: labels {present}")
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[label] for label in labels], "int32"), names


def read_feature_csv(path, label_column=None):
    """Numeric feature columns and a label column of a CSV file.

    Args:
        path: the file.
        label_column: the label's column; None takes the last. Defaults to None.

    Returns:
        (float32 features (rows, columns), the label cells as a str array,
        each row's place "PATH line L", the label column's name).  The labels are read by the one
        label rule for arrays (`zoo.splits.normalize_arrays`): class ids,
        names, or numbers (regression), the same as an npz's.
    """
    table = read_csv(path)
    label_column = label_column or table.header[-1]
    label_index = table.index("label_column", label_column)
    if len(table.header) < 2:
        raise ValueError(f"{path} has a single column ({table.header[0]!r}); expected "
                         f"comma-separated feature columns and a label column. Received: "
                         f"data='csv:{path}'")
    features = []
    names = [h for i, h in enumerate(table.header) if i != label_index]
    for n, row in enumerate(table.rows):
        values = []
        for name, cell in zip(names, (v for i, v in enumerate(row) if i != label_index)):
            value = _parse_float(cell)
            if value is None or abs(value) > FLOAT32_MAX:
                what = ("missing" if not cell.strip() else
                        "outside float32's range" if value is not None or _is_number(cell)
                        else "non-numeric")
                raise ValueError(f"Non-numeric feature value in {table.where(n)}: column "
                                 f"{name!r} is {what} ({cell[:40]!r}); feature columns must "
                                 f"be finite numbers.")
            values.append(value)
        features.append(values)
    labels = np.array([row[label_index].strip() for row in table.rows], dtype=str)
    return (np.array(features, "float32"), labels,
            [table.where(n) for n in range(len(table.rows))], label_column)


FLOAT32_MAX = float(np.finfo("float32").max)


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_float(text):
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _split_names(value):
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def numeric_table(path, *, target=None, features=None):
    """(values (rows, columns) float32, column names, target names) from a CSV.

    A column counts as numeric when most of its cells parse as numbers; a
    missing or non-numeric cell in a column that is used raises, naming the
    column and line (silently dropping a row would shift the time axis).

    Args:
        path: the file.
        target: column(s) to forecast, a list or comma-separated; None works
            only when the file has exactly one numeric column. Defaults to None.
        features: input columns; None takes every numeric column. Targets are
            always inputs too. Defaults to None.
    """
    table = read_csv(path)
    header = table.header
    columns = {h: [row[i].strip() for row in table.rows] for i, h in enumerate(header)}
    parsed = {h: [_parse_float(c) for c in cells] for h, cells in columns.items()}
    numeric = [h for h in header if sum(v is not None for v in parsed[h]) > len(parsed[h]) / 2]
    targets = _split_names(target)
    if targets is None:
        if len(numeric) != 1:
            raise ValueError(f"target is required when the CSV does not have exactly one "
                             f"numeric column; numeric columns: {numeric}. Received: target=None")
        targets = numeric
    for name in targets:
        table.index("target", name)
    chosen = _split_names(features)
    for name in chosen or ():
        table.index("features", name)
    chosen = list(numeric) if chosen is None else chosen
    # Targets are always inputs too: a forecaster needs the series' own history.
    used = [h for h in header if h in chosen or h in targets]
    for name in used:
        argument = "target" if name in targets else "features"
        for n, (cell, value) in enumerate(zip(columns[name], parsed[name])):
            if value is None:
                what = "missing" if not cell else f"non-numeric ({cell!r})"
                raise ValueError(f"Column {name!r} has a {what} value at {table.where(n)}; "
                                 f"time-series columns must be numeric and complete. "
                                 f"Received: {argument} column {name!r}")
    values = np.array([parsed[h] for h in used], dtype="float32").T
    return values, used, targets


# ---------------------------------------------------------------------------- text


def _check_texts(texts, where, argument):
    for text, place in zip(texts, where):
        if not text.strip():
            raise ValueError(f"Empty text at {place}: every example needs some text. "
                             f"Received: {argument} with an empty value")


def class_folders(path, what):
    """The sorted class sub-folders of a `folder:` source (hidden ones left out).

    Args:
        path: the folder.
        what: "Image" or "Text", for the one-line error a missing folder or
            one without sub-folders gets.
    """
    if not os.path.isdir(path):
        raise ValueError(f"{what} folder does not exist. Received: data='folder:{path}'")
    classes = sorted(d for d in os.listdir(path)
                     if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))
    if not classes:
        raise ValueError(f"{what} folder has no class sub-folders. "
                         f"Received: data='folder:{path}'")
    return classes


def listing_key(root, entries, what, version=1):
    """A hash of a folder's files: (relative path, size, mtime) entries (cache and manifest key)."""
    import hashlib
    digest = hashlib.sha256(f"{what}:{version}:{os.path.abspath(root)}".encode())
    for rel, size, mtime in entries:
        digest.update(f"\n{rel}\t{size}\t{mtime}".encode())
    return digest.hexdigest()


@dataclasses.dataclass
class TextIndex:
    """The text files of a folder: paths relative to `root`, int32 labels, class names.

    What a `folder:PATH` text source is before training: no text is held;
    `zoo.data.index_examples` reads each file with `tf.io.read_file` inside
    a parallel `tf.data` map (as Keras's `text_dataset_from_directory` does).
    """

    root: str
    paths: np.ndarray
    labels: np.ndarray
    class_names: list
    listing: str
    counts: np.ndarray


# Whitespace-only files are found a block at a time: a file with any text
# costs one read of at most this many bytes.
BLANK_CHECK_BYTES = 4096


def _blank(path):
    """Whether the file holds nothing but whitespace (as UTF-8, undecodable bytes are text)."""
    with open(path, "rb") as f:
        while True:
            block = f.read(BLANK_CHECK_BYTES)
            if not block:
                return True
            if block.decode("utf-8", errors="replace").strip():
                return False


def index_text_folder(path, *, classes=None):
    """The `TextIndex` of a `folder:PATH` text source: listed, labelled, empty files refused.

    Each class sub-folder's regular, non-hidden files (not recursive), in
    sorted order, are its examples.  The one pass over the files reads a
    block of each (`BLANK_CHECK_BYTES`) to refuse an empty or whitespace-only
    file by name; nothing is kept.

    Args:
        path: the folder (one sub-folder of text files per class).
        classes: class names in id order (see `encode_labels`); None takes
            the sub-folders, each of which must then hold a file. Defaults
            to None.
    """
    source = f"data='folder:{path}'"
    folders = class_folders(path, "Text")
    files = []
    for name in folders:
        folder = os.path.join(path, name)
        for file in sorted(os.listdir(folder)):
            full = os.path.join(folder, file)
            if file.startswith(".") or not os.path.isfile(full):
                continue
            try:
                st = os.stat(full)
                blank = st.st_size == 0 or _blank(full)
            except OSError as err:
                raise ValueError(f"Text file cannot be read: {full} ({err.strerror or err}). "
                                 f"Received: {source}") from None
            if blank:
                raise ValueError(f"Empty text at {full}: every example needs some text. "
                                 f"Received: {source} with an empty file")
            files.append((os.path.join(name, file), name, st.st_size, st.st_mtime_ns))
    if not files:
        raise ValueError(f"Text folder contains no files. Received: {source}")
    y, names = encode_labels([f[1] for f in files], folders if classes is None else classes,
                             argument=f"{source} (class sub-folders)")
    counts = np.bincount(y, minlength=len(names))
    if classes is None:
        empty = [names[i] for i in range(len(names)) if counts[i] == 0]
        if empty:
            raise ValueError(f"Text folder: class sub-folder(s) {empty} hold no files; every "
                             f"class needs examples (or pass classes= to name the classes). "
                             f"Received: {source}")
    return TextIndex(root=os.path.abspath(path), paths=np.array([f[0] for f in files], object),
                     labels=y, class_names=names,
                     listing=listing_key(path, [(f[0], f[2], f[3]) for f in files], "text"),
                     counts=counts)


def read_texts(source, *, text_column="text", label_column="label", classes=None):
    """Raw texts and class ids of a text source that is read into memory.

    A `folder:` of text files streams instead (`index_text_folder`).

    Args:
        source: "csv:PATH" (a text and a label column) or "tfds:NAME" (a
            prepared TFDS dataset of (text, label)).
        text_column: the CSV's text column. Defaults to "text".
        label_column: the CSV's label column. Defaults to "label".
        classes: class names in id order (see `encode_labels`); None takes
            the labels present (the TFDS label names).
            Defaults to None.

    Returns:
        ((texts, ids), (test texts, test ids) or None, class names); only a
        TFDS dataset with a test split has a test part. None for any other
        kind of source.
    """
    prefix, _, rest = source.partition(":")
    if prefix == "csv":
        table = read_csv(rest)
        texts = table.column("text_column", text_column)
        labels = table.column("label_column", label_column)
        _check_texts(texts, [table.where(n) for n in range(len(texts))],
                     f"text_column={text_column!r}")
        y, names = encode_labels(labels, classes, argument=f"label_column={label_column!r}",
                                 where=[table.where(n) for n in range(len(labels))])
        return (texts, y), None, names
    if prefix != "tfds":
        return None
    train, test, names = read_tfds(rest)
    if not train:
        raise ValueError(f"TFDS dataset has no examples. Received: data={source!r}")

    def decode(pairs):
        texts = [text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)
                 for text, _ in pairs]
        return texts, np.array([int(label) for _, label in pairs], "int32")

    train, test = decode(train), (decode(test) if test is not None else None)
    names = names or [str(i) for i in range(int(train[1].max()) + 1)]
    if classes is not None:
        # TFDS labels are ids; declared classes must name every one of them.
        original, argument = names, f"data={source!r}"
        y, names = encode_labels([original[i] for i in train[1]], classes, argument=argument)
        train = (train[0], y)
        if test is not None:
            y, _ = encode_labels([original[i] for i in test[1]], names, argument=argument)
            test = (test[0], y)
    return train, test, names


# ---------------------------------------------------------------------------- TFDS


def read_tfds(name):
    """Examples of a prepared TFDS dataset, never downloading.

    Args:
        name: "DATASET" (train and, if it has one, test split) or "DATASET/SPLIT".

    Returns:
        (train pairs, test pairs or None, class names or None), the pairs
        being lists of numpy (input, label).
    """
    import tensorflow_datasets as tfds
    dataset, _, split = name.partition("/")
    try:
        builder = tfds.builder(dataset)
    except Exception as err:
        raise ValueError(f"Unknown TFDS dataset. Received: data='tfds:{name}' ({err})") from err

    def read(split_name):
        # download=False: TFDS would otherwise retry the network for minutes.
        try:
            ds = tfds.load(dataset, split=split_name, as_supervised=True, download=False)
        except AssertionError as err:
            raise DataUnavailableError(
                f"TFDS dataset {dataset!r} is not prepared under {builder.data_dir}. Run "
                f"`tfds build {dataset}` on a machine with network and copy that folder here.") from err
        return list(tfds.as_numpy(ds))

    has_test = "test" in (builder.info.splits or {"test": 0})
    train = read(split or "train")
    test = read("test") if not split and has_test else None
    label = builder.info.features["label"] if "label" in builder.info.features else None
    return train, test, list(getattr(label, "names", None) or []) or None


# ------------------------------------------------------------------- npz and IDX

NPY_MAGIC = b"\x93NUMPY"


def read_npz(path, *, source=None):
    """Every array of an .npz archive, read whole, or one line naming the file.

    Pickled (object) arrays are refused (loading them can run code); a
    `.npy` file, a zero-byte, truncated or otherwise damaged archive is
    named as such.

    Args:
        path: the file.
        source: how the user named it, for messages (e.g. "data='npz:x.npz'").
            Defaults to the path.

    Returns:
        {key: numpy array}.
    """
    import zipfile
    import zlib

    from zoo import io as zio

    source = source or path
    try:
        with zio.open_regular(path, "rb", follow=True) as f:
            head = f.read(len(NPY_MAGIC))
            if head == NPY_MAGIC:
                raise ValueError(f"{path} is a .npy file, not an .npz archive: save the arrays "
                                 f"with np.savez(PATH, x=..., y=...). Received: {source}")
            f.seek(0)
            try:
                archive = np.load(f, allow_pickle=False)
            except ValueError as err:
                if "pickled" in str(err):
                    raise ValueError(f"{path} is a pickle, not an .npz archive; pickles are "
                                     f"not loaded (they can run code). Received: {source}") \
                        from None
                raise
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError(f"{path} is not an .npz archive. Received: {source}")
            with archive:
                arrays = {}
                for key in archive.files:
                    try:
                        arrays[key] = archive[key]
                    except ValueError as err:
                        if "allow_pickle" in str(err):
                            raise ValueError(f"{path} holds a pickled (object) array {key!r}; "
                                             f"it is not loaded (pickles can run code): save "
                                             f"numbers or strings. Received: {source}") from None
                        raise
                return arrays
    except FileNotFoundError:
        raise ValueError(f"File does not exist. Received: {source}") from None
    except ValueError as err:
        if str(err).endswith(f"Received: {source}") or str(err).endswith(f": {path}"):
            raise
        raise ValueError(f"File is damaged: {path} cannot be read as an .npz archive ({err}). "
                         f"Received: {source}") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as err:
        raise ValueError(f"File is damaged: {path} cannot be read as an .npz archive "
                         f"({type(err).__name__}: {err or 'empty'}). Received: {source}") from None


# IDX type codes (LeCun's format): only unsigned bytes are read, as in MNIST.
IDX_UBYTE = 0x08


def read_idx(path):
    """The array of an IDX file (MNIST / Fashion-MNIST, optionally gzipped), checked.

    The header (two zero bytes, type 0x08, number of axes, each axis' size)
    must be whole and the data exactly as long as it says; anything else
    raises one `ValueError` naming the file.
    """
    import gzip
    import struct
    import zlib

    from zoo import io as zio

    try:
        with zio.open_regular(path, "rb", follow=True) as raw:
            f = gzip.GzipFile(fileobj=raw, mode="rb") if path.endswith(".gz") else raw
            header = f.read(4)
            if len(header) < 4:
                raise ValueError(f"IDX file is damaged: {len(header)} bytes where a 4-byte "
                                 f"header is needed: {path}")
            zero, kind, ndim = struct.unpack(">HBB", header)
            if zero != 0 or kind != IDX_UBYTE or not 1 <= ndim <= 4:
                raise ValueError(f"Not an unsigned-byte IDX file (header {header.hex()}; "
                                 f"expected 0000 08 and 1-4 axes): {path}")
            dims_bytes = f.read(4 * ndim)
            if len(dims_bytes) < 4 * ndim:
                raise ValueError(f"IDX file is damaged: shorter than its {4 + 4 * ndim}-byte "
                                 f"header: {path}")
            dims = struct.unpack(">" + "I" * ndim, dims_bytes)
            size = int(np.prod(dims, dtype="int64"))
            body = f.read(size + 1)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"IDX file is damaged ({type(err).__name__}: {err}): {path}") from None
    if len(body) != size:
        raise ValueError(f"IDX file is damaged: its header says {size} bytes of data "
                         f"(shape {dims}) but it holds "
                         f"{len(body) if len(body) <= size else 'more'}: {path}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)
