"""Recurrent networks: SimpleRNN (Elman 1990), LSTM (Hochreiter & Schmidhuber 1997), GRU (Cho et al. 2014).

Two heads share one private builder:
- classifiers read integer token ids (sequence_length,) through an embedding
  (`zoo train lstm_classifier --data csv:reviews.csv` prepends a
  TextVectorization layer, see `zoo.tasks.text`), and
- forecasters read numeric windows (lookback, features) and predict the next
  `horizon` steps of `num_targets` series (`zoo.tasks.timeseries` adds the
  normalisation in front and the de-normalisation behind).
"""

from zoo import checks
from zoo._lazy import keras
from zoo.registry import Recipe, register

CELLS = {"simple_rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}
TEXT_HOOKS = "zoo.tasks.text:TextHooks"
SERIES_HOOKS = "zoo.tasks.timeseries:SeriesHooks"


def _check_common(*, cell, units, num_layers, bidirectional, dropout, recurrent_dropout):
    checks.choice("cell", cell, tuple(CELLS))
    checks.positive_int("units", units)
    checks.positive_int("num_layers", num_layers)
    checks.choice("bidirectional", bidirectional, (True, False))
    checks.fraction("dropout", dropout)
    checks.fraction("recurrent_dropout", recurrent_dropout)


def _recurrent_stack(x, *, cell, units, num_layers, bidirectional, dropout,
                     recurrent_dropout, name):
    """`num_layers` stacked recurrent layers; all but the last return full sequences."""
    for i in range(1, num_layers + 1):
        layer = getattr(keras.layers, CELLS[cell])(
            units, return_sequences=i < num_layers, dropout=dropout,
            recurrent_dropout=recurrent_dropout, name=f"{name}_{cell}{i}")
        if bidirectional:
            layer = keras.layers.Bidirectional(layer, name=f"{name}_bidirectional{i}")
        x = layer(x)
    return x


def check_token_inputs(input_shape, vocab_size, embedding_dim):
    """Validate the arguments every token-id classifier shares; returns input_shape."""
    input_shape = checks.shape("input_shape", input_shape, rank=1)
    checks.positive_int("vocab_size", vocab_size)
    if vocab_size < 3:
        # 0 is padding and 1 the out-of-vocabulary id of TextVectorization.
        raise ValueError(f"vocab_size must be at least 3. Received: vocab_size={vocab_size!r}")
    checks.positive_int("embedding_dim", embedding_dim)
    return input_shape


def _sequence_classifier(cell, *, input_shape, vocab_size, embedding_dim, num_classes, units,
                         num_layers, bidirectional, dropout, recurrent_dropout,
                         classifier_activation, name):
    input_shape = check_token_inputs(input_shape, vocab_size, embedding_dim)
    checks.positive_int("num_classes", num_classes)
    _check_common(cell=cell, units=units, num_layers=num_layers, bidirectional=bidirectional,
                  dropout=dropout, recurrent_dropout=recurrent_dropout)
    inputs = keras.Input(shape=input_shape, dtype="int32", name="tokens")
    # mask_zero: padded positions (id 0) are skipped by the recurrent layers,
    # so the last state is the one after the last real token.
    x = keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=True,
                               name=f"{name}_embedding")(inputs)
    x = _recurrent_stack(x, cell=cell, units=units, num_layers=num_layers,
                         bidirectional=bidirectional, dropout=dropout,
                         recurrent_dropout=recurrent_dropout, name=name)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"{name}_head_dropout")(x)
    # float32 output (also under mixed precision) keeps the softmax and loss stable.
    outputs = keras.layers.Dense(num_classes, activation=classifier_activation,
                                 dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def _sequence_forecaster(cell, *, input_shape, horizon, num_targets, units, num_layers,
                         bidirectional, dropout, recurrent_dropout, name):
    input_shape = checks.shape("input_shape", input_shape, rank=2)
    checks.positive_int("horizon", horizon)
    checks.positive_int("num_targets", num_targets)
    _check_common(cell=cell, units=units, num_layers=num_layers, bidirectional=bidirectional,
                  dropout=dropout, recurrent_dropout=recurrent_dropout)
    inputs = keras.Input(shape=input_shape, name="window")
    x = _recurrent_stack(inputs, cell=cell, units=units, num_layers=num_layers,
                         bidirectional=bidirectional, dropout=dropout,
                         recurrent_dropout=recurrent_dropout, name=name)
    # Direct multi-step forecast: one linear unit per (step, target), which
    # avoids the error accumulation of feeding predictions back in.
    x = keras.layers.Dense(horizon * num_targets, dtype="float32", name="predictions")(x)
    if num_targets > 1:
        x = keras.layers.Reshape((horizon, num_targets), name="forecast")(x)
    return keras.Model(inputs, x, name=name)


def _classifier_space(hp):
    return {**_bilstm_space(hp), "bidirectional": hp.Boolean("bidirectional", default=False)}


def _bilstm_space(hp):
    return {
        "embedding_dim": hp.Choice("embedding_dim", [32, 64, 128], default=128),
        "units": hp.Choice("units", [32, 64, 128], default=64),
        "num_layers": hp.Int("num_layers", 1, 3, default=1),
        "dropout": hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.0),
    }


