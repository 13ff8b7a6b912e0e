"""A distributed training loop that stands in for `model.fit` where `fit` fails.

Keras 3 `model.fit` fails under `MultiWorkerMirroredStrategy`
(keras-team/keras issue 20585, "Attempt to convert a value (PerReplica...)
with an unsupported type") and is reported broken under `TPUStrategy` on TPU
VMs (keras-team/keras issue 19448).  `fit_loop` trains the same compiled
model with the same callbacks:

- each step is the model's own `train_step` (its loss, metrics, optimizer,
  mixed-precision loss scaling, and a VAE's or GAN's own step) run on every
  replica by `strategy.run` over `strategy.experimental_distribute_dataset`
  (which shards the global batch and prefetches to the devices);
- batch logs are `strategy.reduce(MEAN)` of the replicas' results, as in
  `fit`; epoch logs are the model's metrics read across replicas (exact
  global values), validation the same with `test_step`;
- callbacks see `on_train_begin/epoch/batch/...` in `fit`'s order with
  those logs, so EarlyStopping, ReduceLROnPlateau, checkpoints,
  BackupAndRestore, CSVLogger and TensorBoard work unchanged;
- after `on_train_begin` (where the chief's BackupAndRestore may restore
  a backup) every variable and the initial epoch are broadcast from the
  chief, and `stop_training` is agreed by all workers each epoch, so the
  workers run the same number of steps and end with identical weights.

`zoo.distribute.uses_custom_loop` decides where it runs; `zoo.training.fit`
dispatches to it.  `local_model` gives a copy of a model trained here that
`evaluate`, `predict`, `save` and `export` accept (they fail under the
strategy for the same reason).
"""

import os
import tempfile

import keras
import tensorflow as tf


def broadcast_from_chief(strategy, values):
    """Replica 0's (the chief's) value of each tensor/variable, the same on every worker.

    An all-reduce of (value if replica 0 else 0): collective ops have no
    cross-worker broadcast that `strategy.run` exposes.
    """
    values = list(values)
    if not values or strategy.num_replicas_in_sync == 1:
        return [tf.convert_to_tensor(value) for value in values]

    def replica_fn():
        context = tf.distribute.get_replica_context()
        first = tf.equal(context.replica_id_in_sync_group, 0)
        summed = []
        for value in values:
            value = tf.convert_to_tensor(value)
            wide = value.dtype if value.dtype.is_floating else tf.float64 \
                if value.dtype.size < 8 else tf.int64
            widened = tf.cast(value, wide)
            summed.append(context.all_reduce(tf.distribute.ReduceOp.SUM,
                                             tf.where(first, widened, tf.zeros_like(widened))))
        return summed

    results = strategy.run(tf.function(replica_fn))
    return [tf.cast(strategy.experimental_local_results(result)[0],
                    tf.convert_to_tensor(value).dtype)
            for result, value in zip(results, values)]


def _sync_state(model, strategy, epoch):
    """Broadcast every model and optimizer variable and `epoch` from the chief."""
    # Metric states are reset every epoch; the rest must match the chief's.
    skip = {id(variable) for metric in model.metrics for variable in metric.variables}
    variables = [variable for variable in model.variables if id(variable) not in skip]
    if model.optimizer is not None:
        seen = {id(variable) for variable in variables}
        variables += [variable for variable in model.optimizer.variables
                      if id(variable) not in seen]
    with strategy.scope():
        values = broadcast_from_chief(strategy,
                                      [variable.value for variable in variables] + [epoch])
    for variable, value in zip(variables, values[:-1]):
        variable.assign(value)
    return int(values[-1])


def _agree(strategy, flag):
    """True on every worker if `flag` is True on any (a stop decision)."""
    if strategy.num_replicas_in_sync == 1:
        return bool(flag)

    def replica_fn():
        context = tf.distribute.get_replica_context()
        return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.constant(float(bool(flag))))

    value = strategy.run(tf.function(replica_fn))
    return float(strategy.experimental_local_results(value)[0]) > 0


