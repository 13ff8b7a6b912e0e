"""Sources that stream from disk: image folders and TFRecords as an index, decoded in tf.data."""

import os

import numpy as np
import pytest

import zoo
from zoo import data, images, training
from zoo import io as zio
from zoo.splits import IndexSplits

CLASSES = ("cat", "dog", "owl")
PER_CLASS = 10


def _encode(value, kind):
    import tensorflow as tf
    pixels = np.full((16, 16, 3), value, np.uint8)
    return (tf.io.encode_png(pixels) if kind == "png" else tf.io.encode_jpeg(pixels)).numpy()


def _image_folder(root):
    """PER_CLASS 16x16 images per class, alternately PNG and JPEG, each one flat grey value."""
    for c, name in enumerate(CLASSES):
        os.makedirs(root / name, exist_ok=True)
        for i in range(PER_CLASS):
            kind = "png" if i % 2 else "jpg"
            (root / name / f"{i:02d}.{kind}").write_bytes(_encode(8 * (c * PER_CLASS + i), kind))
    return root


@pytest.fixture(autouse=True)
def index_cache(tmp_path, monkeypatch):
    """The header / label pass cache in a fresh KERAS_HOME for each test."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home" / "zoo_index"


@pytest.fixture
def folder(tmp_path):
    return _image_folder(tmp_path / "images")


def test_folder_is_an_index_and_decodes_in_the_pipeline(folder):
    bundle = data.load("lenet5", f"folder:{folder}", batch_size=4, input_shape=(40, 40, 3))
    splits = bundle.arrays
    assert isinstance(splits, IndexSplits)
    # The split holds example ids, never pixels.
    assert splits.x_train.dtype == np.int64 and splits.x_train.ndim == 1
    assert bundle.class_names == list(CLASSES)
    assert sum(bundle.num_examples.values()) == len(CLASSES) * PER_CLASS
    x, y = next(iter(bundle.train))
    assert x.shape == (4, 40, 40, 3) and 0.0 <= float(np.min(x)) <= float(np.max(x)) <= 1.0
    # Every example once across the three splits, each with its folder's label.
    seen = {}
    for split in (bundle.train, bundle.validation, bundle.test):
        for xb, yb in split:
            for image, label in zip(xb.numpy(), yb.numpy()):
                value = int(round(float(image.mean()) * 255 / 8))
                seen[value] = int(label)
    assert sorted(seen) == list(range(len(CLASSES) * PER_CLASS))
    assert all(label == value // PER_CLASS for value, label in seen.items())
    assert bundle.take_inputs("test", 3).shape == (3, 40, 40, 3)


def test_training_order_is_per_epoch_deterministic(folder):
    def orders(bundle, epochs=2):
        return [np.concatenate([y.numpy() * 1000 + np.round(x.numpy().mean((1, 2, 3)) * 255)
                                for x, y in bundle.train]) for _ in range(epochs)]

    first = orders(data.load("lenet5", f"folder:{folder}", batch_size=5, seed=3))
    again = orders(data.load("lenet5", f"folder:{folder}", batch_size=5, seed=3))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], first[1])  # reshuffled every epoch


def test_streaming_train_records_and_checks_its_split(folder, tmp_path):
    run_dir = tmp_path / "run"
    result = zoo.train("lenet5", data=f"folder:{folder}", epochs=1, batch_size=8,
                       run_dir=str(run_dir), verbose=0, export=False)
    manifest = zio.read_json(str(run_dir / training.SPLIT_FILE))
    assert manifest["counts"] == result.bundle.num_examples
    assert sorted(sum(manifest["files"].values(), [])) == sorted(
        f"{c}/{f}" for c in CLASSES for f in os.listdir(folder / c))
    samples = np.load(run_dir / "export_inputs.npz")["inputs"]
    assert samples.shape == (min(8, manifest["counts"]["test"]), 32, 32, 3)
    assert "test_accuracy" in zoo.evaluate(str(run_dir))
    # A changed folder is noticed and named, not silently evaluated on other examples.
    (folder / "dog" / "new.png").write_bytes(_encode(3, "png"))
    with pytest.raises(ValueError, match=r"data changed since the run started.*dog/new\.png"):
        zoo.evaluate(str(run_dir))


def test_corrupt_image_is_named_in_one_line_and_can_be_skipped(folder, tmp_path, capsys):
    (folder / "owl" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (folder / "cat" / "cut.jpg").write_bytes(_encode(7, "jpg")[:60])  # truncated download
    with pytest.raises(ValueError) as err:
        data.load("lenet5", f"folder:{folder}")
    message = str(err.value)
    assert "\n" not in message and "cat/cut.jpg cannot be decoded as an image" in message
    assert "1 more bad file" in message and "skip_bad_images=True" in message
    run_dir = tmp_path / "run"
    zoo.train("lenet5", data=f"folder:{folder}", epochs=1, run_dir=str(run_dir), verbose=0,
              export=False, skip_bad_images=True)
    assert "Skipping 2 of 32 image(s) that cannot be decoded" in capsys.readouterr().err
    skipped = (run_dir / training.SKIPPED_FILE).read_text().splitlines()
    assert [line.split("\t")[0] for line in skipped] == ["cat/cut.jpg", "owl/broken.jpg"]
    assert sum(zio.read_json(str(run_dir / "config.json"))["num_examples"].values()) == 30


def test_header_pass_is_cached_by_the_folder_listing(folder, monkeypatch, index_cache):
    images.index_folder(str(folder))
    assert len(os.listdir(index_cache)) == 1

    def no_second_pass(path):
        raise AssertionError(f"header pass ran again on {path}")
    monkeypatch.setattr(images, "image_problem", no_second_pass)
    images.index_folder(str(folder))  # same listing: the cached result
    (folder / "cat" / "extra.png").write_bytes(_encode(1, "png"))
    with pytest.raises(AssertionError, match="header pass ran again"):
        images.index_folder(str(folder))  # a new listing: checked again


def test_class_problems_come_from_the_index(folder):
    os.makedirs(folder / "empty")
    with pytest.raises(ValueError, match=r"\['empty'\] hold no decodable images"):
        data.load("lenet5", f"folder:{folder}")
    bundle = data.load("lenet5", f"folder:{folder}", classes=[0, 3],
                       test_split=0.3)
    assert bundle.class_names == ["cat", "owl"] and bundle.num_classes == 2
    with pytest.raises(ValueError, match="do not occur in the data"):
        data.load("lenet5", f"folder:{folder}", classes=[0, 2],
                  test_split=0.3)


def _write_shards(root, shards=3, per_shard=10, num_classes=3):
    import tensorflow as tf
    os.makedirs(root, exist_ok=True)
    n = 0
    for s in range(shards):
        with tf.io.TFRecordWriter(str(root / f"train-{s:05d}-of-{shards:05d}")) as writer:
            for _ in range(per_shard):
                feature = {
                    images.IMAGE_KEY: tf.train.Feature(
                        bytes_list=tf.train.BytesList(value=[_encode(8 * n, "png")])),
                    images.LABEL_KEY: tf.train.Feature(
                        int64_list=tf.train.Int64List(value=[n % num_classes])),
                }
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
                n += 1
    return n


def test_tfrecord_shards_stream_and_split_by_record(tmp_path):
    total = _write_shards(tmp_path / "shards")
    bundle = data.load("lenet5", f"tfrecord:{tmp_path / 'shards'}/train-*", batch_size=4)
    assert isinstance(bundle.arrays, IndexSplits) and bundle.num_classes == 3
    assert bundle.arrays.index.counts == [10, 10, 10]
    seen = []
    for split in (bundle.train, bundle.validation, bundle.test):
        for xb, yb in split:
            values = np.round(xb.numpy().mean((1, 2, 3)) * 255 / 8).astype(int)
            assert (values % 3 == yb.numpy()).all()
            seen.extend(values.tolist())
    assert sorted(seen) == list(range(total))
    assert bundle.train.options().experimental_distribute.auto_shard_policy.name == "FILE"
    with pytest.raises(ValueError, match="No TFRecord files match"):
        data.load("lenet5", f"tfrecord:{tmp_path}/nothing-*")


def test_tfrecord_without_the_label_feature_is_refused(tmp_path):
    import tensorflow as tf
    path = tmp_path / "plain.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(b"not an example")
    with pytest.raises(ValueError, match="is not a TFRecord file of image examples"):
        data.load("lenet5", f"tfrecord:{path}")


def _generator_dataset(n, counter, offset=0):
    """Unknown cardinality: examples made on demand, counted as they are made."""
    import tensorflow as tf

    def examples():
        for i in range(offset, offset + n):
            counter[0] += 1
            yield np.full((8, 8, 1), i % 250, np.uint8), np.int64(i % 3)
    return tf.data.Dataset.from_generator(examples, output_signature=(
        tf.TensorSpec((8, 8, 1), tf.uint8), tf.TensorSpec((), tf.int64)))


def test_user_dataset_is_streamed_not_materialized():
    made = [0]
    ds = _generator_dataset(60, made)
    assert int(ds.cardinality()) < 0  # unknown: nothing to count but the stream itself
    bundle = data.load("mlp", ds, batch_size=16)
    assert made[0] == 60  # one label pass
    assert isinstance(bundle.arrays, IndexSplits) and bundle.arrays.x_train.dtype == np.int64
    assert bundle.num_classes == 3 and sum(bundle.num_examples.values()) == 60
    assert bundle.input_shape == (8, 8, 1)
    # uint8 pixels arrive scaled to [0, 1]: x * 255 is the example's number again
    seen = [round(float(x) * 255) for xb, _ in bundle.train for x in xb.numpy()[:, 0, 0, 0]]
    assert made[0] == 120  # the epoch read the stream again, nothing was kept
    assert len(seen) == bundle.num_examples["train"] == len(set(seen))


def test_user_datasets_as_train_validation_test():
    made = [0]
    train, val, test = (_generator_dataset(n, made, offset) for n, offset in
                        ((45, 0), (9, 100), (12, 200)))
    bundle = data.load("mlp", (train, val, test), batch_size=8)
    assert bundle.num_examples == {"train": 45, "validation": 9, "test": 12}
    assert sorted(round(float(x) * 255) for xb, _ in bundle.test
                  for x in xb.numpy()[:, 0, 0, 0]) == list(range(200, 212))
    two = data.load("mlp", (_generator_dataset(50, made), _generator_dataset(9, made, 100)))
    assert two.num_examples["validation"] == 9 and two.num_examples["test"] == 10
    with pytest.raises(ValueError, match="must have integer class ids"):
        import tensorflow as tf
        data.load("mlp", tf.data.Dataset.from_tensor_slices((np.zeros((9, 4)), np.zeros(9))))


def test_streamed_user_dataset_trains(tmp_path):
    result = zoo.train("mlp", data=_generator_dataset(60, [0]), epochs=2, batch_size=16,
                       run_dir=str(tmp_path / "run"), verbose=0, export=False)
    assert len(result.history["loss"]) == 2 and "test_accuracy" in result.metrics


def test_tfds_streams_with_a_sliced_validation_split():
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=30):
        bundle = data.load("lenet5", "tfds:mnist", batch_size=8)
        assert isinstance(bundle.arrays, IndexSplits)
        assert bundle.arrays.index.roles == ("train", "validation", "test")
        assert bundle.num_examples == {"train": 27, "validation": 3, "test": 30}
        x, _ = next(iter(bundle.train))
        assert x.shape == (8, 32, 32, 1)


def test_cache_folder_keeps_decoded_examples(folder, tmp_path):
    cache = tmp_path / "cache"
    bundle = data.load("lenet5", f"folder:{folder}", batch_size=5, options={"cache": str(cache)})
    def epoch():
        return sorted(v for x, _ in bundle.train
                      for v in np.round(x.numpy().mean((1, 2, 3)) * 255 / 8).astype(int))
    first = epoch()
    assert any(name.startswith("train-") for name in os.listdir(cache))
    # Later epochs read the decoded examples from the cache, not the files.
    for name in CLASSES:
        for file in os.listdir(folder / name):
            os.remove(folder / name / file)
    assert epoch() == first and len(first) == bundle.num_examples["train"]
    with pytest.raises(TypeError, match="cache must be a folder path"):
        data.load("lenet5", f"folder:{folder}", options={"cache": 3})


def _values(dataset):
    """The examples a pipeline yields, in order, by their image's grey value (unique per file)."""
    return [int(round(float(image.mean()) * 255 / 8))
            for xb, _ in dataset for image in xb.numpy()]


