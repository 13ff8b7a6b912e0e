"""The sequence families learn what they are for (CPU, synthetic data, fixed seeds).

- long-range memory: the label is the token at position 0 of a length-50
  random sequence; LSTM/GRU remember it, a bag-of-tokens MLP cannot;
- noisy seasonal series: LSTM/GRU forecasters beat the naive last-value
  forecast by a wide margin;
- a Transformer encoder learns the same memory task and seq2seq with
  attention learns to reverse sequences;
- builder arguments are validated before Keras is reached.
"""

import numpy as np
import pytest

import zoo

LENGTH, SYMBOLS = 50, 4  # tokens 2..5; 0 pads, 1 is out-of-vocabulary


def memory_task(n, rng, *, variable_length):
    """Sequences of random symbols; label = the first symbol.

    With `variable_length` the sequences end after a log-uniform number of
    steps (the rest is padding, masked by the embedding): the short ones make
    the link between first token and label easy to find, the long ones teach
    the network to keep it.  Test sequences always have the full 50 tokens.
    """
    x = rng.integers(2, 2 + SYMBOLS, size=(n, LENGTH)).astype("int32")
    y = x[:, 0] - 2
    if variable_length:
        lengths = np.exp(rng.uniform(np.log(2), np.log(LENGTH + 1), size=n)).astype(int)
        x[np.arange(LENGTH)[None, :] >= lengths[:, None]] = 0
    return x, y


def _fit_memory(model, rng, epochs):
    import keras

    x, y = memory_task(3000, rng, variable_length=True)
    x_test, y_test = memory_task(500, rng, variable_length=False)
    model.compile(keras.optimizers.Adam(1e-2, clipnorm=1.0), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]


@pytest.mark.parametrize("name", ["lstm_classifier", "gru_classifier"])
def test_recurrent_long_range_memory(name, rng):
    import keras

    keras.utils.set_random_seed(0)
    model = zoo.build(name, input_shape=(LENGTH,), vocab_size=SYMBOLS + 2, embedding_dim=8,
                      units=32, num_classes=SYMBOLS)
    accuracy = _fit_memory(model, rng, epochs=5)
    print(f"{name}: first-token memory over {LENGTH} steps, test accuracy {accuracy:.3f} "
          f"(chance {1 / SYMBOLS:.2f})")
    assert accuracy >= 0.95


