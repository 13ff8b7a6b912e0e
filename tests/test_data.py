"""Data sources, splits, pipelines and every validation case."""

import gzip
import os
import struct
import time

import numpy as np
import pytest

from zoo import data, readers, splits


def _arrays(n=60, shape=(8, 8, 1), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, *shape)).astype("float32")
    y = np.arange(n) % classes
    return x, y.astype("int32")


def test_digits_bundle_for_lenet_resizes_to_32():
    bundle = data.load("lenet5", "digits", batch_size=16)
    assert bundle.input_shape == (32, 32, 1)
    assert bundle.num_classes == 10 and len(bundle.class_names) == 10
    assert sum(bundle.num_examples.values()) == 1797
    x, y = next(iter(bundle.train))
    assert x.shape == (16, 32, 32, 1) and y.shape == (16,)
    assert 0.0 <= float(np.min(x)) and float(np.max(x)) <= 1.0


def test_mlp_takes_the_data_shape():
    bundle = data.load("mlp", "digits")
    assert bundle.input_shape == (8, 8, 1)


def test_splits_are_stratified_and_seeded():
    x, y = _arrays(300, classes=3)
    a = splits.make_splits((x, y), None, seed=1, test_split=0.2, validation_split=0.1)
    b = splits.make_splits((x, y), None, seed=1, test_split=0.2, validation_split=0.1)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert np.bincount(a.y_test).tolist() == [20, 20, 20]
    c = splits.make_splits((x, y), None, seed=2)
    assert not np.array_equal(a.x_test, c.x_test)


def test_classes_selects_and_relabels():
    bundle = data.load("perceptron", "digits", classes=(3, 8))
    assert bundle.num_classes == 2 and bundle.class_names == ["3", "8"]
    assert set(np.unique(bundle.arrays.y_train)) == {0, 1}
    with pytest.raises(ValueError, match=r"classes \[42\] do not occur"):
        data.load("perceptron", "digits", classes=(3, 42))
    with pytest.raises(ValueError, match="at least two distinct"):
        data.load("perceptron", "digits", classes=(3,))


@pytest.mark.parametrize("bad, message", [
    ("imagenet", r"Unknown dataset. Received: data='imagenet'"),
    ("csv:", r"Unknown dataset"),
])
def test_unknown_dataset(bad, message):
    with pytest.raises(ValueError, match=message):
        data.load("mlp", bad)


def test_empty_dataset():
    x = np.zeros((0, 4), "float32")
    with pytest.raises(ValueError, match="input split is empty"):
        data.load("mlp", (x, np.zeros((0,), "int32")))


def test_split_too_small_to_split():
    x, y = _arrays(2, shape=(4,), classes=2)
    with pytest.raises(ValueError, match="Too few examples"):
        data.load("mlp", (x, y))


def test_non_finite_features():
    x, y = _arrays(60, shape=(4,))
    x[5, 2] = np.nan
    x[7, 0] = np.inf
    with pytest.raises(ValueError, match=r"non-finite feature values .* in 2 example"):
        data.load("mlp", (x, y))


def test_labels_out_of_range():
    x, y = _arrays(60, shape=(4,))
    y[0] = -1
    with pytest.raises(ValueError, match="non-negative"):
        data.load("mlp", (x, y))
    x, y = _arrays(60, shape=(4,), classes=3)
    with pytest.raises(ValueError, match=r"Labels must lie in \[0, 2\)"):
        splits.make_splits((x, y), None, class_names=["a", "b"])


def test_mismatched_lengths_and_non_integer_labels():
    x, y = _arrays(60, shape=(4,))
    with pytest.raises(ValueError, match="60 inputs but 59 labels"):
        data.load("mlp", (x, y[:-1]))
    with pytest.raises(ValueError, match="labels must be integers"):
        data.load("mlp", (x, y + 0.5))


def test_input_shape_too_small_for_model():
    with pytest.raises(ValueError, match=r"minimum is \(32, 32\)"):
        data.load("lenet5", "digits", input_shape=(16, 16, 1))


def test_data_shape_incompatible_with_model():
    x, y = _arrays(60, shape=(20,))
    with pytest.raises(ValueError, match=r"Model 'lenet5' takes images"):
        data.load("lenet5", (x, y))
    x, y = _arrays(60, shape=(8, 8, 3))
    with pytest.raises(ValueError, match="Data has 3 channels but the model takes 1"):
        data.load("lenet5", (x, y), input_shape=(32, 32, 1))


