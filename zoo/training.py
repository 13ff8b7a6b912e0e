"""Compile recipe + fit + evaluate -> a run directory.

    result = zoo.train("lenet5", data="digits", epochs=10)
    result.metrics["test_accuracy"], result.run_dir

A run directory holds everything later steps need:

    config.json history.csv metrics.json curves.png model.keras
    checkpoints/best.keras backup/ (only while interrupted) logs/
    saved_model/ model_card.json (from `zoo.export.export_run`)

Arguments are validated before TensorFlow is imported, so a typo costs
milliseconds, and nothing already in a run directory is overwritten unless
`overwrite=True`.
"""

import dataclasses
import inspect
import json
import os
import shutil
import sys
import time

from zoo import checks
from zoo.registry import LOSSES, OPTIMIZERS, SCHEDULES, ModelSpec, Recipe, get_spec

RUN_FILES = ("config.json", "history.csv", "metrics.json", "model.keras")


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


# ------------------------------------------------------------------ file helpers


def write_json(path, obj):
    """Write JSON atomically (temporary file, then rename)."""
    temporary = f"{path}.partial"
    with open(temporary, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    os.replace(temporary, path)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_history(path):
    """history.csv as {column: [floats]} (empty dict if absent)."""
    import csv
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    history = {}
    for row in rows:
        for key, value in row.items():
            history.setdefault(key, []).append(float(value) if value not in ("", None) else None)
    return history


def plot_curves(history, path):
    """Loss and metric curves (train vs validation) as a PNG, written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in history if k not in ("epoch", "learning_rate")
             and not k.startswith("val_")]
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    epochs = [int(e) + 1 for e in history.get("epoch", range(len(history[names[0]])))]
    for ax, name in zip(axes[0], names):
        ax.plot(epochs, history[name], label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.legend()
    fig.tight_layout()
    temporary = f"{path}.partial.png"
    fig.savefig(temporary, dpi=80)
    plt.close(fig)
    os.replace(temporary, path)


def save_model_atomic(model, path):
    temporary = path[:-len(".keras")] + ".partial.keras"
    model.save(temporary)
    os.replace(temporary, path)


# --------------------------------------------------------------- compile recipe


def make_optimizer(name, learning_rate, *, momentum=0.9, weight_decay=0.0):
    """A Keras optimizer by name (see `OPTIMIZERS`)."""
    import keras
    checks.choice("optimizer", name, OPTIMIZERS)
    wd = weight_decay or None
    opt = keras.optimizers
    if name == "sgd":
        return opt.SGD(learning_rate, weight_decay=wd)
    if name in ("momentum", "nesterov"):
        return opt.SGD(learning_rate, momentum=momentum, nesterov=name == "nesterov",
                       weight_decay=wd)
    if name == "adam":
        return opt.Adam(learning_rate, weight_decay=wd)
    if name == "adamw":
        return opt.AdamW(learning_rate, weight_decay=weight_decay or 0.004)
    if name == "rmsprop":
        return opt.RMSprop(learning_rate, weight_decay=wd)
    if name == "adagrad":
        return opt.Adagrad(learning_rate, weight_decay=wd)
    return opt.Adadelta(learning_rate, weight_decay=wd)


def _output_width(model):
    shape = model.outputs[0].shape if getattr(model, "outputs", None) else None
    return shape[-1] if shape is not None and len(shape) >= 2 else None


def _outputs_logits(model):
    import keras
    last = model.layers[-1] if model.layers else None
    activation = getattr(last, "activation", None)
    return activation is keras.activations.linear


def default_loss(spec, model):
    """The loss a spec trains with when neither recipe nor caller names one."""
    if spec.recipe.loss:
        return spec.recipe.loss
    if spec.task == "classification":
        return "binary_crossentropy" if _output_width(model) == 1 else \
            "sparse_categorical_crossentropy"
    if spec.task == "sequence":
        return "sparse_categorical_crossentropy"
    if spec.task in ("regression", "autoencoder"):
        return "mse"
    return None


def make_loss_and_metrics(name, *, model, label_smoothing=0.0):
    """Keras loss object and metrics for a loss name."""
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


def compile_model(model, spec, recipe=None, *, steps_per_epoch=1, epochs=None, loss=None,
                  jit_compile=False):
    """Compile `model` with the spec's recipe (optimizer, schedule, loss, metrics).

    Args:
        model: an uncompiled Keras model built from `spec`.
        spec: its `ModelSpec`.
        recipe: a `Recipe` overriding `spec.recipe`. Defaults to None.
        steps_per_epoch: used to size the LR schedule. Defaults to 1.
        epochs: used to size the LR schedule; defaults to the recipe's.
        loss: loss name overriding the recipe's. Defaults to None.
        jit_compile: XLA compilation. Defaults to False.
    """
    from zoo.callbacks import make_schedule
    from zoo.hooks import get_hooks

    recipe = recipe or spec.recipe
    total_steps = max(1, int(steps_per_epoch) * int(epochs or recipe.epochs))
    lr = make_schedule(recipe.schedule, recipe.learning_rate, total_steps=total_steps)
    optimizer = make_optimizer(recipe.optimizer, lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    loss_name = loss or recipe.loss or default_loss(spec, model)
    loss_obj, metrics = make_loss_and_metrics(loss_name, model=model,
                                              label_smoothing=recipe.label_smoothing)
    get_hooks(spec).compile(model, optimizer=optimizer, loss=loss_obj, metrics=metrics,
                            recipe=recipe, jit_compile=jit_compile)
    return model


# ------------------------------------------------------------------- run dirs


def _is_complete(run_dir):
    return os.path.exists(os.path.join(run_dir, "metrics.json"))


def check_run_dir(run_dir, config, *, overwrite=False):
    """Whether `run_dir` resumes an interrupted run; raises where it may not be used.

    An interrupted run (config.json and backup/ but no metrics.json) with the
    same configuration resumes; anything else already there is refused unless
    `overwrite=True`. Changes nothing on disk (see `claim_run_dir`).
    """
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ValueError(f"run_dir exists and is not a directory. Received: run_dir={run_dir!r}")
    if not os.path.isdir(run_dir) or not os.listdir(run_dir) or overwrite:
        return False
    config_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(config_path):
        raise ValueError(f"run_dir is not empty and holds no run (no config.json); pass "
                         f"overwrite=True (--overwrite) to replace it. Received: "
                         f"run_dir={run_dir!r}")
    if _is_complete(run_dir):
        raise ValueError(f"run_dir already holds a finished run; pass overwrite=True "
                         f"(--overwrite) to replace it or choose another run_dir. Received: "
                         f"run_dir={run_dir!r}")
    previous = read_json(config_path)
    keys = ("model", "data", "model_kwargs", "recipe", "seed", "data_options", "classes")
    changed = [k for k in keys if previous.get(k) != config.get(k)]
    if changed:
        raise ValueError(f"run_dir holds an interrupted run with a different configuration "
                         f"({', '.join(changed)} differ); resume it with the same arguments, "
                         f"or pass overwrite=True. Received: run_dir={run_dir!r}")
    return os.path.isdir(os.path.join(run_dir, "backup"))


def claim_run_dir(run_dir, *, resumed):
    """Create `run_dir`, emptying it first unless resuming (`check_run_dir` allowed it)."""
    if not resumed and os.path.isdir(run_dir) and os.listdir(run_dir):
        shutil.rmtree(run_dir)
    os.makedirs(run_dir, exist_ok=True)


# ------------------------------------------------------------------- training


def _custom_spec(model, task):
    checks.choice("task", task, ("classification", "regression", "autoencoder"))
    shape = tuple(model.inputs[0].shape[1:])
    return ModelSpec(name=model.name, builder=None, family="custom", task=task,
                     description="user model", input_shape=shape, min_input_shape=None,
                     test_input_shape=shape, input_kind="image" if len(shape) == 3 else "vector",
                     input_policy="data")


def _builder_kwargs(spec, bundle, model_kwargs):
    params = inspect.signature(spec.builder).parameters
    kwargs = dict(model_kwargs)
    if "input_shape" in params:
        kwargs.setdefault("input_shape", tuple(bundle.input_shape))
    if "num_classes" in params and bundle.num_classes:
        kwargs.setdefault("num_classes", bundle.num_classes)
    # Sizes only the data knows (e.g. a forecaster's horizon and number of targets).
    for key, value in bundle.extras.get("builder_kwargs", {}).items():
        if key in params:
            kwargs.setdefault(key, value)
    return kwargs


def _check_head(spec, model, num_classes):
    if spec.task != "classification" or not num_classes:
        return
    width = _output_width(model)
    if width == 1 and num_classes > 2:
        raise ValueError(f"Model '{spec.name}' has one sigmoid output (binary), but the data has "
                         f"{num_classes} classes. Select two with classes=(a, b) "
                         f"(CLI: --classes a,b).")
    if width not in (None, 1) and width != num_classes:
        raise ValueError(f"Model '{spec.name}' predicts {width} classes but the data has "
                         f"{num_classes}. Received: num_classes={width}")


def _on_gpu():
    import tensorflow as tf
    return bool(tf.config.list_physical_devices("GPU"))


def train(model_or_name, data="digits", *, epochs=None, batch_size=None, optimizer=None,
          learning_rate=None, schedule=None, loss=None, seed=0, run_dir=None, strategy=None,
          overwrite=False, model_kwargs=None, data_options=None, augment=None, classes=None,
          deterministic=False, jit_compile=None, mixed_precision=None, task="classification",
          callbacks=None, backup_freq="epoch", export=True, verbose="auto"):
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
        data_options: source options for the family (text_column, ...). Defaults to None.
        augment: augmentation names overriding the recipe's. Defaults to None.
        classes: keep only these labels. Defaults to None.
        deterministic: enable TensorFlow op determinism. Defaults to False.
        jit_compile: XLA; None means on with a GPU, off on CPU. Defaults to None.
        mixed_precision: float16 compute; None means on with a GPU. Defaults to None.
        task: task of a plain `keras.Model`. Defaults to "classification".
        callbacks: extra Keras callbacks. Defaults to None.
        backup_freq: BackupAndRestore frequency ("epoch" or batches). Defaults to "epoch".
        export: export a SavedModel and model card into the run directory. Defaults to True.
        verbose: Keras verbosity. Defaults to "auto".
    """
    # ---- validation, before TensorFlow is imported
    user_model = None
    if isinstance(model_or_name, str):
        spec = get_spec(model_or_name)
    elif hasattr(model_or_name, "fit") and hasattr(model_or_name, "inputs"):
        user_model = model_or_name
        spec = _custom_spec(user_model, task)
    else:
        raise TypeError(f"model_or_name must be a registered name or a keras.Model. "
                        f"Received: {type(model_or_name).__name__}")
    if not spec.trainable:
        raise ValueError(f"Model '{spec.name}' is not trainable with `zoo.train`.")
    recipe = spec.recipe.replace(
        epochs=checks.positive_int("epochs", epochs, allow_none=True),
        batch_size=checks.positive_int("batch_size", batch_size, allow_none=True),
        optimizer=optimizer and checks.choice("optimizer", optimizer, OPTIMIZERS),
        learning_rate=checks.positive_float("learning_rate", learning_rate, allow_none=True),
        schedule=schedule and checks.choice("schedule", schedule, SCHEDULES),
        loss=loss and checks.choice("loss", loss, LOSSES),
        augment=tuple(augment) if augment is not None else None)
    checks.non_negative_int("seed", seed)
    model_kwargs = dict(model_kwargs or {})
    if user_model is None:
        unknown = sorted(set(model_kwargs) - set(spec.arguments))
        if unknown:
            raise ValueError(f"Unknown model argument(s) {unknown} for '{spec.name}'. "
                             f"Allowed: {sorted(spec.arguments)}")
    run_dir = os.path.abspath(run_dir or os.path.join("runs", spec.name))
    config = {
        "model": spec.name, "data": data if isinstance(data, str) else "<arrays>",
        "model_kwargs": {k: list(v) if isinstance(v, tuple) else v
                         for k, v in model_kwargs.items()},
        "recipe": recipe.to_dict(), "seed": seed, "data_options": dict(data_options or {}),
        "classes": list(classes) if classes is not None else None,
        "strategy": strategy if isinstance(strategy, (str, type(None))) else repr(strategy),
        "deterministic": bool(deterministic),
    }
    if strategy is not None and isinstance(strategy, str):
        from zoo.distribute import STRATEGIES
        checks.choice("strategy", strategy, STRATEGIES)
    # Refuse an occupied run_dir now, but touch it only once data, model and
    # compile have succeeded: a bad argument found later never costs a run.
    resumed = check_run_dir(run_dir, config, overwrite=overwrite)

    # ---- TensorFlow from here on
    import keras

    from zoo import data as zdata
    from zoo.callbacks import standard_callbacks
    from zoo.distribute import get_strategy
    from zoo.hooks import get_hooks

    keras.utils.set_random_seed(seed)
    if deterministic:
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()
    on_gpu = _on_gpu()
    jit_compile = on_gpu if jit_compile is None else bool(jit_compile)
    mixed_precision = on_gpu if mixed_precision is None else bool(mixed_precision)
    hooks = get_hooks(spec)
    one_hot = (loss or recipe.loss) == "categorical_crossentropy"
    bundle = zdata.load(spec, data, batch_size=recipe.batch_size, seed=seed,
                        input_shape=model_kwargs.get("input_shape") or (
                            tuple(user_model.inputs[0].shape[1:]) if user_model else None),
                        augment=recipe.augment, classes=classes, options=data_options,
                        one_hot=one_hot)
    loss_name = loss or recipe.loss
    if bundle.one_hot_labels and loss_name in (None, "sparse_categorical_crossentropy"):
        loss_name = "categorical_crossentropy"  # e.g. MixUp/CutMix soft labels

    dist = get_strategy(strategy)
    previous_policy = keras.config.dtype_policy().name
    if mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        with dist.scope():
            if user_model is not None:
                model = user_model
            else:
                model = spec.build(**_builder_kwargs(spec, bundle, model_kwargs))
            _check_head(spec, model, bundle.num_classes)
            model = hooks.wrap_model(model, bundle)
            steps = -(-bundle.num_examples["train"] // recipe.batch_size)
            compile_model(model, spec, recipe, steps_per_epoch=steps, loss=loss_name,
                          jit_compile=jit_compile)
    finally:
        keras.config.set_dtype_policy(previous_policy)

    config.update({"input_shape": list(bundle.input_shape), "num_classes": bundle.num_classes,
                   "class_names": bundle.class_names, "loss": loss_name,
                   "num_examples": bundle.num_examples, "jit_compile": jit_compile,
                   "mixed_precision": mixed_precision, "task": spec.task,
                   "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    claim_run_dir(run_dir, resumed=resumed)
    write_json(os.path.join(run_dir, "config.json"), config)

    cbs = standard_callbacks(run_dir, monitor=hooks.monitor,
                             patience=recipe.early_stopping_patience,
                             schedule=recipe.schedule, backup_freq=backup_freq, resume=resumed)
    cbs += hooks.callbacks(model, bundle, run_dir) + list(callbacks or [])
    # The training pipeline shuffles itself (seeded), so fit must not.
    model.fit(bundle.train, validation_data=bundle.validation, epochs=recipe.epochs,
              callbacks=cbs, verbose=verbose, shuffle=False)

    metrics = evaluate_model(model, spec, bundle)
    history = read_history(os.path.join(run_dir, "history.csv"))
    metrics["epochs_run"] = len(history.get("epoch", []))
    write_json(os.path.join(run_dir, "metrics.json"), metrics)
    save_model_atomic(model, os.path.join(run_dir, "model.keras"))
    plot_curves(history, os.path.join(run_dir, "curves.png"))
    result = TrainResult(model=model, run_dir=run_dir, history=history, metrics=metrics,
                         bundle=bundle, spec=spec, resumed=resumed)
    if export and spec.exportable:
        from zoo.export import export_run
        export_run(run_dir, model=model, bundle=bundle, overwrite=True)
    return result


def evaluate_model(model, spec, bundle):
    """Test-split metrics, prefixed "test_", plus the family's own metrics."""
    from zoo.hooks import get_hooks
    metrics = {}
    if model.compiled_loss is not None or getattr(model, "loss", None) is not None:
        values = model.evaluate(bundle.test, verbose=0, return_dict=True)
        metrics = {f"test_{k}": float(v) for k, v in values.items()}
    metrics.update({k: (float(v) if isinstance(v, (int, float)) else v)
                    for k, v in get_hooks(spec).evaluate(model, bundle).items()})
    return metrics


def load_run(run_dir):
    """(config, keras model) of a finished run directory."""
    import keras
    run_dir = os.path.abspath(run_dir)
    path = os.path.join(run_dir, "model.keras")
    if not os.path.exists(path):
        raise ValueError(f"run_dir holds no finished run (no model.keras). "
                         f"Received: run_dir={run_dir!r}")
    config = read_json(os.path.join(run_dir, "config.json"))
    from zoo.hooks import get_hooks
    from zoo.registry import list_models
    # Importing the families (and their hooks modules, e.g. zoo.text) registers
    # their custom Keras objects; a user's own model has none.
    if config["model"] in list_models():
        get_hooks(get_spec(config["model"]))
    return config, keras.saving.load_model(path)


def evaluate(run_dir, data=None, *, batch_size=None):
    """Re-evaluate a finished run on its test split (or on `data`)."""
    from zoo import data as zdata
    config, model = load_run(run_dir)
    spec = get_spec(config["model"])
    bundle = zdata.load(spec, data or config["data"],
                        batch_size=batch_size or config["recipe"]["batch_size"],
                        seed=config["seed"], input_shape=tuple(config["input_shape"]),
                        classes=config.get("classes"), options=config.get("data_options"),
                        one_hot=config.get("loss") == "categorical_crossentropy")
    return evaluate_model(model, spec, bundle)


def print_summary(result, stream=sys.stdout):
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
