"""The training seam: plan -> build_model -> fit -> evaluate_model; `train` composes them.

    result = zoo.train("lenet5", data="digits", epochs=10)
    result.metrics["test_accuracy"], result.run_dir

Tuning, fine-tuning, distributed training and the benchmarks call the same
public steps, so a trial, a fine-tuning phase and `zoo train` build, compile
and fit a model in exactly one way:

    run_plan = plan("mlp", data="digits", epochs=5)    # validate, resolve the task, load data once
    with strategy.scope():                             # the caller owns the strategy scope
        model = build_model(run_plan, model_kwargs={})  # build, check head, wrap, compile
    fit(run_plan, model, run_dir=...)                  # shared callbacks; custom loop: multi_worker
    evaluate_model(run_plan, model)                    # test metrics + the task's own

A run directory's lifecycle (lock, check and claim, always unlock, finish)
is `zoo.runs.open_run` around these steps and `finish_run` at the end;
`train`, `transfer.finetune` and `tuning.retrain_best` (through `train`)
share it.  The task (`zoo.tasks`) owns the default loss, the metrics and the
compile call; the recipe owns the optimizer and its schedule.

Arguments are validated before TensorFlow is imported, so a typo costs
milliseconds, and nothing already in a run directory is touched unless the
new run is ready to start (`zoo.runs` owns the directory and its files).
"""

import dataclasses
import inspect
import math
import numbers
import os
import sys
from typing import Optional

from zoo import checks, plots, runs
from zoo import io as zio
from zoo.registry import LOSSES, OPTIMIZERS, SCHEDULES, ModelSpec, Recipe, custom_spec, get_spec
from zoo.runs import load_run  # noqa: F401  (public here too: `zoo.training.load_run`)
from zoo.tasks import get_hooks, load_data, output_width  # noqa: F401  (load_data: public here too)


@dataclasses.dataclass
class TrainResult:
    """What `train` returns."""

    model: object
    run_dir: str
    history: dict
    metrics: dict
    bundle: object
    spec: ModelSpec
    resumed: bool = False


# --------------------------------------------------------------- compile recipe


def make_optimizer(name, learning_rate, *, momentum=0.9, weight_decay=0.0, ema_momentum=None):
    """A Keras optimizer by name (see `OPTIMIZERS`).

    `ema_momentum` (a number in (0, 1), or None) makes it keep an exponential
    moving average of the weights (Keras's `use_ema=True`), which `fit`
    writes into the model at its end.
    """
    import keras
    checks.choice("optimizer", name, OPTIMIZERS)
    decay = weight_decay or None
    average = {} if ema_momentum is None else {"use_ema": True, "ema_momentum": ema_momentum}
    optimizers = keras.optimizers
    if name == "sgd":
        return optimizers.SGD(learning_rate, weight_decay=decay, **average)
    if name in ("momentum", "nesterov"):
        return optimizers.SGD(learning_rate, momentum=momentum, nesterov=name == "nesterov",
                              weight_decay=decay, **average)
    if name == "adam":
        return optimizers.Adam(learning_rate, weight_decay=decay, **average)
    if name == "adamw":
        return optimizers.AdamW(learning_rate, weight_decay=weight_decay or 0.004, **average)
    if name == "rmsprop":
        return optimizers.RMSprop(learning_rate, momentum=momentum, weight_decay=decay, **average)
    if name == "adagrad":
        return optimizers.Adagrad(learning_rate, weight_decay=decay, **average)
    return optimizers.Adadelta(learning_rate, weight_decay=decay, **average)


def compile_model(model, spec, recipe=None, *, steps_per_epoch=1, epochs=None, loss=None,
                  jit_compile=False, hooks=None):
    """Compile `model`: the recipe's optimizer and LR schedule, then the task's compile step.

    The task (`zoo.tasks`) owns the default loss, the metrics of a loss and
    the compile call; the recipe owns the optimizer and its schedule.

    Args:
        model: an uncompiled Keras model built from `spec`.
        spec: its `ModelSpec`.
        recipe: a `Recipe` overriding `spec.recipe`. Defaults to None.
        steps_per_epoch: used to size the LR schedule. Defaults to 1.
        epochs: used to size the LR schedule; defaults to the recipe's.
        loss: loss name overriding the recipe's. Defaults to None.
        jit_compile: XLA compilation. Defaults to False.
        hooks: the spec's task hooks (resolved from `spec` when None). Defaults to None.
    """
    from zoo.callbacks import make_schedule

    hooks = hooks or get_hooks(spec)
    recipe = recipe or spec.recipe
    total_steps = max(1, int(steps_per_epoch) * int(epochs or recipe.epochs))
    learning_rate = make_schedule(recipe.schedule, recipe.learning_rate, total_steps=total_steps)
    optimizer = make_optimizer(recipe.optimizer, learning_rate, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay,
                               ema_momentum=recipe.ema_momentum)
    loss, metrics = hooks.loss_and_metrics(hooks.loss_name(spec, model, loss or recipe.loss),
                                           model, recipe=recipe)
    if recipe.label_smoothing and type(loss).__name__ == "SparseCategoricalCrossentropy":
        # Keras's sparse loss has no label_smoothing: the zoo's own has (zoo.losses).
        from zoo.losses import SmoothedSparseCategoricalCrossentropy
        loss = SmoothedSparseCategoricalCrossentropy(
            recipe.label_smoothing, from_logits=loss.get_config()["from_logits"])
    hooks.compile(model, optimizer=optimizer, loss=loss, metrics=metrics, recipe=recipe,
                  jit_compile=jit_compile)
    return model


# ------------------------------------------------------------------- the plan