def test_bag_of_tokens_cannot_remember_position(rng):
    """Counts of tokens carry almost nothing about which one came first."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((LENGTH,), dtype="int32")
    counts = keras.layers.CategoryEncoding(SYMBOLS + 2, output_mode="count")(inputs)
    hidden = keras.layers.Dense(32, activation="relu")(counts)
    model = keras.Model(inputs, keras.layers.Dense(SYMBOLS, activation="softmax")(hidden))
    accuracy = _fit_memory(model, rng, epochs=5)
    print(f"bag-of-tokens MLP: test accuracy {accuracy:.3f} (chance {1 / SYMBOLS:.2f})")
    assert accuracy < 0.45


def test_transformer_learns_first_token(rng):
    import keras

    keras.utils.set_random_seed(0)
    x, y = memory_task(2000, rng, variable_length=False)
    x_test, y_test = memory_task(500, rng, variable_length=False)
    model = zoo.build("transformer_classifier", input_shape=(LENGTH,), vocab_size=SYMBOLS + 2,
                      embedding_dim=16, num_heads=2, ff_dim=32, num_layers=1, dropout=0.0,
                      num_classes=SYMBOLS)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=7, batch_size=64, verbose=0)
    accuracy = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    print(f"transformer: first-token test accuracy {accuracy:.3f} (chance {1 / SYMBOLS:.2f})")
    assert accuracy >= 0.9


REVERSAL_LENGTH, REVERSAL_VOCAB = 6, 10  # symbols 2..9: chance per token is 1/8


def reversal_task(n, rng):
    source = rng.integers(2, REVERSAL_VOCAB, size=(n, REVERSAL_LENGTH)).astype("int32")
    return source, source[:, ::-1].copy()


def test_seq2seq_bahdanau_learns_reversal(rng):
    import keras

    from zoo.models.attention import greedy_decode, shift_right

    keras.utils.set_random_seed(0)
    source, target = reversal_task(3000, rng)
    test_source, test_target = reversal_task(300, rng)
    model = zoo.build("seq2seq_attention", input_shape=(REVERSAL_LENGTH,),
                      vocab_size=REVERSAL_VOCAB, embedding_dim=16, units=32,
                      attention="bahdanau", cell="lstm")
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    # Teacher forcing: the decoder reads the true previous target token.
    model.fit([source, shift_right(target)], target, epochs=8, batch_size=64, verbose=0)
    predicted = greedy_decode(model, test_source)  # feeds its own predictions back
    token_accuracy = float((predicted == test_target).mean())
    print(f"seq2seq bahdanau/lstm: reversal token accuracy {token_accuracy:.3f} "
          f"(chance 0.125), whole sequences {(predicted == test_target).all(1).mean():.3f}")
    assert token_accuracy >= 0.8


def test_seq2seq_luong_trains_with_zoo_train_and_exports(rng, tmp_path):
    """zoo.train on (source, target) arrays: teacher forcing in the pipeline, greedy metrics."""
    import tensorflow as tf

    from zoo.training import train

    source, target = reversal_task(3000, rng)
    result = train("seq2seq_attention", data=(source, target), epochs=8, learning_rate=1e-2,
                   batch_size=64, run_dir=str(tmp_path / "run"), verbose=0,
                   model_kwargs={"embedding_dim": 16, "units": 32, "attention": "luong",
                                 "cell": "gru"})
    m = result.metrics
    print(f"seq2seq luong/gru via zoo.train: greedy token accuracy "
          f"{m['greedy_token_accuracy']:.3f}, sequences {m['greedy_sequence_accuracy']:.3f}")
    assert m["greedy_token_accuracy"] >= 0.8
    assert result.model.inputs[1].shape[1] == REVERSAL_LENGTH
    loaded = tf.saved_model.load(str(tmp_path / "run" / "saved_model"))
    served = loaded.signatures["serving_default"](
        source_tokens=tf.constant(source[:2]),
        decoder_tokens=tf.constant(np.ones((2, REVERSAL_LENGTH), "int32")))
    (probs,) = served.values()
    assert probs.shape == (2, REVERSAL_LENGTH, REVERSAL_VOCAB)


def test_seq2seq_source_validation():
    from zoo.tasks.seq2seq import Seq2SeqHooks

    spec = zoo.get_spec("seq2seq_attention")
    hooks = Seq2SeqHooks()
    ok = np.full((10, 4), 2, "int32")
    with pytest.raises(ValueError, match="target token id 1 is reserved"):
        hooks.load_source(spec, (ok, np.ones((10, 4), "int32")), {})
    with pytest.raises(ValueError, match="source tokens.*integer"):
        hooks.load_source(spec, (ok.astype("float32"), ok), {})
    with pytest.raises(ValueError, match="10 source but 9 target"):
        hooks.load_source(spec, (ok, ok[:9]), {})


@pytest.mark.parametrize("name", ["lstm_forecaster", "gru_forecaster"])
def test_forecaster_beats_naive_on_seasonal_series(name):
    import keras

    from zoo.splits import series_splits
    from zoo.tasks.timeseries import forecast_metrics, with_normalization

    rng = np.random.default_rng(0)
    t = np.arange(1200)
    load = 100 + 20 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 3, t.size)
    temp = 10 + 5 * np.sin(2 * np.pi * (t - 3) / 24) + rng.normal(0, 1, t.size)
    splits = series_splits(np.stack([temp, load], 1), columns=["temp", "load"],
                           targets=["load"], lookback=48, horizon=12)
    keras.utils.set_random_seed(0)
    model = with_normalization(zoo.build(name, input_shape=(48, 2), horizon=12, units=32),
                               splits.extras)
    model.compile(keras.optimizers.Adam(3e-3), "mse")
    model.fit(splits.x_train, splits.y_train, epochs=6, batch_size=32, verbose=0)
    m = forecast_metrics(model, splits.x_test, splits.y_test, splits.extras)
    print(f"{name}: test MAE {m['test_mae']:.4f} vs naive {m['naive_mae']:.2f} "
          f"(ratio {m['mae_vs_naive']:.2f}), seasonal naive {m['seasonal_naive_mae']:.2f}")
    assert m["test_mae"] <= 0.7 * m["naive_mae"]


@pytest.mark.parametrize("name,kwargs,argument", [
    ("lstm_classifier", {"units": 0}, "units"),
    ("gru_classifier", {"num_layers": -1}, "num_layers"),
    ("lstm_classifier", {"dropout": 1.5}, "dropout"),
    ("rnn_classifier", {"recurrent_dropout": -0.1}, "recurrent_dropout"),
    ("lstm_classifier", {"vocab_size": 2}, "vocab_size"),
    ("lstm_classifier", {"input_shape": (10, 3)}, "input_shape"),
    ("gru_forecaster", {"horizon": 0}, "horizon"),
    ("lstm_forecaster", {"input_shape": (48,)}, "input_shape"),
    ("lstm_forecaster", {"num_targets": 0}, "num_targets"),
    ("transformer_classifier", {"embedding_dim": 30, "num_heads": 4}, "embedding_dim"),
    ("transformer_classifier", {"ff_dim": 0}, "ff_dim"),
    ("seq2seq_attention", {"attention": "cosine"}, "attention"),
    ("seq2seq_attention", {"cell": "rnn"}, "cell"),
    ("seq2seq_attention", {"target_vocab_size": 1}, "target_vocab_size"),
])
def test_builders_reject_bad_arguments(name, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        zoo.build(name, **kwargs)


def test_recurrent_options_build_the_right_layers():
    import keras

    model = zoo.build("gru_classifier", input_shape=(7,), vocab_size=30, embedding_dim=4,
                      units=5, num_layers=3, bidirectional=True, dropout=0.2,
                      recurrent_dropout=0.1, num_classes=3)
    wrappers = [layer for layer in model.layers if isinstance(layer, keras.layers.Bidirectional)]
    assert len(wrappers) == 3
    assert [w.forward_layer.return_sequences for w in wrappers] == [True, True, False]
    assert all(w.forward_layer.recurrent_dropout == 0.1 for w in wrappers)
    assert model.output_shape == (None, 3)
    forecaster = zoo.build("lstm_forecaster", input_shape=(10, 3), horizon=4, num_targets=2)
    assert forecaster.output_shape == (None, 4, 2)


def test_seq2seq_decoding_is_causal(rng):
    """Changing a later decoder token must not change earlier predictions."""
    model = zoo.build("seq2seq_attention", input_shape=(5,), vocab_size=12, embedding_dim=4,
                      units=6)
    source = rng.integers(2, 12, size=(2, 5)).astype("int32")
    decoder = rng.integers(2, 12, size=(2, 5)).astype("int32")
    changed = decoder.copy()
    changed[:, 3:] = 2
    a = np.asarray(model([source, decoder], training=False))
    b = np.asarray(model([source, changed], training=False))
    np.testing.assert_allclose(a[:, :3], b[:, :3], atol=1e-6)
    assert not np.allclose(a[:, 3:], b[:, 3:])
