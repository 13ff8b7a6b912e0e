"""Recurrent networks: SimpleRNN, LSTM and GRU text classifiers and forecasters.

SimpleRNN: Elman 1990; LSTM: Hochreiter & Schmidhuber 1997; GRU: Cho et al. 2014.
Two family builders, whose registered variants fix the cell:
- classifiers (`sequence_classifier`) read integer token ids (sequence_length,)
  through an embedding (`zoo train lstm_classifier --data csv:reviews.csv`
  prepends a TextVectorization layer, see `zoo.tasks.text`), and
- forecasters (`sequence_forecaster`) read numeric windows (lookback, features)
  and predict the next `horizon` steps of `num_targets` series
  (`zoo.tasks.timeseries` adds the normalisation in front and the
  de-normalisation behind).
"""

from zoo import checks
from zoo._lazy import keras
from zoo.registry import Recipe, register_variant

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


def sequence_classifier(*, cell, input_shape=(200,), vocab_size=20_000, embedding_dim=128,
                        num_classes=2, units=64, num_layers=1, bidirectional=False, dropout=0.0,
                        recurrent_dropout=0.0, classifier_activation="softmax", name):
    """Embedding + (stacked) recurrent text classifier over token ids.

    The registered classifiers (rnn_classifier, lstm_classifier, ...) fix `cell`.

    Args:
        cell: "simple_rnn", "lstm" or "gru".
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
        name: model name (each variant's default is its registered name).
    """
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


def sequence_forecaster(*, cell, input_shape=(48, 1), horizon=12, num_targets=1, units=64,
                        num_layers=1, bidirectional=False, dropout=0.0, recurrent_dropout=0.0,
                        name):
    """Recurrent forecaster: a (lookback, features) window -> the next `horizon` steps.

    The registered forecasters (lstm_forecaster, gru_forecaster) fix `cell`.

    Args:
        cell: "simple_rnn", "lstm" or "gru".
        input_shape: (lookback, features). Defaults to (48, 1).
        horizon: number of future steps predicted. Defaults to 12.
        num_targets: number of target series; the output is (horizon,) for one
            target and (horizon, num_targets) otherwise. Defaults to 1.
        units: recurrent units per layer. Defaults to 64.
        num_layers: stacked recurrent layers. Defaults to 1.
        bidirectional: read the window in both directions. Defaults to False.
        dropout: input dropout of each recurrent layer. Defaults to 0.
        recurrent_dropout: dropout on the recurrent state. Defaults to 0.
        name: model name (each variant's default is its registered name).
    """
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


def _units(cell, count):
    # Keras's GRU default (reset_after=True) has two bias vectors: say so next to the count.
    return f"{count} {CELLS[cell]} units" + (" (reset_after)" if cell == "gru" else "")


def _classifier(name, cell, paper, num_params, *, doc=None, note=None, bidirectional=None,
                search_space=_classifier_space):
    # bilstm_classifier fixes bidirectional=True: it is no argument of that model.
    fixed = {} if bidirectional is None else {"bidirectional": bidirectional}
    doc = doc or (f"Embedding + (stacked) {CELLS[cell]} text classifier over token ids.\n\n"
                  f"Args: as `sequence_classifier`.")
    note = note or f"vocab 20000, embedding 128, {_units(cell, 64)}, 2 classes"
    return register_variant(
        name, sequence_classifier, model_args=dict(cell=cell, **fixed),
        defaults=dict(name=name), doc=doc, family="rnn", paper=paper, num_params=num_params,
        params_note=note, **{**_CLASSIFIER, "search_space": search_space})


def _forecaster(name, cell, paper, num_params):
    doc = (f"{CELLS[cell]} forecaster: a (lookback, features) window -> the next `horizon` "
           f"steps.\n\nArgs: as `sequence_forecaster`.")
    return register_variant(
        name, sequence_forecaster, model_args=dict(cell=cell), defaults=dict(name=name),
        doc=doc, family="rnn", paper=paper, num_params=num_params,
        params_note=f"lookback 48 x 1 feature, {_units(cell, 64)}, 12-step horizon",
        **_FORECASTER)


_ELMAN = "Elman 1990, Finding structure in time"
_LSTM_PAPER = "Hochreiter & Schmidhuber 1997, Long short-term memory"
_GRU_PAPER = "Cho et al. 2014, Learning phrase representations using RNN encoder-decoder"

rnn_classifier = _classifier("rnn_classifier", "simple_rnn", _ELMAN, 2_572_482)
lstm_classifier = _classifier("lstm_classifier", "lstm", _LSTM_PAPER, 2_609_538)
gru_classifier = _classifier("gru_classifier", "gru", _GRU_PAPER, 2_597_378)
bilstm_classifier = _classifier(
    "bilstm_classifier", "lstm", "Schuster & Paliwal 1997; Graves & Schmidhuber 2005", 2_659_074,
    bidirectional=True, search_space=_bilstm_space,
    doc="Embedding + bidirectional LSTM text classifier over token ids.\n\n"
        "Args: as `sequence_classifier`, always bidirectional (`units` per direction).",
    note="vocab 20000, embedding 128, 2x64 LSTM units (forward + backward), 2 classes")

lstm_forecaster = _forecaster("lstm_forecaster", "lstm", _LSTM_PAPER, 17_676)
gru_forecaster = _forecaster("gru_forecaster", "gru", _GRU_PAPER, 13_644)
