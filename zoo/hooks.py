"""Family-specific behaviour that training, evaluation, export and tests call.

A spec names its hooks with `register(..., hooks="zoo.some_module:SomeHooks")`
(an instance or a class with a no-argument constructor).  Every method has a
default here, so a family overrides only what differs.  Keeping these in the
family's own module lets `zoo/training.py` stay generic.
"""


class TaskHooks:
    """Defaults: supervised (x, y) data, plain compile, no extra outputs."""

    # Extra keyword options a data source accepts for this family (e.g.
    # text_column); `zoo.data.load` passes them on to `load_source`.
    data_options = ()
    # What early stopping, ReduceLROnPlateau and the best checkpoint watch;
    # None where no validation number tracks quality (GANs): then training
    # runs all its epochs and checkpoints/best.keras holds the latest epoch.
    monitor = "val_loss"

    def load_source(self, spec, source, options):
        """Return `zoo.data.ArraySplits` for `source`, or None to use the generic loaders."""
        return None

    def prepare_data(self, spec, bundle):
        """Return the `DataBundle` to train on (e.g. map (x, y) -> (x, x))."""
        return bundle

    def wrap_model(self, model, bundle):
        """Return the model to train and export (e.g. with preprocessing layers)."""
        return model

    def compile(self, model, *, optimizer, loss, metrics, recipe, jit_compile=False):
        """Compile `model`; families with their own `train_step` override this."""
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile)

    def callbacks(self, model, bundle, run_dir):
        """Extra Keras callbacks for `zoo.train` (e.g. sample grids)."""
        return []

    def evaluate(self, model, bundle):
        """Extra metrics for metrics.json, computed on `bundle.test`."""
        return {}

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
    return hooks() if isinstance(hooks, type) else hooks
