"""Task hooks: what differs between tasks, resolved once per run.

A spec names its hooks with `register(..., hooks="zoo.tasks.text:TextHooks")`
(an instance or a class with a no-argument constructor).  `zoo.training.plan`
resolves them once and composes them with the generic steps (data loading,
build, compile, fit, evaluate, export); every method has a default here, so
a task overrides only what differs.  The task owns its compile defaults (the
default loss, the metrics that go with a loss, the compile step itself);
the model's `Recipe` owns the optimizer, learning rate and schedule.

Modules: `text` (raw-string classifiers), `timeseries` (forecasters),
`seq2seq` (encoder-decoder with teacher forcing), `generative`
(autoencoders, VAEs, GANs).  A new task is a subclass of `TaskHooks` named
by its models' `register(hooks=...)`.
"""

from zoo import checks
from zoo.registry import LOSSES


def output_width(model):
    """Last dimension of the model's first output (None when unknown)."""
    shape = model.outputs[0].shape if getattr(model, "outputs", None) else None
    return shape[-1] if shape is not None and len(shape) >= 2 else None


def _outputs_logits(model):
    import keras
    last = model.layers[-1] if model.layers else None
    activation = getattr(last, "activation", None)
    return activation is keras.activations.linear


def loss_and_metrics(name, *, model, label_smoothing=0.0):
    """Keras loss object and metrics for a loss name (see `zoo.registry.LOSSES`).

    Cross-entropies read logits when the model's last layer has no
    activation.  None means the model's own loss: (None, []).
    """
    import keras
    if name is None:
        return None, []
    checks.choice("loss", name, LOSSES)
    logits = _outputs_logits(model)
    losses, metrics = keras.losses, keras.metrics
    if name == "mse":
        return losses.MeanSquaredError(), [metrics.MeanAbsoluteError(name="mae"),
                                           metrics.RootMeanSquaredError(name="rmse")]
    if name == "mae":
        return losses.MeanAbsoluteError(), [metrics.RootMeanSquaredError(name="rmse")]
    if name == "binary_crossentropy":
        return (losses.BinaryCrossentropy(from_logits=logits, label_smoothing=label_smoothing),
                [metrics.BinaryAccuracy(name="accuracy", threshold=0.0 if logits else 0.5)])
    if name == "categorical_crossentropy":
        return (losses.CategoricalCrossentropy(from_logits=logits,
                                               label_smoothing=label_smoothing),
                [metrics.CategoricalAccuracy(name="accuracy")])
    return (losses.SparseCategoricalCrossentropy(from_logits=logits),
            [metrics.SparseCategoricalAccuracy(name="accuracy")])


class TaskHooks:
    """Defaults: supervised (x, y) data, plain compile, no extra outputs."""

    # Extra keyword options a data source accepts for this task, with a help
    # line each (e.g. {"text_column": "CSV column holding the text"}); the
    # CLI offers them as flags (--text-column) and `load_source` receives them.
    data_options = {}
    # What early stopping, ReduceLROnPlateau and the best checkpoint watch;
    # None where no validation number tracks quality (GANs): then training
    # runs all its epochs and checkpoints/best.keras holds the latest epoch.
    monitor = "val_loss"

    # ---------------------------------------------------------------- data

    def load_source(self, spec, source, options):
        """Return `zoo.splits.ArraySplits` for `source`, or None to use the generic readers.

        `options` holds the user's data options plus the split arguments
        (seed, validation_split, test_split, classes).
        """
        return None

    def prepare_data(self, spec, bundle):
        """Return the `DataBundle` to train on (e.g. map (x, y) -> (x, x))."""
        return bundle

    # ---------------------------------------------------------------- compile

    def default_loss(self, spec, output_width):
        """Loss name when neither the recipe nor the caller names one (None: the model's own)."""
        if spec.task == "classification":
            return "binary_crossentropy" if output_width == 1 else \
                "sparse_categorical_crossentropy"
        if spec.task == "sequence":
            return "sparse_categorical_crossentropy"
        if spec.task in ("regression", "autoencoder"):
            return "mse"
        return None

    def loss_name(self, spec, model, loss=None):
        """The loss `model` trains with: `loss` (the caller's or the recipe's), else the default."""
        return loss or self.default_loss(spec, output_width(model))

    def loss_and_metrics(self, loss, model, *, recipe):
        """Keras loss object and metrics for a loss name (None: the model's own, no metrics)."""
        return loss_and_metrics(loss, model=model, label_smoothing=recipe.label_smoothing)

    def compile(self, model, *, optimizer, loss, metrics, recipe, jit_compile=False):
        """Compile `model`; tasks with their own `train_step` override this.

        `zoo.training.compile_model` passes the recipe's optimizer (with its
        schedule) and this task's `loss_and_metrics` for its `loss_name`.
        """
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile)

    def objective(self, spec):
        """(metric name, "min" or "max") a search optimises for this task."""
        if spec.task in ("classification", "sequence"):
            return "val_accuracy", "max"
        return "val_loss", "min"

    def wrap_model(self, model, bundle):
        """Return the model to train and export (e.g. with preprocessing layers)."""
        return model

    # ---------------------------------------------------------------- fit, evaluate

    def callbacks(self, model, bundle, run_dir):
        """Extra Keras callbacks for a run (e.g. sample grids)."""
        return []

    def evaluate(self, model, bundle):
        """Extra metrics for metrics.json, computed on `bundle.test`."""
        return {}

    # ---------------------------------------------------------------- export, tests

    def export_signatures(self, model):
        """Named SavedModel endpoints: {name: (fn, [keras.InputSpec or tf.TensorSpec])}.

        None means the default `serving_default` endpoint over `model`'s inputs.
        """
        return None

    def example_batch(self, spec, model, batch_size, rng):
        """(x, y) arrays for a one-step training test; y may be None (unsupervised)."""
        return None


def get_hooks(spec):
    """The hooks object of `spec` (a default `TaskHooks` when it names none)."""
    hooks = spec.load_hooks()
    if hooks is None:
        return TaskHooks()
    hooks = hooks() if isinstance(hooks, type) else hooks
    if not isinstance(hooks, TaskHooks):
        raise TypeError(f"hooks of model '{spec.name}' must be a zoo.tasks.TaskHooks subclass "
                        f"or instance. Received: {type(hooks).__name__}")
    return hooks


def load_data(spec, data="digits", *, hooks=None, options=None, splits=None, **kwargs):
    """Read `data` for `spec` through its task's reader, then `zoo.data.load`.

    The composition of the task hooks (`load_source`, `prepare_data`) with the
    generic data module; `kwargs` go to `zoo.data.load` (batch_size, seed,
    input_shape, augment, classes, one_hot, validation_split, test_split).
    """
    from zoo import data as zdata

    from zoo.registry import get_spec

    spec = get_spec(spec) if isinstance(spec, str) else spec
    hooks = hooks or get_hooks(spec)
    allowed = {*zdata.GENERIC_OPTIONS, *hooks.data_options}
    options = zdata.check_options(spec, options, allowed, data=data)
    if splits is None and data is not None:
        zdata.check_data_argument(data)
        # Tasks that read their own sources (text, time series) also split them.
        splits = hooks.load_source(spec, data, {
            **options, "seed": kwargs.get("seed", 0),
            "validation_split": kwargs.get("validation_split", 0.1),
            "test_split": kwargs.get("test_split", 0.2), "classes": kwargs.get("classes")})
    bundle = zdata.load(spec, data, options=options, splits=splits, allowed_options=allowed,
                        **kwargs)
    return hooks.prepare_data(spec, bundle)
