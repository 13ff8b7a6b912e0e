"""Attention models: a Transformer-encoder classifier and an RNN seq2seq with attention.

- `transformer_classifier`: token + position embedding, `num_layers` post-norm
  encoder blocks (multi-head self-attention, feed-forward), masked average
  pooling, softmax head (Vaswani et al. 2017).
- `seq2seq_attention`: LSTM/GRU encoder, LSTM/GRU decoder started from the
  encoder state, additive (Bahdanau et al. 2015) or dot-product (Luong et al.
  2015) attention over the encoder outputs.  Its inputs are
  [source tokens, decoder tokens]: at training time the decoder reads the
  target shifted right by one behind a start token (teacher forcing);
  `greedy_decode` feeds its own predictions back at inference.
  `zoo.train("seq2seq_attention", data=(source_ids, target_ids))` does the
  shifting itself (see `zoo.tasks.seq2seq`).
"""

from zoo import checks
from zoo._lazy import keras
from zoo.models.rnn import check_token_inputs
from zoo.registry import Recipe, register

CELLS = {"lstm": "LSTM", "gru": "GRU"}
ATTENTIONS = ("bahdanau", "luong")
# Token conventions of seq2seq_attention: 0 pads, START opens the decoder input.
PAD, START = 0, 1


def _transformer_space(hp):
    return {
        "embedding_dim": hp.Choice("embedding_dim", [32, 64, 128], default=64),
        "num_layers": hp.Int("num_layers", 1, 4, default=2),
        "num_heads": hp.Choice("num_heads", [1, 2, 4, 8], default=4),
        "ff_dim": hp.Choice("ff_dim", [64, 128, 256], default=128),
        "dropout": hp.Float("dropout", 0.0, 0.3, step=0.1, default=0.1),
        # The tuner's shared schedules plus the warm-up of Vaswani et al.
        "recipe": {"schedule": hp.Choice(
            "schedule", ["constant", "cosine", "warmup_cosine", "one_cycle", "reduce_on_plateau"],
            default="constant")},
    }


@register(family="attention", task="classification", input_kind="tokens",
          input_policy="resize", input_dtype="int32", test_input_shape=(6,),
          min_input_shape=(1,), paper="Vaswani et al. 2017, Attention is all you need",
          num_params=1_359_874,
          params_note="vocab 20000, sequence 200, embedding 64, 2 blocks x 4 heads, "
                      "ff 128, 2 classes",
          hooks="zoo.tasks.text:TextHooks", search_space=_transformer_space,
          recipe=Recipe(optimizer="adam", learning_rate=5e-4, epochs=10,
                        early_stopping_patience=3),
          test_kwargs={"vocab_size": 20, "embedding_dim": 8, "num_heads": 2, "ff_dim": 8,
                       "num_layers": 1, "num_classes": 3})
