"""Text sources (csv/folder/tfds mock), splits, the vocabulary step, raw-string export, bad input."""

import csv

import numpy as np
import pytest

import zoo
import zoo.training

POSITIVE = ["great", "good", "excellent", "love", "wonderful"]
NEGATIVE = ["bad", "awful", "terrible", "hate", "boring"]
FILLER = ["the", "movie", "was", "a", "plot", "actor", "and", "it", "really", "film"]


def review(rng, label, uid=None):
    words = list(rng.choice(FILLER, 6)) + list(rng.choice(POSITIVE if label else NEGATIVE, 2))
    if uid is not None:
        words.append(f"w{uid}")  # a word that occurs in this one row only
    rng.shuffle(words)
    return " ".join(words)


def write_reviews(path, n=120, *, seed=0, header=("review", "sentiment"), rows=None):
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        if rows is not None:
            writer.writerows(rows)
            return path
        for i in range(n):
            label = i % 3 != 0  # 2:1 imbalance, so stratification is visible
            writer.writerow([review(rng, label, uid=i), "pos" if label else "neg"])
    return path


CSV_OPTIONS = {"text_column": "review", "label_column": "sentiment"}


def test_csv_source_gives_stratified_seeded_string_splits(tmp_path):
    path = write_reviews(tmp_path / "reviews.csv")
    bundle = zoo.training.load_data("lstm_classifier", f"csv:{path}", options=CSV_OPTIONS, seed=0)
    arrays = bundle.arrays
    assert bundle.class_names == ["neg", "pos"] and bundle.num_classes == 2
    assert bundle.input_shape == (200,)  # the model's own sequence length
    assert sum(bundle.num_examples.values()) == 120
    assert isinstance(arrays.x_train[0], str)
    for y in (arrays.y_train, arrays.y_val, arrays.y_test):
        # 1/3 of every split is "neg" (stratified), up to rounding.
        assert abs((y == 0).mean() - 1 / 3) < 0.1
    # Splits are disjoint and cover the file.
    texts = [*arrays.x_train, *arrays.x_val, *arrays.x_test]
    assert len(set(texts)) == 120
    again = zoo.training.load_data("lstm_classifier", f"csv:{path}", options=CSV_OPTIONS, seed=0)
    other = zoo.training.load_data("lstm_classifier", f"csv:{path}", options=CSV_OPTIONS, seed=1)
    assert list(again.arrays.x_test) == list(arrays.x_test)
    assert list(other.arrays.x_test) != list(arrays.x_test)
    shorter = zoo.training.load_data("lstm_classifier", f"csv:{path}",
                         options={**CSV_OPTIONS, "sequence_length": 16})
    assert shorter.input_shape == (16,)
    # Declared classes fix the names and their order (ids follow it).
    declared = zoo.training.load_data("lstm_classifier", f"csv:{path}", options=CSV_OPTIONS,
                          classes=["pos", "neg"])
    assert declared.class_names == ["pos", "neg"]
    name_of = {t: bundle.class_names[int(y)] for x_, y_ in
               ((arrays.x_train, arrays.y_train), (arrays.x_val, arrays.y_val),
                (arrays.x_test, arrays.y_test)) for t, y in zip(x_, y_)}
    assert all(name_of[t] == declared.class_names[int(y)]
               for t, y in zip(declared.arrays.x_test, declared.arrays.y_test))
    with pytest.raises(ValueError, match="'pos'.*not among the declared classes"):
        zoo.training.load_data("lstm_classifier", f"csv:{path}", options=CSV_OPTIONS,
                   classes=["neg", "neutral"])


def test_folder_source_one_subfolder_per_class(tmp_path):
    rng = np.random.default_rng(0)
    for name, label in (("negative", 0), ("positive", 1)):
        (tmp_path / name).mkdir()
        for i in range(15):
            (tmp_path / name / f"{i}.txt").write_text(review(rng, label))
    bundle = zoo.training.load_data("gru_classifier", f"folder:{tmp_path}", seed=0)
    assert bundle.class_names == ["negative", "positive"]
    assert sum(bundle.num_examples.values()) == 30
    # Streamed: the split holds file ids; the texts are read by the pipelines.
    assert bundle.arrays.x_train.dtype.kind == "i"
    seen = 0
    for split in (bundle.train, bundle.validation, bundle.test):
        for texts, labels in split:
            for text, label in zip(texts.numpy(), labels.numpy()):
                assert any(w in text.decode().split() for w in (POSITIVE if label else NEGATIVE))
                seen += 1
    assert seen == 30


def test_tfds_imdb_reviews_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=40):
        bundle = zoo.training.load_data("lstm_classifier", "tfds:imdb_reviews", seed=0)
    assert bundle.class_names == ["neg", "pos"]
    # The TFDS test split is kept as the test split; train is split into train/validation.
    assert bundle.num_examples["test"] == 40
    assert bundle.num_examples["train"] + bundle.num_examples["validation"] == 40
    assert isinstance(bundle.arrays.x_train[0], str)