def _python_logs(logs):
    return {name: float(value) for name, value in logs.items()}


class _Steps:
    """The compiled per-step functions for one model and strategy."""

    def __init__(self, model, strategy):
        self.model = model
        self.strategy = strategy
        self._train = None
        self._train_iterator = None
        self._test = None

    def _run_step(self, step, data):
        outputs = self.strategy.run(step, args=(data,))
        # Mean over replicas, as `fit` reports per-batch logs.
        return tf.nest.map_structure(
            lambda value: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None),
            outputs)

    def _compile(self, function, **kwargs):
        # Like `fit`, XLA wraps the whole step when the model was compiled with it.
        jit_compile = bool(getattr(self.model, "jit_compile", False)) and not isinstance(
            self.strategy, tf.distribute.MultiWorkerMirroredStrategy)
        return tf.function(function, reduce_retracing=True, jit_compile=jit_compile, **kwargs)

    def _make(self, step, element_spec):
        return self._compile(lambda data: self._run_step(step, data),
                             input_signature=[element_spec])

    def train(self, dataset):
        if self._train is None:
            self._train = self._make(self.model.train_step, dataset.element_spec)
        return self._train

    def train_from_iterator(self):
        """A step that takes its batch from an iterator inside the graph, as `fit` does.

        Saves the Python-side `next()` per step (about 15% of a small model's
        step on CPU); used when the number of batches per epoch is known.
        """
        if self._train_iterator is None:
            self._train_iterator = self._compile(
                lambda iterator: self._run_step(self.model.train_step, next(iterator)))
        return self._train_iterator

    def test(self, dataset):
        if self._test is None:
            self._test = self._make(self.model.test_step, dataset.element_spec)
        return self._test


def _distribute(strategy, dataset, *, with_batches=False):
    if isinstance(strategy, tf.distribute.TPUStrategy):
        # TPUs need static shapes: drop the last partial global batch.
        dataset = dataset.rebatch(_batch_size(dataset), drop_remainder=True)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
            dataset.options().experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.OFF):
        # zoo.data made this worker's own share of a streamed source, batched
        # per worker, with as many batches as every other worker's
        # (`zoo.data.shard_for_worker`): handed over as it is.
        distributed = strategy.distribute_datasets_from_function(lambda context: dataset)
    else:
        distributed = strategy.experimental_distribute_dataset(dataset)
    if not with_batches:
        return distributed
    cardinality = int(dataset.cardinality())
    return distributed, (cardinality if cardinality > 0 else None)


def _epoch_steps(distributed, num_batches, from_batch, from_iterator):
    """(step index, function running the step) for one pass over `distributed`.

    With a known number of batches every worker takes exactly that many from
    an iterator inside the step function (the distributed iterator hands a
    replica without data an empty batch); otherwise batches come from Python.
    """
    if num_batches:
        iterator = iter(distributed)
        for step in range(num_batches):
            yield step, lambda: from_iterator(iterator)
    else:
        for step, data in enumerate(distributed):
            yield step, lambda data=data: from_batch(data)


def _batch_size(dataset):
    for batch in dataset.take(1):
        return int(tf.shape(tf.nest.flatten(batch)[0])[0])
    raise ValueError("The training data is empty.")


def _build(model, strategy, dataset):
    """Create the model's, metrics' and optimizer's variables under the strategy, as `fit` does."""
    # From the element spec, not a batch: iterating the data here would
    # advance its seeded reshuffling (the epochs then see other orders than
    # under `fit`).
    with strategy.scope():
        model._symbolic_build(data_batch=dataset.element_spec)
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)


def _steps_of(model, strategy):
    """The model's compiled steps for `strategy`, made once (tracing is the slow part)."""
    steps = getattr(model, "_zoo_steps", None)
    if steps is None or steps.strategy is not strategy:
        steps = model._zoo_steps = _Steps(model, strategy)
    return steps