def test_grayscale_is_tiled_to_rgb_models():
    x, y = _arrays(60, shape=(8, 8))
    bundle = data.load("lenet5", (x, y), input_shape=(32, 32, 3))
    batch = next(iter(bundle.test))[0]
    assert batch.shape[1:] == (32, 32, 3)


def test_keras_dataset_offline_error_is_fast_and_names_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setattr(data, "FASHION_MNIST_DIRS", (str(tmp_path / "none"),))
    with pytest.raises(data.DataUnavailableError,
                       match=r"\.keras/datasets/cifar-10-batches-py-target_archive"):
        data.load("lenet5", "cifar10")
    with pytest.raises(data.DataUnavailableError, match="dataset-fashion-mnist"):
        data.read_source("fashion_mnist")


def test_tfds_not_prepared_fails_fast():
    start = time.perf_counter()
    with pytest.raises(data.DataUnavailableError, match="tfds build mnist"):
        data.load("lenet5", "tfds:mnist")
    assert time.perf_counter() - start < 15


def test_tfds_mock_data():
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=40):
        bundle = data.load("lenet5", "tfds:mnist", batch_size=8)
    assert bundle.input_shape == (32, 32, 1)
    assert bundle.num_classes == 10
    assert bundle.num_examples["test"] == 40