def test_vocabulary_is_adapted_on_the_training_split_only(tmp_path):
    from zoo.tasks import get_hooks

    path = write_reviews(tmp_path / "reviews.csv")
    spec = zoo.get_spec("lstm_classifier")
    bundle = zoo.training.load_data(spec, f"csv:{path}", options={**CSV_OPTIONS, "sequence_length": 12})
    model = spec.build(input_shape=bundle.input_shape, vocab_size=400, embedding_dim=4,
                       units=4, num_classes=2)
    wrapped = get_hooks(spec).wrap_model(model, bundle)
    assert wrapped.inputs[0].dtype == "string"
    vocabulary = set(wrapped.get_layer("text_vectorization").get_vocabulary())
    train_words = {w for t in bundle.arrays.x_train for w in t.split()}
    test_only = {w for t in bundle.arrays.x_test for w in t.split()} - train_words
    assert test_only, "each row has a unique word, so the test split has unseen words"
    assert vocabulary - {"", "[UNK]"} <= train_words
    assert not vocabulary & test_only
    # Raw strings in, class probabilities out; an unseen word maps to [UNK].
    probs = np.asarray(wrapped(np.array(["great movie", "w999999 awful"]), training=False))
    assert probs.shape == (2, 2)
    ids = np.asarray(wrapped.get_layer("text_vectorization")(np.array(["w999999 great"])))
    assert ids.shape == (1, 12) and ids[0, 0] == 1 and ids[0, 2] == 0


@pytest.mark.heavy
def test_trained_text_model_serves_raw_strings_in_a_fresh_process(tmp_path):
    from zoo.export import run_saved_model_fresh
    from zoo.training import train

    path = write_reviews(tmp_path / "reviews.csv", n=300)
    result = train("lstm_classifier", f"csv:{path}", epochs=5, run_dir=str(tmp_path / "run"),
                   data_options={**CSV_OPTIONS, "sequence_length": 12},
                   model_kwargs={"vocab_size": 400, "embedding_dim": 16, "units": 16},
                   learning_rate=1e-2, verbose=0)
    print(f"lstm_classifier on generated reviews: test accuracy "
          f"{result.metrics['test_accuracy']:.3f}")
    assert result.metrics["test_accuracy"] >= 0.9
    card = zoo.runs.read_json(str(tmp_path / "run" / "model_card.json"))
    assert card["exports"]["saved_model"]["max_abs_diff"] <= 1e-5
    texts = ["a wonderful film and a great plot", "boring awful movie, I hate it",
             "the actor was really excellent", "terrible"]
    expected = np.asarray(result.model(np.array(texts), training=False))
    served = run_saved_model_fresh(str(tmp_path / "run" / "saved_model"),
                                   {"text": np.array(texts, dtype=bytes)})
    assert set(served) == {"predictions"}
    output = served["predictions"]
    np.testing.assert_allclose(output, expected, atol=1e-5)
    assert list(expected.argmax(1)) == [1, 0, 1, 0]


@pytest.mark.parametrize("rows,options,message", [
    ([["good film", "pos"], ["", "neg"], ["bad", "neg"]], {}, "Empty text.*text_column='review'"),
    ([["good film", "pos"], ["   ", "neg"]], {}, "Empty text"),
    ([["good", "pos"], ["bad", ""]], {}, "label_column='sentiment'.*empty label"),
    ([["good", "pos"]], {"text_column": "body"}, "text_column.*'body'"),
    ([["good", "pos"]], {"label_column": "stars"}, "label_column.*'stars'"),
    ([["good", "pos"], ["meh", "neutral"], ["bad", "neg"]], {"classes": ["neg", "pos"]},
     "label_column='sentiment'.*'neutral'.*declared classes"),
    ([["good", "pos"], ["fine", "pos"]], {}, "at least two distinct labels"),
])
def test_bad_text_input_names_the_column(tmp_path, rows, options, message):
    from zoo.tasks import get_hooks

    path = write_reviews(tmp_path / "bad.csv", rows=rows)
    spec = zoo.get_spec("lstm_classifier")
    with pytest.raises(ValueError, match=message):
        get_hooks(spec).load_source(spec, f"csv:{path}", {**CSV_OPTIONS, **options})


def test_bad_folder_and_unknown_options(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "1.txt").write_text("fine")
    (tmp_path / "b" / "1.txt").write_text("  \n")
    with pytest.raises(ValueError, match="Empty text"):
        zoo.training.load_data("lstm_classifier", f"folder:{tmp_path}")
    with pytest.raises(ValueError, match="does not exist"):
        zoo.training.load_data("lstm_classifier", f"folder:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="lookback"):
        zoo.training.load_data("lstm_classifier", f"folder:{tmp_path}", options={"lookback": 3})