def evaluate_loop(model, dataset, *, strategy=None, steps=None):
    """Metrics of `model.test_step` over `dataset` under `strategy`, as `evaluate` returns them."""
    strategy = strategy or model.distribute_strategy
    distributed = _distribute(strategy, dataset)
    step = _steps_of(model, strategy).test(distributed)
    model.reset_metrics()
    for index, data in enumerate(distributed):
        if steps is not None and index >= steps:
            break
        step(data)
    return _python_logs(model.get_metrics_result())


def fit_loop(model, x, *, validation_data=None, epochs=1, callbacks=None, verbose="auto",
             initial_epoch=0, strategy=None):
    """Train `model` on the `tf.data` dataset `x` like `model.fit`, under its strategy.

    Args:
        model: a model compiled under `strategy.scope()`.
        x: a batched `tf.data.Dataset` of (inputs, targets) with the GLOBAL batch.
        validation_data: a batched dataset, or None. Defaults to None.
        epochs: index of the last epoch, as in `fit`. Defaults to 1.
        callbacks: Keras callbacks (a list). Defaults to None.
        verbose: Keras verbosity (0 for none). Defaults to "auto".
        initial_epoch: as in `fit`. Defaults to 0.
        strategy: defaults to the strategy the model was built under.

    Returns:
        The `keras.callbacks.History`, as `fit` returns.
    """
    strategy = strategy or model.distribute_strategy
    _build(model, strategy, x)
    distributed, num_batches = _distribute(strategy, x, with_batches=True)
    compiled = _steps_of(model, strategy)
    train_step = compiled.train(distributed)
    train_from_iterator = compiled.train_from_iterator()
    callbacks = keras.callbacks.CallbackList(
        list(callbacks or []), add_history=True, add_progbar=verbose != 0, verbose=verbose,
        epochs=epochs, steps=num_batches, model=model)

    model.stop_training = False
    callbacks.on_train_begin()
    # The chief's BackupAndRestore may just have restored weights and the
    # epoch; the other workers take both from it.
    initial_epoch = _sync_state(model, strategy, model._initial_epoch or initial_epoch)
    training_logs = None
    # Callbacks run outside the strategy scope, as under `fit`: variables a
    # callback creates (e.g. while saving) must stay local to its process.
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        for step, run_step in _epoch_steps(distributed, num_batches, train_step,
                                           train_from_iterator):
            callbacks.on_train_batch_begin(step)
            logs = run_step()
            callbacks.on_train_batch_end(step, logs)
            # Batch logs are equal on every worker, so this decision is too.
            if model.stop_training:
                break
        epoch_logs = _python_logs(model.get_metrics_result())
        if validation_data is not None:
            val_logs = evaluate_loop(model, validation_data, strategy=strategy)
            epoch_logs.update({f"val_{name}": value for name, value in val_logs.items()})
        callbacks.on_epoch_end(epoch, epoch_logs)
        training_logs = epoch_logs
        model.stop_training = _agree(strategy, model.stop_training)
        if model.stop_training:
            break
    if isinstance(model.optimizer, keras.optimizers.Optimizer) and epochs > 0:
        model.optimizer.finalize_variable_values(model.trainable_weights)
    callbacks.on_train_end(logs=training_logs)
    return model.history


def local_model(model):
    """A copy of `model` outside any strategy, with its weights and optimizer state.

    `evaluate`, `predict`, `save` and `export` go through the same Keras code
    that fails under the strategy (keras issue 20585), so a run evaluates and
    writes this copy; every worker makes its own (no collectives).
    """
    from zoo import runs
    with tempfile.TemporaryDirectory(prefix="zoo-local-model-") as folder:
        path = os.path.join(folder, "model.keras")
        runs.save_model(model, path)
        return runs.load_model(path)