def transformer_classifier(*, input_shape=(200,), vocab_size=20_000, embedding_dim=64,
                           num_layers=2, num_heads=4, ff_dim=128, dropout=0.1, num_classes=2,
                           classifier_activation="softmax", name="transformer_classifier"):
    """Transformer-encoder text classifier over token ids.

    Args:
        input_shape: (sequence_length,) of int token ids, 0 = padding. Defaults to (200,).
        vocab_size: token ids are in [0, vocab_size). Defaults to 20000.
        embedding_dim: model width (token and position embeddings). Defaults to 64.
        num_layers: encoder blocks. Defaults to 2.
        num_heads: attention heads per block; each head has
            embedding_dim // num_heads dimensions. Defaults to 4.
        ff_dim: hidden width of the feed-forward sublayer. Defaults to 128.
        dropout: dropout after attention, feed-forward and pooling. Defaults to 0.1.
        num_classes: number of classes. Defaults to 2.
        classifier_activation: activation of the output layer. Defaults to "softmax".
        name: model name. Defaults to "transformer_classifier".
    """
    input_shape = check_token_inputs(input_shape, vocab_size, embedding_dim)
    checks.positive_int("num_layers", num_layers)
    checks.positive_int("num_heads", num_heads)
    if embedding_dim % num_heads:
        raise ValueError("embedding_dim must be divisible by num_heads. Received: "
                         f"embedding_dim={embedding_dim!r}, num_heads={num_heads!r}")
    checks.positive_int("ff_dim", ff_dim)
    checks.fraction("dropout", dropout)
    checks.positive_int("num_classes", num_classes)
    from zoo.models.layers.sequence import PositionalEmbedding

    layers = keras.layers
    inputs = keras.Input(shape=input_shape, dtype="int32", name="tokens")
    x = PositionalEmbedding(input_shape[0], vocab_size, embedding_dim,
                            name=f"{name}_embedding")(inputs)
    for i in range(1, num_layers + 1):
        prefix = f"{name}_block{i}"
        # The padding mask of the embedding reaches attention through Keras
        # mask propagation, so padded tokens are never attended to.
        attn = layers.MultiHeadAttention(num_heads, embedding_dim // num_heads,
                                         dropout=dropout, name=f"{prefix}_attention")(x, x)
        attn = layers.Dropout(dropout, name=f"{prefix}_attention_dropout")(attn)
        x = layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_norm1")(
            layers.Add(name=f"{prefix}_add1")([x, attn]))
        ff = layers.Dense(ff_dim, activation="relu", name=f"{prefix}_ff1")(x)
        ff = layers.Dense(embedding_dim, name=f"{prefix}_ff2")(ff)
        ff = layers.Dropout(dropout, name=f"{prefix}_ff_dropout")(ff)
        x = layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_norm2")(
            layers.Add(name=f"{prefix}_add2")([x, ff]))
    x = layers.GlobalAveragePooling1D(name=f"{name}_pool")(x)
    x = layers.Dropout(dropout, name=f"{name}_head_dropout")(x)
    outputs = layers.Dense(num_classes, activation=classifier_activation, dtype="float32",
                           name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def shift_right(targets, start_token=START):
    """Teacher-forcing decoder input: `start_token` followed by targets[:, :-1]."""
    import numpy as np

    targets = np.asarray(targets)
    start = np.full((targets.shape[0], 1), start_token, dtype=targets.dtype)
    return np.concatenate([start, targets[:, :-1]], axis=1)


def greedy_decode(model, source, *, start_token=START):
    """Decode `source` (batch, source_len) token by token, feeding predictions back.

    Runs the whole model once per output position (simple and exact: the
    model is causal in the decoder input, so position t only sees tokens < t).
    Returns int32 predictions of shape (batch, target_len).
    """
    import numpy as np

    source = np.asarray(source, dtype="int32")
    target_len = model.inputs[1].shape[1]
    decoder_in = np.full((source.shape[0], target_len), PAD, dtype="int32")
    decoder_in[:, 0] = start_token
    out = np.zeros_like(decoder_in)
    for t in range(target_len):
        probs = keras.ops.convert_to_numpy(model([source, decoder_in], training=False))
        out[:, t] = probs[:, t].argmax(-1)
        if t + 1 < target_len:
            decoder_in[:, t + 1] = out[:, t]
    return out


def _seq2seq_space(hp):
    return {
        "units": hp.Choice("units", [32, 64, 128, 256], default=128),
        "embedding_dim": hp.Choice("embedding_dim", [32, 64, 128], default=64),
        "cell": hp.Choice("cell", list(CELLS), default="lstm"),
        "attention": hp.Choice("attention", list(ATTENTIONS), default="bahdanau"),
        "dropout": hp.Float("dropout", 0.0, 0.3, step=0.1, default=0.0),
    }


@register(family="attention", task="sequence", input_kind="tokens", input_policy="resize",
          input_dtype="int32", test_input_shape=(5,), min_input_shape=(1,),
          paper="Bahdanau, Cho & Bengio 2015; Luong, Pham & Manning 2015",
          num_params=1_258_656,
          params_note="source/target vocab 4000, embedding 64, 128 LSTM units, additive "
                      "attention",
          hooks="zoo.tasks.seq2seq:Seq2SeqHooks", search_space=_seq2seq_space,
          recipe=Recipe(optimizer="adam", learning_rate=1e-3, epochs=30,
                        loss="sparse_categorical_crossentropy", early_stopping_patience=5),
          test_kwargs={"vocab_size": 12, "embedding_dim": 4, "units": 6, "target_length": 4})
def seq2seq_attention(*, input_shape=(30,), target_length=None, vocab_size=4000,
                      target_vocab_size=None, embedding_dim=64, units=128, cell="lstm",
                      attention="bahdanau", dropout=0.0, name="seq2seq_attention"):
    """Encoder-decoder RNN with attention; inputs [source ids, shifted target ids].

    Args:
        input_shape: (source_length,) of int token ids, 0 = padding. Defaults to (30,).
        target_length: decoder length; None uses the source length. Defaults to None.
        vocab_size: source token ids are in [0, vocab_size). Defaults to 4000.
        target_vocab_size: target vocabulary; None shares `vocab_size`. Ids 0
            (padding) and 1 (start) are reserved. Defaults to None.
        embedding_dim: embedding width of both sides. Defaults to 64.
        units: recurrent units of encoder and decoder. Defaults to 128.
        cell: "lstm" or "gru". Defaults to "lstm".
        attention: "bahdanau" (additive, `keras.layers.AdditiveAttention`) or
            "luong" (dot-product, `keras.layers.Attention`). Defaults to "bahdanau".
        dropout: dropout on the decoder features before the softmax. Defaults to 0.
        name: model name. Defaults to "seq2seq_attention".
    """
    input_shape = checks.shape("input_shape", input_shape, rank=1)
    target_length = checks.positive_int("target_length", target_length, allow_none=True)
    checks.positive_int("vocab_size", vocab_size)
    target_vocab_size = checks.positive_int("target_vocab_size", target_vocab_size,
                                            allow_none=True)
    for arg, value in (("vocab_size", vocab_size), ("target_vocab_size", target_vocab_size)):
        if value is not None and value < 3:
            raise ValueError(f"{arg} must be at least 3 (0 pads, 1 starts). "
                             f"Received: {arg}={value!r}")
    checks.positive_int("embedding_dim", embedding_dim)
    checks.positive_int("units", units)
    checks.choice("cell", cell, tuple(CELLS))
    checks.choice("attention", attention, ATTENTIONS)
    checks.fraction("dropout", dropout)
    target_length = target_length or input_shape[0]
    target_vocab_size = target_vocab_size or vocab_size

    layers = keras.layers
    rnn = getattr(layers, CELLS[cell])
    source = keras.Input(shape=input_shape, dtype="int32", name="source_tokens")
    decoder_tokens = keras.Input(shape=(target_length,), dtype="int32", name="decoder_tokens")

    enc = layers.Embedding(vocab_size, embedding_dim, mask_zero=True,
                           name=f"{name}_encoder_embedding")(source)
    enc_outputs, *enc_state = rnn(units, return_sequences=True, return_state=True,
                                  name=f"{name}_encoder")(enc)
    # The decoder starts from the encoder's final state (Sutskever et al. 2014)
    # and reads the ground-truth previous token at training time.
    dec = layers.Embedding(target_vocab_size, embedding_dim, name=f"{name}_decoder_embedding")(
        decoder_tokens)
    dec_outputs = rnn(units, return_sequences=True, name=f"{name}_decoder")(
        dec, initial_state=enc_state)
    attend = (layers.AdditiveAttention(name=f"{name}_bahdanau_attention")
              if attention == "bahdanau"
              else layers.Attention(score_mode="dot", name=f"{name}_luong_attention"))
    # Query = decoder step, keys/values = encoder outputs; padded source steps
    # are masked by the encoder embedding's mask.
    context = attend([dec_outputs, enc_outputs])
    x = layers.Concatenate(name=f"{name}_concat")([dec_outputs, context])
    # Luong's attentional hidden state: tanh(W [h_t; c_t]).
    x = layers.Dense(units, activation="tanh", name=f"{name}_attentional")(x)
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    outputs = layers.Dense(target_vocab_size, activation="softmax", dtype="float32",
                           name="predictions")(x)
    return keras.Model([source, decoder_tokens], outputs, name=name)
