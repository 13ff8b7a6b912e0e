"""Damaged or unusual data files: accepted by one rule set, or refused with one line naming them.

The array sources (npz, CSV, (x, y) from Python) share one label/feature
normaliser (`zoo.splits.normalize_arrays`); every file kind has a reader
(`zoo.readers.read_csv` / `read_npz` / `read_idx`, the Keras cache) that
turns a damaged file into a ValueError naming it.  All files are tiny and
generated here; nothing trains.
"""

import os
import pickle

import numpy as np
import pytest

from zoo import cli, data, splits

N = 60


def _xy(n=N, features=4, classes=3):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, features)).astype("float32"), np.arange(n) % classes


def _csv(path, rows, header="a,b,label", encoding="utf-8"):
    path.write_bytes(("\n".join([header, *rows]) + "\n").encode(encoding))
    return f"csv:{path}"


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return f"npz:{path}"


# ------------------------------------------------------------------ accepted


def test_label_shapes_and_names_accepted_alike_for_arrays_npz_and_csv(tmp_path):
    x, y = _xy()
    column = data.load("mlp", (x, y[:, None]))
    assert column.num_classes == 3 and column.arrays.y_train.ndim == 1
    flat = data.load("mlp", (x, y))
    np.testing.assert_array_equal(column.arrays.y_test, flat.arrays.y_test)
    # One-hot: argmax, and K columns are K classes even if one never occurs.
    one_hot = data.load("mlp", (x, np.eye(4)[y]))
    assert one_hot.num_classes == 4
    np.testing.assert_array_equal(one_hot.arrays.y_test, flat.arrays.y_test)
    # String labels: encoded as a CSV's are, class names recorded.
    names = np.array(["cat", "dog", "eel"])[y]
    from_npz = data.load("mlp", _npz(tmp_path / "s.npz", x=x, y=names))
    rows = [",".join([*map(repr, features), name]) for features, name in zip(x.tolist(), names)]
    from_csv = data.load("mlp", _csv(tmp_path / "s.csv", rows, header="a,b,c,d,label"))
    assert from_npz.class_names == from_csv.class_names == ["cat", "dog", "eel"]
    np.testing.assert_array_equal(from_npz.arrays.y_test, from_csv.arrays.y_test)
    # Test labels as names are encoded with the training labels' names.
    both = data.load("mlp", _npz(tmp_path / "t.npz", x_train=x, y_train=names,
                                 x_test=x[:10], y_test=names[-10:][::-1]))
    assert both.class_names == ["cat", "dog", "eel"]
    assert [both.class_names[i] for i in both.arrays.y_test] == names[-10:][::-1].tolist()


def test_csv_whole_float_labels_semicolons_tabs_and_byte_order_mark(tmp_path):
    rows = [(i % 7, i % 5, i % 3) for i in range(N)]
    plain = data.load("mlp", _csv(tmp_path / "p.csv", [f"{a},{b},{c}" for a, b, c in rows]))
    for name, text, encoding, header in (
            ("float", [f"{a},{b},{c}.0" for a, b, c in rows], "utf-8", "a,b,label"),
            ("semicolon", [f"{a};{b};{c}" for a, b, c in rows], "utf-8", "a;b;label"),
            ("tab", [f"{a}\t{b}\t{c}" for a, b, c in rows], "utf-8", "a\tb\tlabel"),
            ("bom", [f"{a},{b},{c}" for a, b, c in rows], "utf-8-sig", "a,b,label")):
        bundle = data.load("mlp", _csv(tmp_path / f"{name}.csv", text, header, encoding),
                           options={"label_column": "label"})
        assert bundle.input_shape == (2,), name
        np.testing.assert_array_equal(bundle.arrays.x_test, plain.arrays.x_test)
        np.testing.assert_array_equal(bundle.arrays.y_test, plain.arrays.y_test)


# ------------------------------------------------------------------ refused

def _latin1(tmp_path):
    return _csv(tmp_path / "latin.csv", [f"{i},{i % 5},{'café' if i % 2 else 'thé'}"
                                         for i in range(N)], encoding="latin-1")


def _huge_field(tmp_path):
    return _csv(tmp_path / "huge.csv", [f"{i},{'9' * (10 * 2 ** 20) if i == 3 else i},{i % 3}"
                                        for i in range(N)])