def _write_idx(path, array):
    with gzip.open(path, "wb") as f:
        magic = 0x0800 | array.ndim
        f.write(struct.pack(">I", magic))
        f.write(struct.pack(">" + "I" * array.ndim, *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def test_idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    for stem, n in (("train", 50), ("t10k", 20)):
        _write_idx(tmp_path / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(tmp_path / f"{stem}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    bundle = data.load("lenet5", f"fashion_mnist:{tmp_path}", batch_size=10)
    assert bundle.num_examples == {"train": 45, "validation": 5, "test": 20}
    assert bundle.class_names[0] == "T-shirt/top"
    x = next(iter(bundle.test))[0]
    assert x.shape == (10, 32, 32, 1) and float(np.max(x)) <= 1.0


def test_image_folder(tmp_path, monkeypatch):
    from PIL import Image
    monkeypatch.setenv("KERAS_HOME", f"{tmp_path}_keras_home")  # the header-pass cache
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        os.makedirs(tmp_path / cls)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
                tmp_path / cls / f"{i}.png")
    bundle = data.load("lenet5", f"folder:{tmp_path}", input_shape=(32, 32, 3))
    assert bundle.class_names == ["cats", "dogs"]
    assert next(iter(bundle.train))[0].shape[1:] == (32, 32, 3)
    with pytest.raises(ValueError, match="does not exist"):
        data.load("lenet5", f"folder:{tmp_path / 'missing'}")


def test_npz_and_csv(tmp_path):
    x, y = _arrays(60, shape=(5,))
    np.savez(tmp_path / "d.npz", x=x, y=y)
    assert data.load("mlp", f"npz:{tmp_path / 'd.npz'}").input_shape == (5,)
    np.savez(tmp_path / "bad.npz", features=x)
    with pytest.raises(ValueError, match="npz file must hold"):
        data.load("mlp", f"npz:{tmp_path / 'bad.npz'}")
    lines = ["a,b,species"] + [f"{i % 7},{i % 3},{'cat' if i % 2 else 'dog'}" for i in range(40)]
    (tmp_path / "d.csv").write_text("\n".join(lines))
    bundle = data.load("mlp", f"csv:{tmp_path / 'd.csv'}")
    assert bundle.class_names == ["cat", "dog"] and bundle.input_shape == (2,)
    with pytest.raises(ValueError, match="label_column not found"):
        data.load("mlp", f"csv:{tmp_path / 'd.csv'}", options={"label_column": "kind"})
    (tmp_path / "text.csv").write_text("a,label\n1,1\n\nworld,0\n")
    with pytest.raises(ValueError, match="Non-numeric feature value in .*text.csv line 4"):
        data.load("mlp", f"csv:{tmp_path / 'text.csv'}")
    (tmp_path / "ragged.csv").write_text("a,b,label\n1,2,0\n3,1\n")
    with pytest.raises(ValueError, match="ragged.csv line 3 has 2 fields but the header has 3"):
        data.load("mlp", f"csv:{tmp_path / 'ragged.csv'}")


def test_csv_reader_skips_blank_lines_and_keeps_file_line_numbers(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(' a , b\n1,"two\nlines"\n\n  ,\n3,x\n')
    table = readers.read_csv(str(path))
    assert table.header == ["a", "b"]
    assert table.rows == [["1", "two\nlines"], ["3", "x"]]
    assert table.where(1) == f"{path} line 6"
    assert table.column("label_column", "b") == ["two\nlines", "x"]
    with pytest.raises(ValueError, match=r"label_column not found in the CSV header \['a', 'b'\]"
                                         r" of .*t.csv. Received: label_column='c'"):
        table.index("label_column", "c")
    (tmp_path / "empty.csv").write_text("a,b\n\n")
    with pytest.raises(ValueError, match="CSV file has no data rows"):
        readers.read_csv(str(tmp_path / "empty.csv"))


def test_one_label_order_for_every_source():
    ids, names = readers.encode_labels(["dog", "10", "cat", "2", "dog"], argument="labels")
    assert names == ["2", "10", "cat", "dog"] and ids.tolist() == [3, 1, 2, 0, 3]
    ids, names = readers.encode_labels(["b", "a"], "b,a", argument="labels")
    assert names == ["b", "a"] and ids.tolist() == [0, 1]
    with pytest.raises(ValueError, match="labels has 1 empty label"):
        readers.encode_labels(["a", " "], argument="labels")


def test_unknown_data_option():
    with pytest.raises(ValueError, match=r"Unknown data option\(s\) \['lookback'\]"):
        data.load("mlp", "digits", options={"lookback": 4})


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        data.load("mlp", "digits", batch_size=0)


def test_take_inputs_match_pipeline():
    bundle = data.load("lenet5", "digits", batch_size=4)
    x = bundle.take_inputs("test", 6)
    assert x.shape == (6, 32, 32, 1)


def _fake_keras_cache(home, name, rng):
    """Tiny stand-ins for the files Keras 3.15 caches, at the names it reads."""
    import gzip
    import io
    import pickle
    import struct
    import tarfile
    root = home / "datasets"
    root.mkdir(parents=True, exist_ok=True)
    x = (rng.random((30, 28, 28)) * 255).astype("uint8")
    y = np.arange(30) % 3
    if name == "mnist":
        np.savez(root / "mnist.npz", x_train=x[:20], y_train=y[:20], x_test=x[20:],
                 y_test=y[20:])
    elif name == "fashion_mnist":
        (root / "fashion-mnist").mkdir()
        for stem, arr in (("train-images-idx3-ubyte", x[:20]), ("t10k-images-idx3-ubyte", x[20:]),
                          ("train-labels-idx1-ubyte", y[:20]), ("t10k-labels-idx1-ubyte", y[20:])):
            arr = arr.astype("uint8")
            header = struct.pack(">HBB", 0, 8, arr.ndim) + b"".join(
                struct.pack(">I", d) for d in arr.shape)
            with gzip.open(root / "fashion-mnist" / f"{stem}.gz", "wb") as f:
                f.write(header + arr.tobytes())
    else:
        inner = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
        files = ([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
                 if name == "cifar10" else ["train", "test"])
        key = b"labels" if name == "cifar10" else b"fine_labels"
        archive_path = root / (inner + "-target_archive")
        with tarfile.open(archive_path, "w:gz") as archive:
            for file in files:
                batch = {b"data": (rng.random((6, 3072)) * 255).astype("uint8"),
                         key: list(range(6))}
                blob = pickle.dumps(batch)
                info = tarfile.TarInfo(f"{inner}/{file}")
                info.size = len(blob)
                archive.addfile(info, io.BytesIO(blob))


@pytest.mark.parametrize("name, expected_file", [
    ("mnist", "mnist.npz"),
    ("fashion_mnist", "fashion-mnist"),
    ("cifar10", "cifar-10-batches-py-target_archive"),
    ("cifar100", "cifar-100-python-target_archive"),
])
def test_keras_datasets_are_read_from_the_files_keras_caches(name, expected_file, tmp_path,
                                                             monkeypatch, rng, capsys):
    """The offline hint names the file Keras reads; placed there, it loads with no download."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setattr(data, "FASHION_MNIST_DIRS", ())
    with pytest.raises(data.DataUnavailableError) as info:
        data.read_source(name)
    assert str(tmp_path / "keras" / "datasets" / expected_file) in str(info.value)
    _fake_keras_cache(tmp_path / "keras", name, rng)
    (x_train, y_train), (x_test, y_test), _ = data.read_source(name)
    assert len(x_train) == len(y_train) > 0 and len(x_test) == len(y_test) > 0
    assert x_train.shape[-1] in (1, 3) and x_train.dtype == np.uint8
    assert "Downloading" not in capsys.readouterr().out