@dataclasses.dataclass
class Plan:
    """Everything decided before a model is built: spec, task hooks, recipe, data.

    Made by `plan`; consumed by `build_model`, `fit` and `evaluate_model`.
    Tuning builds many models from one plan (the data is loaded once).
    """

    spec: ModelSpec
    hooks: object
    recipe: Recipe
    bundle: object
    config: runs.RunConfig
    model_kwargs: dict
    seed: int = 0
    strategy: object = None
    jit_compile: bool = False
    mixed_precision: object = False  # False, "float16" or "bfloat16"
    user_model: object = None
    run_dir: Optional[str] = None
    resumed: bool = False
    data_options: dict = dataclasses.field(default_factory=dict)

    def loss_for(self, recipe=None, bundle=None):
        """The loss name for `recipe` (None: the task's default for the built model)."""
        recipe = recipe or self.recipe
        bundle = bundle or self.bundle
        loss = recipe.loss
        if bundle.one_hot_labels and loss in (None, "sparse_categorical_crossentropy"):
            loss = "categorical_crossentropy"  # e.g. MixUp/CutMix soft labels
        return loss

    def steps_per_epoch(self, batch_size=None):
        batch_size = batch_size or self.bundle.batch_size
        # The pipeline's own count where known: a worker's share of a stream
        # (`zoo.data.shard_for_worker`) leaves out a remainder, so its steps
        # can be one fewer than the whole split's.
        steps = int(self.bundle.train.cardinality()) if batch_size == self.bundle.batch_size \
            and hasattr(self.bundle.train, "cardinality") else -1
        return steps if steps > 0 else -(-self.bundle.num_examples["train"] // batch_size)

    def builder_kwargs(self, model_kwargs=None):
        """Builder arguments: the caller's, then the sizes only the data knows."""
        kwargs = {**self.model_kwargs, **dict(model_kwargs or {})}
        if self.spec.builder is None:
            return kwargs
        params = inspect.signature(self.spec.builder).parameters
        if "input_shape" in params:
            kwargs.setdefault("input_shape", tuple(self.bundle.input_shape))
        if "num_classes" in params and self.bundle.num_classes:
            kwargs.setdefault("num_classes", self.bundle.num_classes)
        # Sizes only the data knows (e.g. a forecaster's horizon and number of targets).
        for key, value in self.bundle.extras.get("builder_kwargs", {}).items():
            if key in params:
                kwargs.setdefault(key, value)
        return kwargs

    def data(self, *, batch_size=None, augment=None, fresh=False):
        """The one place pipelines are made: the plan's `DataBundle`, or new ones over its split.

        The source is indexed and split once (in `plan`); this re-batches /
        re-augments that same validated split (arrays, or the file index of
        a streamed source) without reading or validating the source again.

        Args:
            batch_size: Defaults to the plan's.
            augment: augmentation names. Defaults to the recipe's.
            fresh: new `tf.data` objects even when batch size and augmentation
                are the plan's: a reshuffling pipeline's order depends on how
                often that object was iterated, so each tuning trial takes
                fresh ones. Defaults to False.
        """
        batch_size = batch_size or self.bundle.batch_size
        augment = self.recipe.augment if augment is None else tuple(augment)
        if (not fresh and batch_size == self.bundle.batch_size
                and tuple(augment) == tuple(self.recipe.augment)):
            return self.bundle
        return load_data(self.spec, self.config.data, hooks=self.hooks, batch_size=batch_size,
                         seed=self.seed, input_shape=tuple(self.bundle.input_shape),
                         augment=augment, classes=self.config.classes,
                         options=self.data_options, splits=self.bundle.arrays,
                         one_hot=self.bundle.one_hot_labels,
                         workers=_worker_share(self.strategy))

    def record_split(self):
        """Write the split manifest (and any skipped images) into the run directory.

        Only streamed sources (`folder:`, `tfrecord:`) have one: which files
        (or records) are in each split, so a resumed run, `zoo evaluate` and
        an export see exactly the examples the run started with.
        """
        if self.run_dir is None:
            return
        write_split_manifest(self.run_dir, self.bundle.arrays, source=self.config.data,
                             seed=self.seed)


SPLIT_FILE = "split.json"
SKIPPED_FILE = "skipped_images.txt"


def write_split_manifest(run_dir, splits, *, source, seed):
    """split.json (and skipped_images.txt) of a streamed source's split; nothing for arrays."""
    from zoo.splits import IndexSplits
    if not isinstance(splits, IndexSplits):
        return
    names = ("train", "validation", "test")
    manifest = {"source": source, "seed": seed, **splits.manifest(),
                "files": {name: splits.names(name) for name in names}}
    runs.write_json(os.path.join(run_dir, SPLIT_FILE), manifest)
    skipped = getattr(splits.index, "skipped", None)
    if skipped:
        zio.write_text(os.path.join(run_dir, SKIPPED_FILE),
                       "".join(f"{path}\t{why}\n" for path, why in skipped))
        print(f"{len(skipped)} image(s) skipped, listed in "
              f"{os.path.join(run_dir, SKIPPED_FILE)}", file=sys.stderr)


def check_split_manifest(run_dir, splits, *, source, what="resume"):
    """Refuse a streamed source whose split differs from the one `run_dir` recorded.

    Names what changed (files added or removed, by split) so the user can
    restore the folder, or start a new run.
    """
    from zoo.splits import IndexSplits
    path = os.path.join(run_dir, SPLIT_FILE)
    if not isinstance(splits, IndexSplits) or not os.path.exists(path):
        return
    recorded = zio.read_json(path, max_bytes=512 * 2 ** 20)
    current = splits.manifest()
    if recorded.get("hashes") == current["hashes"]:
        return
    from zoo.images import describe_change
    changes = []
    for name in ("train", "validation", "test"):
        before = (recorded.get("files") or {}).get(name, [])
        change = describe_change(before, splits.names(name))
        if change or recorded["hashes"].get(name) != current["hashes"][name]:
            changes.append(f"{name}: {change or 'a different selection'}")
    raise ValueError(f"The data changed since the run started, so it cannot {what} on the same "
                     f"examples ({'; '.join(changes)}); the run's split is recorded in {path}. "
                     f"Restore the data, or start a new run (overwrite=True, --overwrite). "
                     f"Received: data={source!r}")


def _is_keras_model(obj):
    return hasattr(obj, "fit") and hasattr(obj, "inputs") and hasattr(obj, "layers")


def _check_recipe_overrides(*, epochs, batch_size, optimizer, learning_rate, schedule, loss,
                            weight_decay, augment):
    if isinstance(augment, str):
        augment = (augment,)  # one name, not its letters
    if augment is not None and (isinstance(augment, bytes) or not all(
            isinstance(a, str) for a in augment)):
        raise TypeError(f"augment must be a list of augmentation names. "
                        f"Received: augment={augment!r}")
    return dict(
        epochs=checks.positive_int("epochs", epochs, allow_none=True),
        batch_size=checks.positive_int("batch_size", batch_size, allow_none=True),
        optimizer=optimizer and checks.choice("optimizer", optimizer, OPTIMIZERS),
        learning_rate=checks.positive_float("learning_rate", learning_rate, allow_none=True),
        schedule=schedule and checks.choice("schedule", schedule, SCHEDULES),
        loss=loss and checks.choice("loss", loss, LOSSES),
        weight_decay=(None if weight_decay is None
                      else checks.non_negative_float("weight_decay", weight_decay)),
        augment=tuple(augment) if augment is not None else None)


def plan(model_or_name, data="digits", *, epochs=None, batch_size=None, optimizer=None,
         learning_rate=None, schedule=None, loss=None, weight_decay=None, augment=None,
         recipe=None, seed=0, model_kwargs=None, data_options=None, classes=None,
         strategy=None, deterministic=False, jit_compile=None, mixed_precision=None,
         task="classification", base_model=None, config_extra=None, run_dir=None,
         overwrite=False, validation_split=0.1, test_split=0.2, per_replica_batch=None,
         scale_lr=False, skip_bad_images=False, cache=None):
    """Validate arguments, resolve the task hooks once, index and split the data once.

    Args:
        model_or_name: registered name or an uncompiled `keras.Model`.
        data: data source (see `zoo.data`). Defaults to "digits".
        epochs / batch_size / optimizer / learning_rate / schedule / loss /
            weight_decay / augment: override the recipe. Default to None.
        recipe: a whole `Recipe` replacing the spec's (overrides still apply).
            Defaults to None.
        seed: seed for `keras.utils.set_random_seed`, splits and shuffling. Defaults to 0.
        model_kwargs: builder arguments. Defaults to None.
        data_options: the task's data options (text_column, lookback, ...). Defaults to None.
        classes: keep only these labels. Defaults to None.
        strategy: distribution strategy name (see `zoo.distribute`) or a
            `tf.distribute.Strategy`, recorded for the caller's scope. Defaults to None.
        deterministic: enable TensorFlow op determinism. Defaults to False.
        jit_compile: XLA; None means on with a GPU, off on CPU. Defaults to None.
        mixed_precision: "float16" or "bfloat16" compute (True: float16), or
            False. None: float16 with a GPU; bfloat16 for the batch-normalized
            convnets (`CPU_BFLOAT16_FAMILIES`) on a CPU with AMX-BF16; else
            float32. Defaults to None.
        task: task of a plain `keras.Model`. Defaults to "classification".
        base_model: registered spec a plain `keras.Model` derives from (a
            fine-tuned backbone), recorded in the run. Defaults to None.
        config_extra: more keys for config.json (e.g. weights provenance). Defaults to None.
        run_dir: the run directory to check (nothing is written). Defaults to None.
        overwrite: allow replacing what `run_dir` holds. Defaults to False.
        validation_split / test_split: split fractions. Default to 0.1 / 0.2.
        per_replica_batch: batch per replica; the global batch becomes this
            times the strategy's replicas. Defaults to None (`batch_size` and
            the recipe's batch size are the global batch, split evenly).
        scale_lr: linear scaling rule: learning rate x global batch / the
            recipe's batch size. Defaults to False.
        skip_bad_images: `folder:` images that cannot be decoded are left out
            (listed in the run directory's skipped_images.txt) instead of
            failing on the first. Defaults to False.
        cache: a folder for `tf.data`'s disk cache of decoded examples
            (`folder:`, `tfrecord:`). Defaults to None.

    Returns:
        A `Plan`.
    """
    data_options = _stream_options(data_options, skip_bad_images=skip_bad_images, cache=cache)
    # ---- validation, before TensorFlow is imported
    spec, user_model = _resolve_model(model_or_name, task=task, base_model=base_model)
    recipe_asked = _check_recipe(spec, recipe, epochs=epochs, batch_size=batch_size,
                                 optimizer=optimizer, learning_rate=learning_rate,
                                 schedule=schedule, loss=loss, weight_decay=weight_decay,
                                 augment=augment)
    from zoo import augment as augment_module
    augment_module.check_for_model(recipe_asked.augment, spec, loss=recipe_asked.loss)
    checks.non_negative_int("seed", seed)
    _check_mixed_precision(mixed_precision)
    model_kwargs = _check_model_kwargs(spec, user_model, model_kwargs)
    per_replica_batch = _check_run_options(
        spec, classes=classes, strategy=strategy, batch_size=batch_size,
        per_replica_batch=per_replica_batch, scale_lr=scale_lr, data_options=data_options)
    config = _run_config(spec, user_model, data, model_kwargs=model_kwargs, recipe=recipe_asked,
                         seed=seed, data_options=data_options, classes=classes,
                         strategy=strategy, deterministic=deterministic,
                         base_model=base_model, config_extra=config_extra)
    run_dir = os.path.abspath(run_dir) if run_dir is not None else None
    # Refuse an occupied run_dir now; it is touched only once the model is built.
    resumed = run_dir is not None and runs.check_run_dir(run_dir, config, overwrite=overwrite)

    # ---- TensorFlow from here on
    recipe = _distribute_batches(recipe_asked, config, strategy=strategy,
                                 reference_batch=(recipe or spec.recipe).batch_size,
                                 per_replica_batch=per_replica_batch, scale_lr=scale_lr)
    jit_compile, mixed_precision = _set_up_runtime(
        seed, deterministic=deterministic, jit_compile=jit_compile,
        mixed_precision=mixed_precision, family=spec.family if user_model is None else None)
    hooks = get_hooks(spec)
    bundle = load_data(spec, data, hooks=hooks, batch_size=recipe.batch_size, seed=seed,
                       input_shape=model_kwargs.get("input_shape") or (
                           tuple(user_model.inputs[0].shape[1:]) if user_model else None),
                       augment=recipe.augment, classes=classes, options=data_options,
                       one_hot=recipe.loss == "categorical_crossentropy",
                       validation_split=validation_split, test_split=test_split,
                       workers=_worker_share(strategy))
    run_plan = Plan(spec=spec, hooks=hooks, recipe=recipe, bundle=bundle, config=config,
                    model_kwargs=model_kwargs, seed=seed, strategy=strategy,
                    jit_compile=jit_compile, mixed_precision=mixed_precision,
                    user_model=user_model, run_dir=run_dir, resumed=resumed,
                    data_options=dict(data_options or {}))
    if resumed:
        check_split_manifest(run_dir, bundle.arrays, source=config.data)
    _record_data(run_plan)
    return run_plan


def _worker_share(strategy):
    """(workers, this worker's index) where each worker reads its own share of a stream, else None."""
    if strategy is None or strategy == "default":
        return None
    from zoo.data import worker_share
    from zoo.distribute import get_strategy
    return worker_share(get_strategy(strategy))


def _stream_options(data_options, *, skip_bad_images, cache):
    """`data_options` with the streaming switches added (they are recorded with the run)."""
    if not isinstance(skip_bad_images, bool):
        raise TypeError(f"skip_bad_images must be True or False. Received: "
                        f"skip_bad_images={skip_bad_images!r}")
    options = dict(data_options or {})
    if skip_bad_images:
        options["skip_bad_images"] = True
    if cache is not None:
        options["cache"] = os.fspath(cache)
    return options or data_options


def _run_config(spec, user_model, data, *, model_kwargs, recipe, seed, data_options, classes,
                strategy, deterministic, base_model, config_extra):
    """config.json as far as the arguments decide it (`_record_data` adds the data's part)."""
    return runs.RunConfig(
        model=spec.name, data=data if isinstance(data, str) else "<arrays>",
        model_kwargs=dict(model_kwargs), recipe=recipe.to_dict(), seed=seed,
        data_options=dict(data_options or {}),
        classes=list(classes) if classes is not None else None,
        strategy=strategy if isinstance(strategy, (str, type(None))) else repr(strategy),
        deterministic=bool(deterministic), task=spec.task, registered=user_model is None,
        base_model=spec.name if user_model is None else base_model,
        input_kind=spec.input_kind, extra=dict(config_extra or {}))


def _record_data(run_plan):
    """What only the loaded data and the runtime decide, into the plan's config."""
    config, bundle = run_plan.config, run_plan.bundle
    config.input_shape = list(bundle.input_shape)
    config.num_classes = bundle.num_classes
    config.class_names = bundle.class_names
    config.loss = run_plan.loss_for()
    config.num_examples = dict(bundle.num_examples)
    config.jit_compile = run_plan.jit_compile
    config.mixed_precision = run_plan.mixed_precision


def _resolve_model(model_or_name, *, task, base_model):
    """(spec, the user's keras.Model or None) of `plan`'s first argument."""
    user_model = None
    base = get_spec(base_model) if base_model is not None else None
    if isinstance(model_or_name, str):
        spec = get_spec(model_or_name)
    elif _is_keras_model(model_or_name):
        user_model = model_or_name
        spec = custom_spec(user_model.name, input_shape=tuple(user_model.inputs[0].shape[1:]),
                           task=task, base=base)
    else:
        raise TypeError(f"model_or_name must be a registered name or a keras.Model. "
                        f"Received: {type(model_or_name).__name__}")
    if not spec.trainable:
        raise ValueError(f"Model '{spec.name}' is not trainable with `zoo.train`.")
    return spec, user_model


def _check_recipe(spec, recipe, **overrides):
    """The recipe as asked: `recipe` (or the spec's) with the checked overrides."""
    if recipe is not None and not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a zoo.Recipe. Received: {type(recipe).__name__}")
    return (recipe or spec.recipe).replace(**_check_recipe_overrides(**overrides))


def _check_model_kwargs(spec, user_model, model_kwargs):
    if model_kwargs is not None and not isinstance(model_kwargs, dict):
        raise TypeError(f"model_kwargs must be a dict. Received: {type(model_kwargs).__name__}")
    model_kwargs = dict(model_kwargs or {})
    if user_model is not None:
        if model_kwargs:
            raise ValueError(f"model_kwargs apply to registered models only; a keras.Model is "
                             f"already built. Received: model_kwargs={model_kwargs!r}")
        return model_kwargs
    unknown = sorted(set(model_kwargs) - set(spec.arguments))
    if unknown:
        raise ValueError(f"Unknown model argument(s) {unknown} for '{spec.name}'. "
                         f"Allowed: {sorted(spec.arguments)}")
    for key, value in model_kwargs.items():
        if isinstance(spec.arguments.get(key), bool) and not isinstance(value, bool):
            raise TypeError(f"{key} must be True or False. Received: {key}={value!r}")
    _check_num_classes(spec, model_kwargs)
    return model_kwargs


def _check_run_options(spec, *, classes, strategy, batch_size, per_replica_batch, scale_lr,
                       data_options):
    """Check the run's options; returns the checked `per_replica_batch`."""
    if classes is not None:
        if isinstance(classes, (str, bytes)) or len(classes) < 2 or len(set(classes)) != len(
                classes) or not all(
                isinstance(c, numbers.Integral) and not isinstance(c, bool) and c >= 0
                for c in classes):
            raise ValueError(f"classes must list at least two distinct non-negative integer "
                             f"labels. Received: classes={classes!r}")
    if strategy is not None and isinstance(strategy, str):
        from zoo.distribute import STRATEGIES
        checks.choice("strategy", strategy, STRATEGIES)
    from zoo.distribute import check_family
    check_family(spec.family, strategy, model=spec.name)
    per_replica_batch = checks.positive_int("per_replica_batch", per_replica_batch,
                                            allow_none=True)
    if per_replica_batch is not None and batch_size is not None:
        raise ValueError(f"Pass either batch_size (the global batch) or per_replica_batch, not "
                         f"both. Received: batch_size={batch_size}, "
                         f"per_replica_batch={per_replica_batch}")
    if not isinstance(scale_lr, bool):
        raise TypeError(f"scale_lr must be True or False. Received: scale_lr={scale_lr!r}")
    if data_options is not None and not isinstance(data_options, dict):
        raise TypeError(f"data_options must be a dict. Received: {type(data_options).__name__}")
    return per_replica_batch


def _distribute_batches(recipe, config, *, strategy, reference_batch, per_replica_batch,
                        scale_lr):
    """The recipe the replicas use (global batch, scaled LR), recorded in `config.extra`.

    First, before any other TensorFlow op: a multi-worker strategy starts its
    server here.  The batch is global: each replica gets global / replicas.
    `reference_batch` is the batch the recipe's learning rate was set for.
    """
    from zoo.distribute import batch_plan, get_strategy

    batches = batch_plan(batch_size=recipe.batch_size,
                         replicas=get_strategy(strategy).num_replicas_in_sync,
                         per_replica_batch=per_replica_batch, scale_lr=scale_lr,
                         learning_rate=recipe.learning_rate, reference_batch=reference_batch)
    # config.recipe keeps the recipe as asked (a resumed run compares it);
    # what the replicas actually use is recorded beside it.
    recipe = recipe.replace(batch_size=batches["global_batch_size"],
                            learning_rate=batches["learning_rate"])
    config.extra.update(global_batch_size=batches["global_batch_size"],
                        per_replica_batch_size=batches["per_replica_batch_size"],
                        replicas=batches["replicas"], effective_learning_rate=recipe.learning_rate,
                        scale_lr=scale_lr, **({"lr_reference_batch_size": reference_batch}
                                              if scale_lr else {}))
    return recipe


# Families whose training a bfloat16 policy speeds up on a CPU with AMX-BF16
# tiles (oneDNN runs their convolutions there): the batch-normalized convnets,
# whose `zoo.models.layers.cnn.BatchNormalization` keeps bfloat16 fused.
# Measured on a 2-core Sapphire Rapids, batch 128, random 28x28 images,
# steps/s (2026-12-05): resnet20 4.4 in float32 with Keras's layer, 4.9 with
# the fused one, 11.6 in bfloat16 with it (4.7 with Keras's); with the fused
# layer, float32 -> bfloat16: wrn16_4 0.98 -> 1.95, resnet9 1.19 -> 2.34;
# lenet5 80 -> 83 and mlp 454 -> 431 gain nothing, so they stay float32.
# `benchmarks/fit_speed.py --mixed-precision auto` measures it against Keras.
CPU_BFLOAT16_FAMILIES = frozenset({"resnet", "resnet9", "vgg", "wide_resnet"})


def _check_mixed_precision(mixed_precision):
    if mixed_precision is None or isinstance(mixed_precision, bool) or (
            isinstance(mixed_precision, str) and mixed_precision in runs.PRECISIONS):
        return
    raise ValueError(f"mixed_precision must be None (automatic), True, False, \"float16\" or "
                     f"\"bfloat16\". Received: mixed_precision={mixed_precision!r}")


def cpu_has_amx_bf16():
    """Whether this CPU advertises AMX-BF16 (Linux's /proc/cpuinfo flags; False elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def _precision(mixed_precision, *, on_gpu, family):
    """False, "float16" or "bfloat16" for `plan`'s `mixed_precision` argument."""
    if mixed_precision is None:
        if on_gpu:
            return "float16"
        return "bfloat16" if family in CPU_BFLOAT16_FAMILIES and cpu_has_amx_bf16() else False
    if mixed_precision is True:
        return "float16"
    return mixed_precision or False


def _set_up_runtime(seed, *, deterministic, jit_compile, mixed_precision, family=None):
    """Seed Keras, op determinism; (jit_compile, mixed_precision) resolved for this machine.

    jit_compile None: on with a GPU. mixed_precision: see `_precision`.
    """
    import keras

    keras.utils.set_random_seed(seed)
    if deterministic:
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()
    on_gpu = _on_gpu()
    jit_compile = on_gpu if jit_compile is None else bool(jit_compile)
    return jit_compile, _precision(mixed_precision, on_gpu=on_gpu, family=family)


def _head_activation(model):
    """Name of the last layer's activation ("softmax", "sigmoid", "linear"), or None."""
    last = model.layers[-1] if getattr(model, "layers", None) else None
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", None) if activation is not None else None


def _check_head(spec, model, num_classes):
    if spec.task != "classification" or not num_classes:
        return
    width = output_width(model)
    received = (f"Received: num_classes={width}" if spec.builder is not None
                else f"Received: a model with {width} output(s)")
    if width == 1 and _head_activation(model) == "softmax":
        raise ValueError(f"Model '{spec.name}' has a single softmax output, which always "
                         f"predicts 1: a classifier needs num_classes >= 2 (or one sigmoid "
                         f"output for two classes). {received}")
    if width == 1 and num_classes > 2:
        raise ValueError(f"Model '{spec.name}' has one sigmoid output (binary), but the data has "
                         f"{num_classes} classes. Select two with classes=(a, b) "
                         f"(CLI: --classes a,b).")
    if width not in (None, 1) and width != num_classes:
        raise ValueError(f"Model '{spec.name}' predicts {width} classes but the data has "
                         f"{num_classes}. {received}")


def _check_loss(spec, model, loss, bundle):
    """Refuse a loss the classifier's head and integer labels cannot train with."""
    width = output_width(model)
    if spec.task != "classification" or width is None or loss is None:
        return
    hint = None
    if loss in ("mse", "mae") and width > 1:
        hint = (f"is a regression loss, but model '{spec.name}' is a classifier with {width} "
                f"outputs (one per class) and the labels are class ids. Use "
                f"'sparse_categorical_crossentropy'")
    elif loss in ("sparse_categorical_crossentropy", "categorical_crossentropy") and width == 1:
        hint = (f"needs one output per class, but model '{spec.name}' has a single sigmoid "
                f"output (two classes). Use 'binary_crossentropy'")
    elif loss == "binary_crossentropy" and width > 1 and not bundle.one_hot_labels:
        hint = (f"needs a single sigmoid output, but model '{spec.name}' has {width} outputs "
                f"(one per class). Use 'sparse_categorical_crossentropy'")
    if hint:
        raise ValueError(f"loss={loss!r} {hint}. Received: loss={loss!r}")


def _check_num_classes(spec, model_kwargs):
    """num_classes < 2 for a registered softmax classifier, refused before TensorFlow."""
    if spec.task != "classification" or "num_classes" not in model_kwargs:
        return
    value = model_kwargs["num_classes"]
    checks.positive_int("num_classes", value)
    activation = model_kwargs.get("classifier_activation",
                                  spec.arguments.get("classifier_activation"))
    if value == 1 and activation == "softmax":
        raise ValueError(f"A classifier with a single softmax output always predicts 1: "
                         f"num_classes must be at least 2 (the data's number of classes, the "
                         f"default), or use classifier_activation='sigmoid' for two classes. "
                         f"Received: num_classes={value!r}")


def _on_gpu():
    import tensorflow as tf
    return bool(tf.config.list_physical_devices("GPU"))


def build_model(run_plan, *, model_kwargs=None, recipe=None, model=None, epochs=None, bundle=None):
    """Build, check the head, wrap for the task, and compile: one model of `run_plan`.

    Opens no strategy scope: the caller does (KerasTuner opens its own around
    `HyperModel.build`).  The dtype policy (mixed precision) is set for the
    build and restored afterwards.

    Args:
        run_plan: a `Plan`.
        model_kwargs: builder arguments on top of the plan's. Defaults to None.
        recipe: a `Recipe` replacing the plan's (a tuning trial's). Defaults to None.
        model: an already built `keras.Model` to wrap and compile instead
            (a fine-tuning phase). Defaults to None (build from the spec).
        epochs: epochs the LR schedule is sized for; defaults to the recipe's.
        bundle: the data the model will see (its batch size sizes the
            schedule); defaults to `run_plan.bundle`.
    """
    import keras

    recipe = recipe or run_plan.recipe
    bundle = bundle or run_plan.bundle
    if recipe.tta:
        _check_tta(run_plan.spec, bundle)
    previous_policy = keras.config.dtype_policy().name
    if run_plan.mixed_precision:
        keras.config.set_dtype_policy(f"mixed_{run_plan.mixed_precision}")
    spec, hooks = run_plan.spec, run_plan.hooks
    loss = run_plan.loss_for(recipe, bundle)
    try:
        if model is None:
            model = run_plan.user_model if run_plan.user_model is not None else \
                spec.build(**run_plan.builder_kwargs(model_kwargs))
        _check_head(spec, model, bundle.num_classes)
        _check_loss(spec, model, hooks.loss_name(spec, model, loss), bundle)
        model = hooks.wrap_model(model, bundle)
        compile_model(model, spec, recipe,
                      steps_per_epoch=run_plan.steps_per_epoch(bundle.batch_size), epochs=epochs,
                      loss=loss, jit_compile=run_plan.jit_compile, hooks=hooks)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    return model


# "auto" steps per execution: at most this many, and no more than fit in
# EXECUTION_MACS multiply-adds (a few seconds of this 2-core CPU), so that the
# progress bar and batch-level backups still move every few seconds.
MAX_STEPS_PER_EXECUTION = 32
EXECUTION_MACS = 1e11


def choose_steps_per_execution(model, *, batch_size, steps_per_epoch=None, callbacks=(),
                               asked="auto", one_step=False):
    """Training steps per call into TensorFlow (`compile(steps_per_execution=...)`).

    Small models are bound by the per-step overhead of `fit` (a call from
    Python into the graph, callbacks, metric reads): running 32 steps per
    call nearly doubles an MLP's or LeNet-5's steps/s on a CPU, and convnets,
    bound by compute, lose nothing.  The rule for "auto":

    - 1 where a callback needs every batch (`zoo.callbacks.needs_every_batch`:
      batch hooks not written for steps_per_execution);
    - else `MAX_STEPS_PER_EXECUTION` (32), lowered so that one execution
      stays under `EXECUTION_MACS` multiply-adds (`zoo.flops.count_macs` per
      example, at least the parameter count, times the batch), e.g. 19 for a
      ResNet-20 at batch 128 on 32x32 images;
    - never more than the epoch's steps.

    An integer `asked` is used as is (at most the epoch's steps); Keras then
    calls the batch hooks once per execution, with its last step's index.
    `one_step` (any distribution strategy: `fit` passes it) forces 1: the
    custom multi-worker loop runs one step per call, and Keras 3.15's
    multi-step loop fails under MirroredStrategy ("You must feed a value for
    placeholder tensor ... multi_step_on_iterator").
    """
    from zoo.callbacks import needs_every_batch

    if one_step:
        return 1
    if asked != "auto":
        steps = int(asked)
    elif any(needs_every_batch(c) for c in callbacks):
        return 1
    else:
        from zoo.flops import count_macs

        per_example = 0
        for count in (model.count_params, lambda: count_macs(model)):
            try:
                per_example = max(per_example, int(count()))
            except (ValueError, TypeError, AttributeError, IndexError):
                pass  # an unbuilt or subclassed model: what can be counted stands in
        steps = int(EXECUTION_MACS // max(1, per_example * int(batch_size)))
        steps = max(1, min(MAX_STEPS_PER_EXECUTION, steps))
    if steps_per_epoch:
        steps = min(steps, int(steps_per_epoch))
    return max(1, steps)


def _is_distributed(strategy):
    """Whether `strategy` is one the user chose (not TensorFlow's default, no-op one)."""
    return strategy is not None and type(strategy).__name__ != "_DefaultDistributionStrategy"


def _set_steps_per_execution(model, steps):
    if getattr(model, "steps_per_execution", 1) != steps:
        model.steps_per_execution = steps
        # Keras reads it when it traces these: trace them again.
        model.train_function = model.test_function = model.predict_function = None


def fit(run_plan, model, *, run_dir=None, epochs=None, callbacks=None, resume=False, verbose="auto",
        backup_freq="epoch", bundle=None, recipe=None, initial_epoch=0, steps_per_execution=None):
    """Train `model` on the plan's data with the shared callbacks.

    With a `run_dir`, the full standard set writes into it (best checkpoint,
    BackupAndRestore, history.csv, TensorBoard) plus the task's own
    callbacks; without one, only the in-memory callbacks run (TerminateOnNaN,
    early stopping, ReduceLROnPlateau), as a tuning trial wants.

    Args:
        run_plan: a `Plan`.
        model: a model from `build_model(run_plan)`.
        run_dir: directory the callbacks write to. Defaults to None.
        epochs: Defaults to the recipe's.
        callbacks: extra Keras callbacks. Defaults to None.
        resume: continue history.csv (an interrupted run). Defaults to False.
        verbose: Keras verbosity. Defaults to "auto".
        backup_freq: BackupAndRestore frequency ("epoch" or batches). Defaults to "epoch".
        bundle: the data (e.g. `run_plan.data(batch_size=...)`); defaults to `run_plan.bundle`.
        recipe: the recipe the model was compiled with; defaults to `run_plan.recipe`.
        initial_epoch: Keras `initial_epoch`. Defaults to 0.
        steps_per_execution: a positive integer or "auto" (see
            `choose_steps_per_execution`); defaults to the recipe's.

    Returns:
        The Keras `History`; `model.steps_per_execution` holds the steps per
        execution used.
    """
    from zoo.callbacks import ExecutionProgbar, finalize_last, standard_callbacks
    from zoo.distribute import is_chief, uses_custom_loop

    recipe = recipe or run_plan.recipe
    bundle = bundle or run_plan.bundle
    epochs = checks.positive_int("epochs", epochs, allow_none=True) or recipe.epochs
    asked = recipe.steps_per_execution if steps_per_execution is None else steps_per_execution
    if asked != "auto" and (isinstance(asked, bool) or not isinstance(asked, numbers.Integral)
                            or asked < 1):
        raise ValueError(f"steps_per_execution must be a positive integer or 'auto'. "
                         f"Received: steps_per_execution={asked!r}")
    strategy = model.distribute_strategy  # the one the model was built under
    # Faithful resume: the training pipeline reshuffles from its seed once per
    # iterator.  With steps_per_epoch given (the pipeline's own batch count),
    # Keras makes exactly one training iterator per epoch, so epoch k sees the
    # k-th order; creating (and dropping) one iterator per completed epoch puts
    # a resumed run on the order the uninterrupted run would have used next.
    steps = int(bundle.train.cardinality()) if hasattr(bundle.train, "cardinality") else -1
    steps_per_epoch = steps if steps > 0 else None
    if run_dir is not None and resume and steps_per_epoch:
        for _ in range(runs.completed_epochs(run_dir)):
            iter(bundle.train)
    # Multi-worker: only the chief writes (checkpoints, backup, CSV, TensorBoard);
    # every worker runs the in-memory callbacks on the same logs, so they agree.
    if not is_chief(strategy):
        run_dir, verbose = None, 0
    run_callbacks = standard_callbacks(run_dir, monitor=run_plan.hooks.monitor,
                                       patience=recipe.early_stopping_patience,
                                       schedule=recipe.schedule, backup_freq=backup_freq,
                                       resume=resume,
                                       ema=bool(getattr(model.optimizer, "use_ema", False)))
    if run_dir is not None:
        run_callbacks += run_plan.hooks.callbacks(model, bundle, run_dir)
    run_callbacks += list(callbacks or [])
    if verbose not in (0, "0", False):
        from zoo.callbacks import RemainingTime
        run_callbacks += [RemainingTime(), ExecutionProgbar()]
    run_callbacks = finalize_last(run_callbacks)
    _set_steps_per_execution(model, choose_steps_per_execution(
        model, batch_size=bundle.batch_size, steps_per_epoch=steps_per_epoch,
        callbacks=run_callbacks, asked=asked,
        one_step=uses_custom_loop(strategy) or _is_distributed(strategy)))
    if uses_custom_loop(strategy):
        # Keras 3 fit fails under MultiWorkerMirroredStrategy (keras-team/keras
        # issue 20585) and TPUStrategy (issue 19448). Once fixed, switching
        # back to fit is one line: `uses_custom_loop` returns False.
        from zoo.distributed_loop import fit_loop
        return fit_loop(model, bundle.train, validation_data=bundle.validation, epochs=epochs,
                        callbacks=run_callbacks, verbose=verbose, initial_epoch=initial_epoch)
    # The training pipeline shuffles itself (seeded), so fit must not.
    return model.fit(bundle.train, validation_data=bundle.validation, epochs=epochs,
                     callbacks=run_callbacks, verbose=verbose, shuffle=False,
                     initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch)


def _check_tta(spec, bundle):
    """Test-time augmentation (a horizontal flip) needs an image classifier."""
    shape = tuple(bundle.input_shape or ())
    if spec.task != "classification" or len(shape) != 3:
        raise ValueError(f"tta (test-time augmentation by a horizontal flip) applies to "
                         f"classifiers of (height, width, channels) images; model "
                         f"'{spec.name}' is a {spec.task} model of inputs shaped {shape}. "
                         f"Received: tta=True")


def tta_accuracy(model, dataset):
    """Accuracy of the average of each image's and its horizontal mirror's class probabilities.

    Args:
        model: a classifier of (N, H, W, C) images (softmax, sigmoid or logits head).
        dataset: batches of (images, labels[, weights]); labels are class ids or one-hot.
    """
    import keras
    import numpy as np
    from keras import ops

    from zoo.tasks import _outputs_logits

    logits = _outputs_logits(model)
    correct = total = 0
    for batch in dataset:
        images, labels = batch[0], np.asarray(batch[1])
        views = [model(images, training=False), model(ops.flip(images, axis=2), training=False)]
        if logits:
            views = [keras.activations.sigmoid(v) if v.shape[-1] == 1 else
                     keras.activations.softmax(v) for v in views]
        probabilities = np.asarray(ops.convert_to_numpy((views[0] + views[1]) / 2.0))
        if probabilities.shape[-1] == 1:
            predicted = (probabilities[:, 0] > 0.5).astype("int64")
        else:
            predicted = probabilities.argmax(axis=-1)
        if labels.ndim > 1 and labels.shape[-1] > 1:
            labels = labels.argmax(axis=-1)
        correct += int((predicted == labels.reshape(-1).astype("int64")).sum())
        total += len(predicted)
    return correct / max(1, total)


def evaluate_model(run_plan, model, *, bundle=None, tta=None):
    """Test-split metrics, prefixed "test_", plus the task's own metrics.

    With `tta` (default: the recipe's), an image classifier also reports
    `test_tta_accuracy` (`tta_accuracy`: the image and its mirror averaged).
    """
    bundle = bundle or run_plan.bundle
    tta = run_plan.recipe.tta if tta is None else tta
    if tta:
        _check_tta(run_plan.spec, bundle)
    metrics = {}
    if (getattr(model, "compiled_loss", None) is not None
            or getattr(model, "loss", None) is not None):
        values = model.evaluate(bundle.test, verbose=0, return_dict=True)
        metrics = {f"test_{k}": float(v) for k, v in values.items()}
    if tta:
        metrics["test_tta_accuracy"] = tta_accuracy(model, bundle.test)
    metrics.update({k: (float(v) if isinstance(v, (int, float)) else v)
                    for k, v in run_plan.hooks.evaluate(model, bundle).items()})
    return metrics


def save_run(run_plan, model, run_dir, metrics, *, export=True):
    """Finish a run directory: model.keras, curves, the export, then metrics.json.

    metrics.json marks the run finished, so it is written only once the model
    and every artifact are safely on disk; the backup goes after it.  A kill
    at any point leaves a run that the same command resumes.
    """
    history = runs.read_history(os.path.join(run_dir, runs.HISTORY_FILE))
    metrics = dict(metrics, epochs_run=len(history.get("epoch", [])))
    runs.save_model(model, os.path.join(run_dir, runs.MODEL_FILE))
    plots.plot_curves(history, os.path.join(run_dir, "curves.png"))
    if len(getattr(model, "inputs", None) or ()) == 1:
        # Test inputs exactly as the model receives them: a later `zoo export`
        # verifies its artifacts on these without reloading the data.
        import numpy as np
        samples = run_plan.bundle.take_inputs("test", 8)
        runs.atomic_write(os.path.join(run_dir, runs.SAMPLE_FILE),
                          lambda tmp: np.savez(tmp, inputs=samples), suffix=".npz")
    if export and run_plan.spec.exportable:
        from zoo.export import export_run
        export_run(run_dir, model=model, bundle=run_plan.bundle, hooks=run_plan.hooks,
                   overwrite=True, metrics=metrics)
    runs.write_json(os.path.join(run_dir, runs.METRICS_FILE), metrics)
    runs.finish_run_dir(run_dir)
    return history, metrics


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite: the run is marked failed, not finished."""


def _refuse_diverged(run_plan, fitted, run_dir):
    """Mark a run whose loss blew up as failed (metrics.json status) and raise.

    `TerminateOnNaN` stopped it; its weights are not saved as the run's model
    and nothing is exported, while checkpoints/best.keras keeps the last good
    epoch's model.
    """
    losses = list((getattr(fitted, "history", None) or {}).get("loss", []))
    if not losses or (losses[-1] is not None and math.isfinite(losses[-1])):
        return
    # History.epoch holds the absolute indices of the epochs this fit ran (a
    # resumed fit starts after the backup's), so this is the epoch that blew up.
    ran = list(getattr(fitted, "epoch", None) or [])
    epoch = ran[-1] + 1 if ran else len(losses)
    reason = f"the training loss became {losses[-1]} in epoch {epoch}"
    if run_dir is not None:
        runs.write_json(os.path.join(run_dir, runs.METRICS_FILE), {
            "status": "failed", "reason": reason, "epochs_run": epoch,
            "best_checkpoint": os.path.join(run_dir, "checkpoints", "best.keras")})
        runs.finish_run_dir(run_dir)
    raise TrainingDiverged(
        f"Training diverged: {reason}; the run is marked failed (metrics.json) and "
        f"checkpoints/best.keras keeps the last good model. Lower the learning rate "
        f"(received learning_rate={run_plan.recipe.learning_rate}) and run again with "
        f"overwrite=True (--overwrite). Received: run_dir={run_dir!r}")


def finish_run(run_plan, model, run, *, fitted=None, export=True):
    """The last step of a run: evaluate, then (the chief) save it and mark it finished.

    Args:
        run_plan: the run's `Plan`.
        model: the trained model.
        run: the `zoo.runs.OpenRun` holding the run directory.
        fitted: the Keras `History` of the last `fit`: a loss that became NaN
            or infinite marks the run failed (`TrainingDiverged`) instead of
            saving it, and it is the history a non-chief worker returns.
            Defaults to None (no check; a worker reads history.csv).
        export: export a SavedModel and model card. Defaults to True.

    Returns:
        (model, history, metrics); the model is a local copy where the
        strategy trains with the custom loop.
    """
    from zoo.distribute import uses_custom_loop

    if fitted is not None:
        _refuse_diverged(run_plan, fitted, run.run_dir if run.chief else None)
    if uses_custom_loop(model.distribute_strategy):
        # evaluate/save/export fail under this strategy too (keras issue
        # 20585): every worker goes on with its own local copy of the model.
        from zoo.distributed_loop import local_model
        model = local_model(model)
    metrics = evaluate_model(run_plan, model)
    if run.chief:
        history, metrics = save_run(run_plan, model, run.run_dir, metrics, export=export)
    elif fitted is not None:
        history = dict(fitted.history)
    else:
        history = runs.read_history(os.path.join(run.run_dir, runs.HISTORY_FILE))
    return model, history, metrics


def train(model_or_name, data="digits", *, epochs=None, batch_size=None, optimizer=None,
          learning_rate=None, schedule=None, loss=None, seed=0, run_dir=None, strategy=None,
          overwrite=False, model_kwargs=None, data_options=None, augment=None, classes=None,
          deterministic=False, jit_compile=None, mixed_precision=None, task="classification",
          callbacks=None, backup_freq="epoch", export=True, verbose="auto", **plan_options):
    """Train a registered model (or a Keras model) and write a run directory.

    Args:
        model_or_name: registered name or an uncompiled `keras.Model`.
        data: data source (see `zoo.data`). Defaults to "digits".
        epochs / batch_size / optimizer / learning_rate / schedule / loss:
            override the spec's `Recipe`. Default to None (the recipe's).
        seed: seed for `keras.utils.set_random_seed`, splits and shuffling. Defaults to 0.
        run_dir: run directory. Defaults to "runs/<name>".
        strategy: distribution strategy name (see `zoo.distribute`) or a
            `tf.distribute.Strategy`. Defaults to None (default strategy).
        overwrite: replace an existing run directory. Defaults to False.
        model_kwargs: builder arguments. Defaults to None.
        data_options: the task's data options (text_column, ...). Defaults to None.
        augment: augmentation names overriding the recipe's. Defaults to None.
        classes: keep only these labels. Defaults to None.
        deterministic: enable TensorFlow op determinism. Defaults to False.
        jit_compile: XLA; None means on with a GPU, off on CPU. Defaults to None.
        mixed_precision: "float16" or "bfloat16" compute (True: float16), or
            False. None: float16 with a GPU; bfloat16 for the batch-normalized
            convnets (`CPU_BFLOAT16_FAMILIES`) on a CPU with AMX-BF16; else
            float32. Defaults to None.
        task: task of a plain `keras.Model`. Defaults to "classification".
        callbacks: extra Keras callbacks. Defaults to None.
        backup_freq: BackupAndRestore frequency ("epoch" or batches). Defaults to "epoch".
        export: export a SavedModel and model card into the run directory. Defaults to True.
        verbose: Keras verbosity. Defaults to "auto".
        **plan_options: more `plan` arguments (recipe, weight_decay,
            base_model, config_extra, validation_split, test_split).
    """
    name = model_or_name if isinstance(model_or_name, str) else \
        getattr(model_or_name, "name", "model")
    run_dir = os.path.abspath(run_dir or os.path.join("runs", str(name)))
    from zoo.distribute import get_strategy, is_chief
    with runs.open_run(run_dir, chief=is_chief(strategy)) as run:
        run_plan = plan(model_or_name, data, epochs=epochs, batch_size=batch_size,
                        optimizer=optimizer, learning_rate=learning_rate, schedule=schedule,
                        loss=loss, seed=seed, model_kwargs=model_kwargs,
                        data_options=data_options, augment=augment, classes=classes,
                        strategy=strategy, deterministic=deterministic, jit_compile=jit_compile,
                        mixed_precision=mixed_precision, task=task, run_dir=run_dir,
                        overwrite=overwrite, **plan_options)
        with get_strategy(run_plan.strategy).scope():
            model = build_model(run_plan)
        run.claim(run_plan.config, resumed=run_plan.resumed)
        if run.chief:
            run_plan.record_split()
        fitted = fit(run_plan, model, run_dir=run_dir, callbacks=callbacks,
                     resume=run_plan.resumed, verbose=verbose, backup_freq=backup_freq)
        model, history, metrics = finish_run(run_plan, model, run, fitted=fitted, export=export)
    return TrainResult(model=model, run_dir=run_dir, history=history, metrics=metrics,
                       bundle=run_plan.bundle, spec=run_plan.spec, resumed=run_plan.resumed)


def evaluate(run_dir, data=None, *, batch_size=None):
    """Re-evaluate a finished run on its test split (or on `data`).

    Works for any run: registered models, a user's own `keras.Model`, a
    fine-tuned backbone (its spec is rebuilt from config.json).
    """

    batch_size = checks.positive_int("batch_size", batch_size, allow_none=True)
    config, model = load_run(run_dir)
    source = data or config.data
    if source == "<arrays>":
        raise ValueError(f"This run was trained on in-memory arrays; pass data= (CLI: --data) "
                         f"to evaluate it. Received: run_dir={run_dir!r}")
    spec = runs.spec_of(config)
    hooks = get_hooks(spec)
    bundle = load_data(spec, source, hooks=hooks,
                       batch_size=batch_size or config.recipe.get("batch_size", 32),
                       seed=config.seed, input_shape=tuple(config.input_shape),
                       classes=config.classes, options=config.data_options,
                       one_hot=config.loss == "categorical_crossentropy")
    _check_labels_fit_run(config, bundle, source)
    if source == config.data:
        check_split_manifest(run_dir, bundle.arrays, source=source, what="be evaluated")
    run_plan = Plan(spec=spec, hooks=hooks, recipe=Recipe(**{
        **config.recipe, "augment": tuple(config.recipe.get("augment", ()))}),
        bundle=bundle, config=config, model_kwargs=dict(config.model_kwargs), seed=config.seed)
    return evaluate_model(run_plan, model)


def _check_labels_fit_run(config, bundle, source):
    """Labels the run's classifier cannot predict are refused (no silent or failed evaluate)."""
    from zoo.data import describe_source
    if config.task != "classification" or not config.num_classes:
        return
    labels = [y for y in (bundle.arrays.y_train, bundle.arrays.y_val, bundle.arrays.y_test)
              if y is not None and len(y) and y.ndim == 1]
    if not labels:
        return
    highest = max(int(y.max()) for y in labels)
    if highest >= config.num_classes:
        raise ValueError(f"The data has labels up to {highest}, but the run's model predicts "
                         f"{config.num_classes} classes (labels 0 to {config.num_classes - 1}). "
                         f"Received: data={describe_source(source)!r}")


def print_summary(result, stream=None):
    stream = stream or sys.stdout  # at call time: the CLI's stdout may be replaced
    metrics = result.metrics
    acc = metrics.get("test_accuracy")
    parts = [f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)]
    print(f"run: {result.run_dir}", file=stream)
    print("test: " + ", ".join(parts), file=stream)
    if acc is not None:
        print(f"test accuracy: {acc:.4f}", file=stream)
    saved = os.path.join(result.run_dir, "saved_model")
    if os.path.isdir(saved):
        print(f"SavedModel: {saved}", file=stream)