def _truncated(tmp_path):
    x, y = _xy()
    np.savez(tmp_path / "whole.npz", x=x, y=y)
    whole = (tmp_path / "whole.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[:len(whole) // 2])
    return f"npz:{tmp_path / 'cut.npz'}"


def _idx(tmp_path, content):
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / stem).write_bytes(content)
    return f"fashion_mnist:{tmp_path}"


def _pickled(tmp_path):
    with open(tmp_path / "p.npz", "wb") as f:
        pickle.dump({"x": 1}, f)
    return f"npz:{tmp_path / 'p.npz'}"


# (case, data from tmp_path, data options, fragment of the message)
REFUSED = [
    ("x_of_shape_n", lambda t: (_xy()[0][:, 0], _xy()[1]), None,
     "Examples need at least one feature axis: x has shape (60,)"),
    ("soft_labels", lambda t: (_xy()[0], np.full((N, 3), 1 / 3)), None,
     "y of shape (60, 3) must be one-hot"),
    ("npz_fractional_labels", lambda t: _npz(t / "f.npz", x=_xy()[0], y=_xy()[1] + 0.5), None,
     "Classification labels must be integers (class ids 0..k-1) or names. Received: y labels "
     "like [0.5, 1.5, 2.5]"),
    ("csv_fractional_labels",
     lambda t: _csv(t / "f.csv", [f"{i},{i % 5},{i % 3 + 0.5}" for i in range(N)]), None,
     "Received: label_column='label' labels like [0.5, 1.5, 2.5] (the first at "),
    ("csv_nan_labels",
     lambda t: _csv(t / "n.csv", [f"{i},{i % 5},{'nan' if i % 10 == 9 else i % 3}"
                                  for i in range(N)]), None,
     "label_column='label' has 6 missing or infinite label(s) (the first, nan, at "),
    ("csv_nan_among_names",
     lambda t: _csv(t / "nn.csv", [f"{i},{i % 5},{['x', 'y', 'NaN'][i % 3]}"
                                   for i in range(N)]), None,
     "label_column='label' has a missing label ('NaN' at "),
    ("csv_label_1e30",
     lambda t: _csv(t / "b.csv", [f"{i},{i % 5},{'1e30' if i == 7 else i % 3}"
                                  for i in range(N)]), None,
     "Labels must be class ids 0..k-1. Received: label_column='label' label 1e+30 at "),
    ("csv_feature_1e39",
     lambda t: _csv(t / "g.csv", [f"{'1e39' if i == 4 else i},{i % 5},{i % 3}"
                                  for i in range(N)]), None,
     "g.csv line 6: column 'a' is outside float32's range"),
    ("csv_10mb_field", _huge_field, None,
     "huge.csv line 5 cannot be read as CSV (a field longer than 1048576 characters)"),
    ("csv_latin1", _latin1, None, "latin.csv is not UTF-8 (byte 0xe9 at offset"),
    ("csv_single_column",
     lambda t: _csv(t / "one.csv", [str(i % 3) for i in range(N)], header="label"), None,
     "one.csv has a single column ('label'); expected comma-separated"),
    ("npz_x_test_without_y_test",
     lambda t: _npz(t / "xt.npz", x_train=_xy()[0], y_train=_xy()[1], x_test=_xy()[0]), None,
     "npz file holds 'x_test' but no 'y_test'"),
    ("npz_y_test_without_x_test",
     lambda t: _npz(t / "yt.npz", x=_xy()[0], y=_xy()[1], y_test=_xy()[1]), None,
     "npz file holds 'y_test' but no 'x_test'"),
    ("npz_unread_array",
     lambda t: _npz(t / "e.npz", x=_xy()[0], y=_xy()[1], x_val=_xy()[0]), None,
     "it also holds ['x_val'], which would not be read"),
    ("npz_zero_bytes", lambda t: (t / "z.npz").write_bytes(b"") and None or f"npz:{t}/z.npz",
     None, "File is damaged: "),
    ("npz_truncated", _truncated, None, "File is damaged: "),
    ("npy_as_npz",
     lambda t: np.save(t / "a.npy", _xy()[0]) or f"npz:{t / 'a.npy'}", None,
     "a.npy is a .npy file, not an .npz archive"),
    ("npz_object_array",
     lambda t: _npz(t / "o.npz", x=_xy()[0], y=np.array([object()] * N)), None,
     "holds a pickled (object) array 'y'; it is not loaded"),
    ("pickle_as_npz", _pickled, None, "is a pickle, not an .npz archive"),
    ("idx_two_bytes", lambda t: _idx(t, b"\x00\x00"), None,
     "IDX file is damaged: 2 bytes where a 4-byte header is needed: "),
    ("idx_shorter_than_header", lambda t: _idx(t, b"\x00\x00\x08\x03\x00\x00\x00\x02"), None,
     "IDX file is damaged: shorter than its 16-byte header: "),
    ("idx_short_body", lambda t: _idx(t, b"\x00\x00\x08\x01\x00\x00\x00\x05ab"), None,
     "header says 5 bytes of data (shape (5,)) but it holds 2"),
    ("csv_fifo", lambda t: os.mkfifo(t / "f.csv") or f"csv:{t / 'f.csv'}", None,
     "File is a FIFO, not a regular file; it is not read: "),
    ("npz_folder", lambda t: (t / "d.npz").mkdir() or f"npz:{t / 'd.npz'}", None,
     "File is a folder, not a regular file; it is not read: "),
    ("label_column_on_digits", lambda t: "digits", {"label_column": "y"},
     "Data option label_column does not apply to data='digits' (a named dataset); it is read "
     "only for csv: sources"),
    ("label_column_on_npz",
     lambda t: _npz(t / "ok.npz", x=_xy()[0], y=_xy()[1]), {"label_column": "y"},
     "does not apply to data='npz:"),
    ("cache_on_arrays", lambda t: _xy(), {"cache": "zoo-cache"},
     "Data option cache does not apply to (x, y) arrays from Python; it is read only for "
     "folder:, tfrecord:, tfds: sources or a tf.data.Dataset"),
]