def _forecaster_space(hp):
    return {
        "units": hp.Choice("units", [16, 32, 64, 128], default=64),
        "num_layers": hp.Int("num_layers", 1, 3, default=1),
        "dropout": hp.Float("dropout", 0.0, 0.3, step=0.1, default=0.0),
    }


_CLASSIFIER = dict(task="classification", input_kind="tokens", input_policy="resize",
                   input_dtype="int32", test_input_shape=(6,), min_input_shape=(1,),
                   hooks=TEXT_HOOKS, search_space=_classifier_space,
                   recipe=Recipe(optimizer="adam", learning_rate=1e-3, epochs=10,
                                 early_stopping_patience=3),
                   test_kwargs={"vocab_size": 20, "embedding_dim": 4, "units": 4,
                                "num_classes": 3})
_FORECASTER = dict(task="regression", input_kind="timeseries", input_policy="data",
                   test_input_shape=(6, 2), min_input_shape=(1, 1), hooks=SERIES_HOOKS,
                   search_space=_forecaster_space,
                   recipe=Recipe(optimizer="adam", learning_rate=1e-3, epochs=30, loss="mse",
                                 early_stopping_patience=5),
                   test_kwargs={"units": 4, "horizon": 3})


@register(family="rnn", paper="Elman 1990, Finding structure in time", num_params=2_572_482,
          params_note="vocab 20000, embedding 128, 64 SimpleRNN units, 2 classes", **_CLASSIFIER)
def rnn_classifier(*, input_shape=(200,), vocab_size=20_000, embedding_dim=128, num_classes=2,
                   units=64, num_layers=1, bidirectional=False, dropout=0.0,
                   recurrent_dropout=0.0, classifier_activation="softmax",
                   name="rnn_classifier"):
    """Embedding + (stacked) SimpleRNN text classifier over token ids.

    Args:
        input_shape: (sequence_length,) of int token ids, 0 = padding. Defaults to (200,).
        vocab_size: token ids are in [0, vocab_size). Defaults to 20000.
        embedding_dim: embedding width. Defaults to 128.
        num_classes: number of classes. Defaults to 2.
        units: recurrent units per layer (per direction). Defaults to 64.
        num_layers: stacked recurrent layers. Defaults to 1.
        bidirectional: wrap each layer in `Bidirectional`. Defaults to False.
        dropout: input dropout of each recurrent layer and before the head. Defaults to 0.
        recurrent_dropout: dropout on the recurrent state. Defaults to 0.
        classifier_activation: activation of the output layer. Defaults to "softmax".
        name: model name. Defaults to "rnn_classifier".
    """
    return _sequence_classifier("simple_rnn", **locals())


@register(family="rnn", paper="Hochreiter & Schmidhuber 1997, Long short-term memory",
          num_params=2_609_538,
          params_note="vocab 20000, embedding 128, 64 LSTM units, 2 classes", **_CLASSIFIER)
