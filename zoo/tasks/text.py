"""Hooks of the token classifiers: raw-text sources in, a vocabulary layer in front.

`TextHooks.load_source` splits a text source into stratified, seeded
train/validation/test splits: a `folder:` of text files is indexed (paths and
labels, `zoo.readers.index_text_folder`) and split on the index
(`zoo.splits.index_splits`), its files read inside `tf.data` as they are
needed, so memory stays flat; a CSV or TFDS source is read into raw strings
(`zoo.readers.read_texts`) and split by `zoo.splits.make_splits`.
`wrap_model` puts a `keras.layers.TextVectorization` adapted on the TRAINING
split only (streamed, in batches, for a folder) in front of the token model,
so the trained, saved and exported model takes a batch of raw strings:

    zoo train lstm_classifier --data csv:reviews.csv --text-column text --label-column label

Sources:
    csv:PATH        a text column and a label column (options text_column,
                    label_column; defaults "text" and "label")
    folder:PATH     one sub-folder of text files per class (streamed; the
                    split is recorded in the run directory's split.json)
    tfds:NAME       a prepared TFDS text dataset with (text, label), e.g.
                    tfds:imdb_reviews (never downloaded here)
"""

import numpy as np

from zoo import checks
from zoo.readers import index_text_folder, read_texts
from zoo.splits import IndexSplits, index_splits, make_splits
from zoo.tasks import TaskHooks

DEFAULT_TEXT_COLUMN = "text"
DEFAULT_LABEL_COLUMN = "label"


def _vocab_size(model):
    for layer in model._flatten_layers(include_self=False):
        if hasattr(layer, "vocab_size"):  # PositionalEmbedding
            return int(layer.vocab_size)
        if hasattr(layer, "input_dim") and type(layer).__name__ == "Embedding":
            return int(layer.input_dim)
    raise ValueError(f"Model {model.name!r} has no token embedding to size a vocabulary for.")


# Texts per batch of the vocabulary pass.
ADAPT_BATCH = 256


def vectorizer(texts, *, vocab_size, sequence_length):
    """A TextVectorization layer adapted on `texts` (0 pads, 1 is out-of-vocabulary).

    `texts`: an array of strings, or a `tf.data.Dataset` of string scalars
    (a streamed split: adapted batch by batch, never held whole).
    """
    import keras

    layer = keras.layers.TextVectorization(max_tokens=vocab_size, output_mode="int",
                                           output_sequence_length=sequence_length,
                                           name="text_vectorization")
    if hasattr(texts, "element_spec"):
        layer.adapt(texts.batch(ADAPT_BATCH))
    else:
        layer.adapt(np.asarray(texts, dtype=object).astype(str), batch_size=ADAPT_BATCH)
    return layer


def with_text_input(model, train_texts):
    """`model` (int token ids) behind a TextVectorization adapted on `train_texts`.

    `train_texts`: an array of strings or a dataset of them (see `vectorizer`).
    """
    import keras

    if model.inputs[0].dtype == "string":
        return model  # already takes raw strings (e.g. a resumed run)
    sequence_length = model.inputs[0].shape[1]
    layer = vectorizer(train_texts, vocab_size=_vocab_size(model),
                       sequence_length=sequence_length)
    inputs = keras.Input(shape=(), dtype="string", name="text")
    # Identity names the served output "predictions", as in every other family.
    outputs = keras.layers.Identity(name="predictions")(model(layer(inputs)))
    return keras.Model(inputs, outputs, name=f"{model.name}_text")


class TextHooks(TaskHooks):
    """Raw-text sources and a vocabulary layer for the token classifiers."""

    # load_source also receives seed, validation_split, test_split and classes.
    data_options = {
        "text_column": "CSV column holding the text (default 'text')",
        "label_column": "CSV column holding the label (default 'label')",
        "sequence_length": "tokens per text; longer texts are truncated",
    }


    def load_source(self, spec, source, options):
        if not isinstance(source, str):
            return None
        options = dict(options or {})
        fractions = dict(seed=options.get("seed", 0),
                         validation_split=options.get("validation_split", 0.1),
                         test_split=options.get("test_split", 0.2))
        if source.startswith("folder:"):
            if options.get("skip_bad_images"):
                raise ValueError(f"skip_bad_images applies to image folders; a text folder's "
                                 f"files are all read. Received: skip_bad_images=True with "
                                 f"data={source!r} for model '{spec.name}'")
            index = index_text_folder(source.partition(":")[2], classes=options.get("classes"))
            # Raw strings, one per example: the image shape is the empty shape.
            splits = index_splits(index, image_shape=(), class_names=index.class_names,
                                  **fractions)
        else:
            read = read_texts(source,
                              text_column=options.get("text_column") or DEFAULT_TEXT_COLUMN,
                              label_column=options.get("label_column") or DEFAULT_LABEL_COLUMN,
                              classes=options.get("classes"))
            if read is None:
                return None
            train, test, names = read
            splits = make_splits(train, test, class_names=names, texts=True, **fractions)
        sequence_length = options.get("sequence_length")
        if sequence_length is not None:
            splits.extras["sequence_length"] = checks.positive_int("sequence_length",
                                                                   sequence_length)
        return splits

    def prepare_data(self, spec, bundle):
        import dataclasses

        if len(bundle.input_shape) == 0:
            # Raw strings: the token model keeps its own sequence length (the
            # vectorizer pads or truncates every text to it).
            length = bundle.extras.get("sequence_length", spec.input_shape[0])
            bundle = dataclasses.replace(bundle, input_shape=(int(length),))
        return bundle

    def wrap_model(self, model, bundle):
        if isinstance(bundle.arrays, IndexSplits):
            import tensorflow as tf

            # A streamed folder: the training split's files, read as the
            # vocabulary pass consumes them.  Bytes that are not UTF-8 become
            # U+FFFD here only (a vocabulary is saved as text); the pipelines
            # keep the raw bytes, which the layer maps to out-of-vocabulary.
            texts = bundle.examples["train"].map(
                lambda text, *label: tf.strings.unicode_transcode(text, "UTF-8", "UTF-8",
                                                                  errors="replace"),
                num_parallel_calls=tf.data.AUTOTUNE)
            return with_text_input(model, texts)
        x_train = bundle.arrays.x_train
        if x_train.dtype.kind not in "OUS":
            return model  # already token ids
        return with_text_input(model, x_train)