@pytest.mark.parametrize("case, make, options, fragment", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_with_one_line_naming_it(tmp_path, case, make, options, fragment):
    source = make(tmp_path)
    with pytest.raises(ValueError) as err:
        data.load("mlp", source, options=options)
    message = str(err.value)
    assert fragment in message, message
    assert "\n" not in message
    if isinstance(source, str) and ":" in source and case != "label_column_on_npz":
        assert source.partition(":")[2].split("/")[-1] in message or str(tmp_path) in message


def test_cli_prints_one_line_for_a_damaged_file_and_an_option_for_another_source(
        tmp_path, capsys):
    (tmp_path / "z.npz").write_bytes(b"")
    common = ["--epochs", "1", "--verbose", "0", "--no-export"]
    for argv, fragment in (
            (["--data", f"npz:{tmp_path / 'z.npz'}"], "File is damaged: "),
            (["--data", "digits", "--label-column", "nope"],
             "Data option label_column does not apply to data='digits'")):
        out = tmp_path / "run"
        assert cli.main(["train", "mlp", "--out", str(out), *argv, *common]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0], err
        assert not out.exists() or not os.listdir(out)


def test_malicious_cifar_cache_is_one_line(tmp_path, monkeypatch):
    """Keras's restricted unpickler refuses it; we name the cache instead of a traceback."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    root = tmp_path / "datasets"
    folder = root / "cifar-10-batches-py-target" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (root / "cifar-10-batches-py-target_archive").write_bytes(b"archive")

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(Evil()))
    with pytest.raises(data.DataUnavailableError) as err:
        data.read_source("cifar10")
    assert "cached files of dataset 'cifar10' cannot be read (UnpicklingError" in str(err.value)
    assert "\n" not in str(err.value) and not (tmp_path / "pwned").exists()


def test_class_labels_rules_directly():
    ids, names = splits.class_labels(np.array([b"b", b"a", b"b"]))
    assert ids.tolist() == [1, 0, 1] and names == ["a", "b"]
    ids, names = splits.class_labels(np.array(["2", "10", "2"]))
    assert ids.tolist() == [2, 10, 2] and names is None
    with pytest.raises(ValueError, match=r"y must be class labels of shape \(N,\), \(N, 1\) or "
                                         r"one-hot \(N, K\). Received: y of shape \(3, 2, 2\)"):
        splits.class_labels(np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match=r"Targets must be numeric for this task"):
        splits.normalize_arrays((np.zeros((3, 2)), np.array(["a", "b", "c"])), task="regression")


def test_one_hot_and_column_labels_train_end_to_end(tmp_path):
    import zoo
    x, y = _xy(120)
    for name, labels in (("one_hot", np.eye(3)[y]), ("column", y[:, None])):
        result = zoo.train("mlp", (x, labels), epochs=1, run_dir=str(tmp_path / name),
                           export=False, verbose=0, model_kwargs={"hidden_units": (8,)})
        assert result.model.output_shape == (None, 3)
        assert 0.0 <= result.metrics["test_accuracy"] <= 1.0
