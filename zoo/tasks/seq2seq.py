"""Training hooks of `seq2seq_attention`: (source, target) token arrays -> teacher forcing.

    import zoo
    result = zoo.train("seq2seq_attention", data=(source_ids, target_ids), epochs=20)
    result.metrics["greedy_token_accuracy"]

`load_source` takes an (source, target) tuple of int arrays (n, source_len)
and (n, target_len) (ids: 0 pads, 1 is the decoder's start token, so real
tokens are >= 2), splits it with a seed, and sizes the model from the data.
`prepare_data` turns every batch into ((source, start + target[:-1]), target):
the decoder reads the true previous token at training time.  `evaluate`
decodes the test split greedily (the model's own predictions fed back) and
reports token and whole-sequence accuracy over non-padding positions.
"""

import numpy as np

from zoo.models.attention import PAD, START
from zoo.splits import make_splits
from zoo.tasks import TaskHooks


def _check_tokens(name, array):
    array = np.asarray(array)
    if array.ndim != 2 or array.dtype.kind not in "iu" or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array of integer token ids "
                         f"(examples, length). Received: {name} of shape {array.shape} and "
                         f"dtype {array.dtype}")
    if array.min() < 0:
        raise ValueError(f"{name} token ids must be >= 0 (0 pads). Received: minimum "
                         f"{int(array.min())}")
    return array.astype("int32")


class Seq2SeqHooks(TaskHooks):
    """(source, target) arrays, teacher forcing, greedy-decoding metrics."""

    def load_source(self, spec, source, options):
        if not (isinstance(source, tuple) and len(source) == 2):
            return None
        src = _check_tokens("source tokens (data[0])", source[0])
        tgt = _check_tokens("target tokens (data[1])", source[1])
        if len(src) != len(tgt):
            raise ValueError(f"data has {len(src)} source but {len(tgt)} target sequences.")
        if (tgt == START).any():
            raise ValueError(f"target token id {START} is reserved for the decoder's start "
                             f"token; shift the target vocabulary to start at 2.")
        options = options or {}
        splits = make_splits((src, tgt), None, task="sequence", seed=options.get("seed", 0),
                             validation_split=options.get("validation_split", 0.1),
                             test_split=options.get("test_split", 0.2))
        splits.extras["builder_kwargs"] = {"target_length": tgt.shape[1],
                                           "vocab_size": max(3, int(src.max()) + 1),
                                           "target_vocab_size": max(3, int(tgt.max()) + 1)}
        return splits

    def prepare_data(self, spec, bundle):
        import dataclasses

        import tensorflow as tf

        def teacher_forcing(source, target):
            start = tf.fill([tf.shape(target)[0], 1], tf.constant(START, target.dtype))
            return (source, tf.concat([start, target[:, :-1]], axis=1)), target

        return dataclasses.replace(
            bundle, train=bundle.train.map(teacher_forcing),
            validation=bundle.validation.map(teacher_forcing),
            test=bundle.test.map(teacher_forcing))

    def evaluate(self, model, bundle):
        from zoo.models.attention import greedy_decode

        x, y = bundle.arrays.x_test, bundle.arrays.y_test
        if x is None or y is None or len(x) == 0:
            return {}
        predicted = greedy_decode(model, x[:1000])
        y = y[:1000]
        real = y != PAD
        return {
            "greedy_token_accuracy": float((predicted == y)[real].mean()),
            "greedy_sequence_accuracy": float(((predicted == y) | ~real).all(axis=1).mean()),
        }

    def example_batch(self, spec, model, batch_size, rng):
        from zoo.models.attention import shift_right

        source_len, target_len = model.inputs[0].shape[1], model.inputs[1].shape[1]
        source_vocab = model.get_layer(f"{model.name}_encoder_embedding").input_dim
        target_vocab = model.get_layer(f"{model.name}_decoder_embedding").input_dim
        source = rng.integers(START + 1, source_vocab, size=(batch_size, source_len))
        target = rng.integers(START + 1, target_vocab, size=(batch_size, target_len))
        return ([source.astype("int32"), shift_right(target).astype("int32")],
                target.astype("int32"))