def lstm_classifier(*, input_shape=(200,), vocab_size=20_000, embedding_dim=128, num_classes=2,
                    units=64, num_layers=1, bidirectional=False, dropout=0.0,
                    recurrent_dropout=0.0, classifier_activation="softmax",
                    name="lstm_classifier"):
    """Embedding + (stacked) LSTM text classifier over token ids.

    Args: as `rnn_classifier`.
    """
    return _sequence_classifier("lstm", **locals())


@register(family="rnn", paper="Cho et al. 2014, Learning phrase representations using RNN "
          "encoder-decoder", num_params=2_597_378,
          params_note="vocab 20000, embedding 128, 64 GRU units (reset_after), 2 classes",
          **_CLASSIFIER)
def gru_classifier(*, input_shape=(200,), vocab_size=20_000, embedding_dim=128, num_classes=2,
                   units=64, num_layers=1, bidirectional=False, dropout=0.0,
                   recurrent_dropout=0.0, classifier_activation="softmax",
                   name="gru_classifier"):
    """Embedding + (stacked) GRU text classifier over token ids.

    Args: as `rnn_classifier`.
    """
    return _sequence_classifier("gru", **locals())


@register(family="rnn", paper="Schuster & Paliwal 1997; Graves & Schmidhuber 2005",
          num_params=2_659_074,
          params_note="vocab 20000, embedding 128, 2x64 LSTM units (forward + backward), "
                      "2 classes", **{**_CLASSIFIER, "search_space": _bilstm_space})
def bilstm_classifier(*, input_shape=(200,), vocab_size=20_000, embedding_dim=128,
                      num_classes=2, units=64, num_layers=1, dropout=0.0,
                      recurrent_dropout=0.0, classifier_activation="softmax",
                      name="bilstm_classifier"):
    """Embedding + bidirectional LSTM text classifier over token ids.

    Args: as `rnn_classifier`, always bidirectional (`units` per direction).
    """
    return _sequence_classifier("lstm", bidirectional=True, **locals())


@register(family="rnn", paper="Hochreiter & Schmidhuber 1997, Long short-term memory",
          num_params=17_676,
          params_note="lookback 48 x 1 feature, 64 LSTM units, 12-step horizon", **_FORECASTER)
def lstm_forecaster(*, input_shape=(48, 1), horizon=12, num_targets=1, units=64, num_layers=1,
                    bidirectional=False, dropout=0.0, recurrent_dropout=0.0,
                    name="lstm_forecaster"):
    """LSTM forecaster: a (lookback, features) window -> the next `horizon` steps.

    Args:
        input_shape: (lookback, features). Defaults to (48, 1).
        horizon: number of future steps predicted. Defaults to 12.
        num_targets: number of target series; the output is (horizon,) for one
            target and (horizon, num_targets) otherwise. Defaults to 1.
        units: LSTM units per layer. Defaults to 64.
        num_layers: stacked LSTM layers. Defaults to 1.
        bidirectional: read the window in both directions. Defaults to False.
        dropout: input dropout of each LSTM layer. Defaults to 0.
        recurrent_dropout: dropout on the recurrent state. Defaults to 0.
        name: model name. Defaults to "lstm_forecaster".
    """
    return _sequence_forecaster("lstm", **locals())


@register(family="rnn", paper="Cho et al. 2014, Learning phrase representations using RNN "
          "encoder-decoder", num_params=13_644,
          params_note="lookback 48 x 1 feature, 64 GRU units (reset_after), 12-step horizon",
          **_FORECASTER)
def gru_forecaster(*, input_shape=(48, 1), horizon=12, num_targets=1, units=64, num_layers=1,
                   bidirectional=False, dropout=0.0, recurrent_dropout=0.0,
                   name="gru_forecaster"):
    """GRU forecaster: a (lookback, features) window -> the next `horizon` steps.

    Args: as `lstm_forecaster`.
    """
    return _sequence_forecaster("gru", **locals())
