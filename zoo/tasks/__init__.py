"""Task hooks: what differs between tasks, resolved once per run.

A spec names its hooks with `register(..., hooks="zoo.tasks.text:TextHooks")`
(an instance or a class with a no-argument constructor).  `zoo.training.plan`
resolves them once and composes them with the generic steps (data loading,
build, compile, fit, evaluate, export); every method has a default here, so
a task overrides only what differs.

Modules: `text` (raw-string classifiers), `timeseries` (forecasters),
`seq2seq` (encoder-decoder with teacher forcing), `generative`
(autoencoders, VAEs, GANs).  A new task is a subclass of `TaskHooks` named
by its models' `register(hooks=...)`.
"""

OBJECTIVE_DIRECTIONS = ("min", "max")


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

    def objective(self, spec):
        """(metric name, "min" or "max") a search optimises for this task."""
        if spec.task in ("classification", "sequence"):
            return "val_accuracy", "max"
        return "val_loss", "min"

    def wrap_model(self, model, bundle):
        """Return the model to train and export (e.g. with preprocessing layers)."""
        return model

    def compile(self, model, *, optimizer, loss, metrics, recipe, jit_compile=False):
        """Compile `model`; tasks with their own `train_step` override this."""
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile)

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