def test_each_worker_decodes_its_own_share_once_per_epoch(folder):
    source = f"folder:{folder}"
    whole = data.load("lenet5", source, batch_size=4, input_shape=(32, 32, 3))
    shares = [data.load("lenet5", source, batch_size=4, input_shape=(32, 32, 3),
                        splits=whole.arrays, workers=(2, index)) for index in (0, 1)]
    count = whole.num_examples["train"]
    assert count % 2 == 1  # the split leaves one example over: it shows the remainder rule
    # Each worker: its share only, under its own (OFF) sharding, at the per-worker batch.
    for share in shares:
        assert share.train.options().experimental_distribute.auto_shard_policy.name == "OFF"
        assert int(share.train.cardinality()) == -(-(count // 2) // 2)
        assert next(iter(share.train))[0].shape[0] == 2
    train_ids = set(_values(whole.train))
    for _ in range(2):  # two epochs: each iterator is the next epoch's order
        order = _values(whole.train)
        first, second = (_values(share.train) for share in shares)
        assert len(first) == len(second) == count // 2
        # The workers split that epoch's shuffled order: every other example,
        # from the same order as the single pipeline's; the last one left over.
        assert first == order[0:2 * (count // 2):2] and second == order[1:2 * (count // 2):2]
        assert not set(first) & set(second)
        assert set(first) | set(second) | {order[-1]} == train_ids
    assert len(train_ids) == count
    with pytest.raises(ValueError, match=r"train split has \d+ example\(s\), fewer than the "
                                         r"40 workers"):
        data.load("lenet5", source, batch_size=40, input_shape=(32, 32, 3), splits=whole.arrays,
                  workers=(40, 0))
    with pytest.raises(ValueError, match=r"multiple of the number of workers. Received: "
                                         r"batch_size=5 for 2 workers"):
        data.load("lenet5", source, batch_size=5, input_shape=(32, 32, 3), splits=whole.arrays,
                  workers=(2, 0))


_KILLED_TRAIN = """
import os, signal, sys
import keras, numpy as np
import zoo

folder, kill, run_dirs = sys.argv[1], sys.argv[2] == "kill", sys.argv[3:]

class Killer(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if self.kill and self.epoch == 1 and batch == 2:  # mid-epoch, after epoch 0's backup
            os.kill(os.getpid(), signal.SIGKILL)
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

for run_dir in run_dirs:
    killer = Killer()
    killer.kill = kill and run_dir == run_dirs[-1]  # the last run of the list is killed
    result = zoo.train("lenet5", data="folder:" + folder, epochs=3, batch_size=4, seed=1,
                       deterministic=True, run_dir=run_dir, verbose=0, export=False,
                       augment=("flip",), model_kwargs={"input_shape": (32, 32, 3)},
                       callbacks=[killer])
    np.savez(run_dir + ".weights.npz", *result.model.get_weights())
"""


def test_kill_then_resume_on_a_folder_ends_with_the_uninterrupted_weights(folder, tmp_path):
    """kill -9 mid-epoch on a streamed source: the rerun replays that epoch's order and draws."""
    import subprocess
    import sys
    env = {**os.environ, "ZOO_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")

    def spawn(kill, *run_dirs):
        return subprocess.run([sys.executable, "-c", _KILLED_TRAIN, str(folder), kill, *run_dirs],
                              env=env, capture_output=True, text=True, timeout=600)

    # One process: the uninterrupted run, then the same run killed in epoch 1.
    first = spawn("kill", full, killed)
    assert first.returncode == -9, first.stderr[-2000:]
    assert os.path.exists(full + ".weights.npz") and not os.path.exists(killed + ".weights.npz")
    assert not os.path.exists(os.path.join(killed, "metrics.json"))
    # The same command again resumes from epoch 0's backup and finishes.
    second = spawn("go", killed)
    assert second.returncode == 0, second.stderr[-2000:]
    a, b = np.load(full + ".weights.npz"), np.load(killed + ".weights.npz")
    assert len(a.files) == len(b.files) > 0
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])
    assert zio.read_json(os.path.join(killed, "metrics.json"))


WORDS = {"neg": ("bad", "awful", "dull"), "pos": ("good", "great", "fine")}


def _text_folder(root, per_class=12):
    """`per_class` files per class, each two of its class's words and its own word f<n>.

    The "neg" files end with a byte that is not UTF-8 (a Latin-1 file).
    """
    for c, (name, words) in enumerate(WORDS.items()):
        os.makedirs(root / name, exist_ok=True)
        for i in range(per_class):
            n = c * per_class + i
            (root / name / f"{i:02d}.txt").write_bytes(
                f"{words[i % 3]} f{n} {words[(i + 1) % 3]}".encode()
                + (b" caf\xe9\n" if name == "neg" else b"\n"))
    return root


def _words(path):
    return path.read_bytes().decode("utf-8", errors="replace").split()


def test_text_folder_streams_trains_and_keeps_its_split(tmp_path):
    root = _text_folder(tmp_path / "texts")
    source = f"folder:{root}"
    run_dir = tmp_path / "run"
    result = zoo.train("gru_classifier", data=source, epochs=1, batch_size=8,
                       run_dir=str(run_dir), verbose=0, export=False,
                       data_options={"sequence_length": 6},
                       model_kwargs={"vocab_size": 60, "embedding_dim": 4, "units": 4})
    splits = result.bundle.arrays
    # A stream: the split holds file ids and the index holds paths, no text.
    assert isinstance(splits, IndexSplits) and splits.x_train.dtype.kind == "i"
    assert not any(isinstance(v, str) and "good" in v for v in vars(splits.index).values())
    assert len(result.history["loss"]) == 1 and "test_accuracy" in result.metrics
    # The vocabulary came from a streamed pass over the training files only.
    manifest = zio.read_json(str(run_dir / training.SPLIT_FILE))
    train_words = {w for rel in manifest["files"]["train"] for w in _words(root / rel)}
    held_out = {w for part in ("validation", "test") for rel in manifest["files"][part]
                for w in _words(root / rel)} - train_words
    vocabulary = set(result.model.get_layer("text_vectorization").get_vocabulary()) - {"",
                                                                                     "[UNK]"}
    assert held_out and vocabulary <= train_words and not vocabulary & held_out
    assert "caf\ufffd" in vocabulary and (run_dir / "model.keras").exists()  # saved as text
    assert sum(map(len, manifest["files"].values())) == 2 * 12
    # The same split again (as a resume sees it), and evaluate checks it.
    again = training.plan("gru_classifier", data=source, data_options={"sequence_length": 6})
    assert again.bundle.arrays.manifest() == splits.manifest() == {
        k: manifest[k] for k in ("listing", "counts", "hashes")}
    assert "test_accuracy" in zoo.evaluate(str(run_dir))
    (root / "pos" / "new.txt").write_text("great news")
    with pytest.raises(ValueError, match=r"data changed since the run started.*added"):
        zoo.evaluate(str(run_dir))
    # An empty or blank file: one line naming it; an empty class sub-folder too.
    (root / "neg" / "blank.txt").write_text("  \n\t")
    with pytest.raises(ValueError) as err:
        training.load_data("gru_classifier", source)
    assert "\n" not in str(err.value) and f"Empty text at {root / 'neg' / 'blank.txt'}" in str(
        err.value)
    (root / "neg" / "blank.txt").unlink()
    os.makedirs(root / "zzz")
    with pytest.raises(ValueError, match=r"\['zzz'\] hold no files"):
        training.load_data("gru_classifier", source)
