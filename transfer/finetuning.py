"""Fine-tuning a backbone through the training seam: phases of freeze plans.

    result = transfer.finetune("resnet20", "fashion_mnist", method="two_phase",
                               weights="runs/resnet20_fashion04", head_epochs=3, epochs=5)

The model is `inputs -> ImagePreprocessing -> backbone -> global average
pooling -> dropout -> Dense(num_classes)`.  Each phase sets a freeze plan
(which backbone stages train; BatchNorm layers always stay frozen), then
`zoo.training.build_model(run_plan, model=...)` recompiles it (Keras ignores a
change of `trainable` until the model is recompiled, in both directions) and
`zoo.training.fit` trains it with the shared callbacks: so early stopping and
the LR schedule restart per phase.  The result is an ordinary run directory,
held, claimed and finished as `zoo.train` does (`zoo.runs.open_run`,
`zoo.training.finish_run`).

Two Keras 3 traps handled here: calling the base with `training=False` does
not keep BatchNorm frozen once the base is unfrozen (keras-team/keras issue
20285), so every BatchNormalization layer gets `trainable=False`; and every
phase boundary recompiles.

Resume: after each phase the weights and `finetune_state.json` are written
atomically; an interrupted run resumes in the phase it was in (Keras's
BackupAndRestore restores the epoch within it).
"""

import dataclasses
import math
import numbers
import os
import shutil
from typing import Optional

from zoo import checks, runs
from zoo import io as zio
from zoo.registry import Recipe
from transfer import backbones

METHODS = ("feature_extraction", "two_phase", "gradual")
HEAD_INITS = ("probe", "random")
# The linear probe fits at most this many training examples' features: it only
# initialises the head (fine-tuning then sees every example), and a bound keeps
# the time before the first step flat in the dataset's size (issue 22: 10,000
# made a 32,000-image folder start 2.5x later than a 2,000-image one).
PROBE_MAX_EXAMPLES = 2_000
# Sources whose images have no size of their own: they are resized to what the
# backbone was designed for unless input_size says otherwise.
_RESIZED_SOURCES = ("folder", "tfrecord")
STATE_FILE = "finetune_state.json"
# A fine-tuning recipe (Adam, small batches) rather than the backbone's from-scratch one.
FINETUNE_RECIPE = Recipe(optimizer="adam", learning_rate=1e-3, batch_size=32, epochs=10,
                         early_stopping_patience=5)
_PLAN_OPTIONS = ("batch_size", "optimizer", "learning_rate", "schedule", "loss", "weight_decay",
                 "augment", "recipe", "seed", "data_options", "classes", "deterministic",
                 "jit_compile", "mixed_precision", "validation_split", "test_split",
                 "per_replica_batch", "scale_lr")


@dataclasses.dataclass
class FinetuneResult:
    """What `finetune` returns."""

    model: object
    run_dir: str
    history: dict
    metrics: dict
    phases: list
    resumed_phase: Optional[int]
    config: object


@dataclasses.dataclass
class Phase:
    name: str
    start: int
    end: int
    unfrozen: int  # backbone stages trained, counted from the top
    lr_scale: float

    def to_dict(self):
        return dataclasses.asdict(self)


def plan_phases(method, *, head_epochs, epochs, unfreeze, unfreeze_every, lr_factor):
    """The phases of a method: [Phase]; epochs are absolute (Keras's initial_epoch/epochs)."""
    if method == "feature_extraction":
        return [Phase("feature_extraction", 0, head_epochs + epochs, 0, 1.0)]
    phases = [Phase("head", 0, head_epochs, 0, 1.0)] if head_epochs else []
    if method == "two_phase":
        return phases + [Phase(f"unfreeze_{unfreeze}", head_epochs, head_epochs + epochs,
                               unfreeze, 1.0 / lr_factor)]
    every = unfreeze_every or max(1, epochs // unfreeze)
    start, k = head_epochs, 1
    while start < head_epochs + epochs:
        end = head_epochs + epochs if k == unfreeze else min(start + every, head_epochs + epochs)
        phases.append(Phase(f"unfreeze_{k}", start, end, k, 1.0 / lr_factor))
        start, k = end, min(k + 1, unfreeze)
    return phases


def stage_of_layers(backbone, stages):
    """{layer name: stage index} over the backbone's layers (stem in stage 0)."""
    ends = {name: i for i, name in enumerate(stages)}
    index, result = 0, {}
    for layer in backbone.layers:
        result[layer.name] = min(index, len(stages) - 1)
        if layer.name in ends:
            index = ends[layer.name] + 1
    return result


def set_freeze_plan(backbone, stages, unfrozen):
    """Train the top `unfrozen` stages of `backbone`; freeze the rest and every BatchNorm."""
    import keras
    # Every layer is set explicitly: assigning a model's `trainable` the value it
    # already has does not reach its sublayers (Keras 3.15), so "backbone.trainable
    # = True" would leave stages frozen by an earlier plan frozen (gradual: 1 -> 2).
    backbone.trainable = True
    stage = stage_of_layers(backbone, stages)
    first_trained = len(stages) - unfrozen
    for layer in backbone.layers:
        layer.trainable = not (stage[layer.name] < first_trained or isinstance(
            layer, keras.layers.BatchNormalization))
    if unfrozen == 0:
        backbone.trainable = False


def layer_decay_scales(model, backbone, stages, decay):
    """{variable path: decay ** (distance from the head in stages)} for the backbone's variables."""
    stage = stage_of_layers(backbone, stages)
    scales = {}
    for layer in backbone.layers:
        for variable in layer.weights:
            scales[variable.path] = decay ** (len(stages) - stage[layer.name])
    return scales


# What the tuner may search, with finetune's defaults first: unfreeze, the
# phase-2 learning-rate divisor and layer-wise decay (1.0 = none).
SPACE = {"unfreeze": ("all", "1", "2"), "lr_factor": (10.0, 3.0, 30.0, 100.0),
         "layer_decay": (1.0, 0.9, 0.75, 0.5)}


def finetune_space(hp, *, stages=None):
    """`finetune` keyword arguments drawn from a KerasTuner `HyperParameters`.

    The default point is `finetune`'s own defaults (unfreeze="all",
    lr_factor=10, layer_decay=None), so an untuned trial is the plain call.

    Args:
        hp: a `keras_tuner.HyperParameters` (only `Choice` is used).
        stages: the backbone's number of stages; `unfreeze` choices larger
            than it are left out. Defaults to None (all choices).

    Returns:
        {"unfreeze": "all" or int, "lr_factor": float, "layer_decay": float or None}.
    """
    stages = checks.positive_int("stages", stages, allow_none=True)
    unfreeze_choices = [u for u in SPACE["unfreeze"]
                        if u == "all" or stages is None or int(u) <= stages]
    unfreeze = hp.Choice("unfreeze", unfreeze_choices, default="all")
    lr_factor = hp.Choice("lr_factor", list(SPACE["lr_factor"]), default=10.0)
    decay = hp.Choice("layer_decay", list(SPACE["layer_decay"]), default=1.0)
    return {"unfreeze": unfreeze if unfreeze == "all" else int(unfreeze),
            "lr_factor": float(lr_factor), "layer_decay": None if decay == 1.0 else float(decay)}


def _check_unfreeze(unfreeze, stages):
    if unfreeze == "all":
        return len(stages)
    if isinstance(unfreeze, bool) or not isinstance(unfreeze, numbers.Integral) or unfreeze < 1:
        raise ValueError(f"unfreeze must be a positive number of stages or 'all'. "
                         f"Received: unfreeze={unfreeze!r}")
    if unfreeze > len(stages):
        raise ValueError(f"unfreeze is larger than the backbone's {len(stages)} stages "
                         f"({', '.join(stages)}). Received: unfreeze={unfreeze!r}")
    return int(unfreeze)


def _peek(data, *, classes, options, size, seed, validation_split, test_split):
    """(channels, height, num_classes) of the data, as `zoo.data.load` will see it."""
    from zoo import data as zdata
    from zoo.registry import custom_spec
    zdata.check_data_argument(data)
    # Indexed, not decoded, for a folder or TFRecords (zoo.images caches the pass).
    splits = zdata.source_splits(
        custom_spec("finetune_peek", task="classification",
                    input_shape=(size or 64, size or 64, 3)),
        data, input_shape=(size, size, 3) if size else None, options=options, seed=seed,
        validation_split=validation_split, test_split=test_split, classes=classes)
    shape = (tuple(splits.image_shape) if isinstance(splits, zdata.IndexSplits)
             else zdata.example_shape(splits.x_train))
    if len(shape) == 2:
        shape = shape + (1,)
    if len(shape) != 3:
        raise ValueError(f"Fine-tuning needs images (height, width, channels); the data has "
                         f"examples of shape {shape}. "
                         f"Received: data={zdata.describe_source(data)!r}")
    return shape[-1], shape[0], splits.num_classes


def assemble(backbone, *, input_shape, num_classes, preprocessing, dropout, name):
    """inputs -> ImagePreprocessing -> backbone -> avg pool -> dropout -> Dense(softmax)."""
    import keras

    from zoo.models.layers.transfer import ImagePreprocessing

    inputs = keras.Input(shape=input_shape, name="inputs")
    x = ImagePreprocessing(preprocessing, name="preprocess")(inputs)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def _history_best(run_dir, monitor, start, end):
    history = runs.read_history(os.path.join(run_dir, runs.HISTORY_FILE))
    values = [v for e, v in zip(history.get("epoch", []), history.get(monitor, []))
              if v is not None and e is not None and start <= e < end]
    return min(values) if values else math.inf


def _plot_phases(history, phases, path):
    """curves.png with a dashed line at each phase boundary."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    names = [k for k in history if k not in ("epoch", "learning_rate") and not k.startswith("val_")]
    if not names:
        return
    figure = Figure(figsize=(4.5 * len(names), 3.5))
    axes = figure.subplots(1, len(names), squeeze=False)
    epochs = [int(e) + 1 for e in history.get("epoch", range(len(history[names[0]])))]
    for ax, name in zip(axes[0], names):
        ax.plot(epochs, history[name], label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], label="validation")
        for phase in phases[1:]:
            ax.axvline(phase.start + 0.5, color="gray", linestyle="--", linewidth=1)
            ax.text(phase.start + 0.6, ax.get_ylim()[1], phase.name, fontsize=7, va="top")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.legend()
    figure.tight_layout()
    runs.atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=80), suffix=".png")


def finetune(backbone, data="digits", *, method="two_phase", weights=None, weights_sha256=None,
             unfreeze="all", head_epochs=3, epochs=5, lr_factor=10.0, layer_decay=None,
             unfreeze_every=None, in_channels="adapt", input_size=None, preprocessing=None,
             num_classes=None, dropout=0.2, head_init="probe", strategy=None, run_dir=None,
             overwrite=False, export=True, callbacks=None, verbose="auto", **plan_options):
    """Fine-tune a pretrained backbone with a new head; writes an ordinary run directory.

    Args:
        backbone: a registered backbone (`zoo list --backbones`), "keras:NAME"
            (keras.applications) or a finished zoo run directory.
        data: data source (see `zoo.data`). Defaults to "digits".
        method: "feature_extraction" (backbone frozen for all head_epochs +
            epochs), "two_phase" (head_epochs with the backbone frozen, then the
            top `unfreeze` stages train for `epochs` at the learning rate / lr_factor)
            or "gradual" (after the head phase, one more stage every
            `unfreeze_every` epochs, top down). Defaults to "two_phase".
        weights: None, "imagenet", a .h5 weights file or a finished run
            directory of the same architecture. Defaults to None.
        weights_sha256: expected sha256 of a weights file. Defaults to None.
        unfreeze: stages to unfreeze, or "all". Defaults to "all".
        head_epochs: epochs of the frozen (head) phase. Defaults to 3.
        epochs: epochs after the head phase. Defaults to 5.
        lr_factor: the learning rate is divided by this once stages train. Defaults to 10.
        layer_decay: scale each stage's update by layer_decay ** (stages from the
            head), e.g. 0.75; None for none. Defaults to None.
        unfreeze_every: epochs between unfreezing steps ("gradual"); None spreads
            `epochs` evenly. Defaults to None.
        in_channels: "adapt" the first convolution to the data's channels, or
            "tile" gray images to RGB in the pipeline. Defaults to "adapt".
        input_size: image height/width the backbone sees (the pipeline resizes);
            None: a run's own size; for a `folder:` or `tfrecord:` source
            (images of any size) the backbone's native size (224 for
            keras.applications, a zoo model's `input_shape`); else the
            data's (at least the backbone's minimum). Defaults to None.
        preprocessing: override of the input preprocessing ("none", "raw",
            "caffe", "tf", "torch"); None uses what the weights expect. Defaults to None.
        num_classes: classes of the new head; None takes the data's. Defaults to None.
        dropout: dropout before the new classifier. Defaults to 0.2.
        head_init: "probe" fits the new classifier to the frozen backbone's
            features of the training split (multinomial logistic regression,
            the "LP" of LP-FT) before any epoch; "random" leaves Keras's
            initialisation. Defaults to "probe".
        strategy: tf.distribute strategy name (see `zoo.distribute`). Defaults to None.
        run_dir: run directory. Defaults to "runs/<backbone>_finetuned".
        overwrite: replace an existing run directory. Defaults to False.
        export: export a SavedModel and model card. Defaults to True.
        callbacks: extra Keras callbacks for every phase. Defaults to None.
        verbose: Keras verbosity. Defaults to "auto".
        **plan_options: `zoo.training.plan` options (batch_size, optimizer,
            learning_rate, schedule, loss, weight_decay, augment, recipe, seed,
            data_options, classes, deterministic, jit_compile, mixed_precision,
            validation_split, test_split).

    Returns:
        A `FinetuneResult`.
    """
    # ---- validation, before TensorFlow
    settings = _check_settings(method=method, unfreeze=unfreeze, head_epochs=head_epochs,
                               epochs=epochs, lr_factor=lr_factor, layer_decay=layer_decay,
                               unfreeze_every=unfreeze_every, in_channels=in_channels,
                               input_size=input_size, dropout=dropout, head_init=head_init)
    source, channels, num_classes = _resolve(
        backbone, data, settings, weights=weights, weights_sha256=weights_sha256,
        preprocessing=preprocessing, num_classes=num_classes, strategy=strategy,
        plan_options=plan_options)
    short = os.path.basename(os.path.normpath(source.name)).replace("keras:", "").lower()
    run_dir = os.path.abspath(run_dir or os.path.join("runs", f"{short}_finetuned"))

    # ---- TensorFlow from here on
    from zoo.distribute import get_strategy, is_chief

    tf_strategy = get_strategy(strategy)
    # Under multi-worker the chief alone locks and writes the run directory
    # (its checkpoints, phase states, history, export), as zoo.train.
    with runs.open_run(run_dir, chief=is_chief(tf_strategy)) as run:
        session = _start(source, data, settings, run, channels=channels,
                         num_classes=num_classes, name=f"{short}_finetuned",
                         tf_strategy=tf_strategy, strategy=strategy, overwrite=overwrite,
                         plan_options=plan_options)
        for index, phase in enumerate(settings.phases):
            if index >= session.done_phases:
                session.train_phase(index, phase, callbacks=callbacks, verbose=verbose)
        if session.done_phases == len(settings.phases):
            # Killed after the last phase was recorded (evaluating or saving): the
            # loaded weights are final; compiled as the last phase left them.
            session.compile_phase(len(settings.phases) - 1, settings.phases[-1])
        return session.finish(export=export)


@dataclasses.dataclass
class FinetuneSettings:
    """finetune's own arguments, checked: config.json's "finetune" key.

    An interrupted fine-tuning resumes only with equal settings.
    """

    method: str
    unfreeze: object  # "all" or a number of stages, as passed
    head_epochs: int
    epochs: int
    lr_factor: float
    layer_decay: Optional[float]
    unfreeze_every: Optional[int]
    in_channels: str
    input_size: Optional[int]  # the size the backbone sees, once resolved
    dropout: float
    head_init: str
    phases: list = dataclasses.field(default_factory=list)

    def to_dict(self):
        return dataclasses.asdict(self)


def _check_settings(*, method, unfreeze, head_epochs, epochs, lr_factor, layer_decay,
                    unfreeze_every, in_channels, input_size, dropout, head_init):
    checks.choice("method", method, METHODS)
    checks.choice("in_channels", in_channels, backbones.IN_CHANNELS)
    checks.choice("head_init", head_init, HEAD_INITS)
    if layer_decay is not None:
        layer_decay = checks.fraction("layer_decay", layer_decay, low=0.0, high=1.0,
                                      include_high=True)
        if layer_decay == 0:
            raise ValueError("layer_decay must be in (0, 1]. Received: layer_decay=0")
    return FinetuneSettings(
        method=method, unfreeze=unfreeze,
        head_epochs=checks.non_negative_int("head_epochs", head_epochs),
        epochs=checks.positive_int("epochs", epochs),
        lr_factor=checks.positive_float("lr_factor", lr_factor), layer_decay=layer_decay,
        unfreeze_every=checks.positive_int("unfreeze_every", unfreeze_every, allow_none=True),
        in_channels=in_channels,
        input_size=checks.positive_int("input_size", input_size, allow_none=True),
        dropout=checks.fraction("dropout", dropout), head_init=head_init)


def _check_plan_options(strategy, plan_options):
    if strategy is not None and isinstance(strategy, str):
        from zoo.distribute import STRATEGIES
        checks.choice("strategy", strategy, STRATEGIES)
    unknown = sorted(set(plan_options) - set(_PLAN_OPTIONS))
    if unknown:
        raise TypeError(f"Unknown finetune argument(s) {unknown}. Allowed: "
                        f"{sorted(_PLAN_OPTIONS)} and finetune's own.")


def _resolve(backbone, data, settings, *, weights, weights_sha256, preprocessing, num_classes,
             strategy, plan_options):
    """The checked backbone source, the data's channels and the new head's classes.

    Also settles `settings.input_size` and `settings.phases`.
    """
    num_classes = checks.positive_int("num_classes", num_classes, allow_none=True)
    _check_plan_options(strategy, plan_options)
    source = backbones.resolve(backbone, weights=weights, weights_sha256=weights_sha256,
                        preprocessing=preprocessing)
    unfrozen = _check_unfreeze(settings.unfreeze, source.stages)
    channels, settings.input_size, num_classes = _image_geometry(
        source, data, settings, num_classes=num_classes, plan_options=plan_options)
    settings.phases = plan_phases(settings.method, head_epochs=settings.head_epochs,
                                  epochs=settings.epochs, unfreeze=unfrozen,
                                  unfreeze_every=settings.unfreeze_every,
                                  lr_factor=settings.lr_factor)
    return source, channels, num_classes


def _image_geometry(source, data, settings, *, num_classes, plan_options):
    """(the data's channels, the image size the backbone sees, the new head's classes)."""
    size = settings.input_size or source.default_size
    if size is None and isinstance(data, str) and data.partition(":")[0] in _RESIZED_SOURCES:
        size = max(source.native_size, source.min_size)
    if size is not None and size < source.min_size:
        raise ValueError(f"input_size is smaller than {source.name}'s minimum "
                         f"{source.min_size}x{source.min_size}. Received: input_size={size}")
    channels, data_size, data_classes = _peek(
        data, classes=plan_options.get("classes"), options=plan_options.get("data_options"),
        size=size, seed=plan_options.get("seed", 0),
        validation_split=plan_options.get("validation_split", 0.1),
        test_split=plan_options.get("test_split", 0.2))
    size = size or max(data_size, source.min_size)
    if num_classes is not None and data_classes and num_classes != data_classes:
        raise ValueError(f"The data has {data_classes} classes but num_classes={num_classes}; "
                         f"select classes with classes=(...) (--classes) or drop num_classes. "
                         f"Received: num_classes={num_classes}")
    if settings.in_channels == "tile" and channels not in (1, 3):
        raise ValueError(f"in_channels='tile' repeats a gray channel to RGB; the data has "
                         f"{channels} channels. Received: in_channels='tile'")
    return channels, size, num_classes or data_classes


def _start(source, data, settings, run, *, channels, num_classes, name, tf_strategy, strategy,
           overwrite, plan_options):
    """Build the model, plan the run, claim the directory: the `_Session` of the phases.

    An interrupted fine-tuning resumes at its phase (even between two
    phases, when Keras's backup of the finished phase is gone).
    """
    import keras

    from zoo import training

    seed = plan_options.get("seed", 0)
    size, in_channels = settings.input_size, settings.in_channels
    model_channels = 3 if in_channels == "tile" else channels
    keras.utils.set_random_seed(seed)
    with tf_strategy.scope():
        backbone_model, provenance = backbones.build(source, channels=channels, size=size,
                                              in_channels=in_channels)
        model = assemble(backbone_model, input_shape=(size, size, model_channels),
                         num_classes=num_classes, preprocessing=source.preprocessing,
                         dropout=settings.dropout, name=name)
    described = {**source.describe(), "input_shape": [size, size, model_channels],
                 "in_channels": in_channels}
    run_plan = training.plan(
        model, data, epochs=settings.head_epochs + settings.epochs, strategy=strategy,
        base_model=source.base_model, run_dir=run.run_dir, overwrite=overwrite,
        config_extra={"backbone": described, "weights": provenance,
                      "finetune": settings.to_dict()},
        **{"recipe": FINETUNE_RECIPE, **plan_options})
    state = None if overwrite else _interrupted_state(run.run_dir, settings)
    resumed = bool(run_plan.resumed or state)
    done = state["completed_phases"] if state else 0
    # Killed between two phases (or after the last): the finished phase removed
    # its backup, so the claim, which keeps the epochs a backup holds, would
    # empty history.csv; those epochs are the recorded phases' instead.
    between = bool(done) and runs.completed_epochs(run.run_dir) == 0
    epochs_done = settings.phases[done - 1].end if done else 0
    history_path = os.path.join(run.run_dir, runs.HISTORY_FILE)
    kept_history = (_read_text(history_path) if between and run.chief else None)
    run.claim(run_plan.config, resumed=resumed)
    if kept_history is not None:
        zio.write_text(history_path, kept_history, newline="")
        runs.trim_history(history_path, epochs_done)
    if run.chief:
        run_plan.record_split()
    if done:
        from zoo.callbacks import restore_seed_states
        model.load_weights(os.path.join(run.run_dir, state["weights"]))
        restore_seed_states(model, state.get("seed_generators"))
    if settings.head_init == "probe" and not resumed:
        run_plan.config.extra["head_probe"] = probe_head(model, run_plan, seed=seed)
        run.write_config(run_plan.config)
    return _Session(run=run, plan=run_plan, model=model, backbone=backbone_model,
                    stages=source.stages, strategy=tf_strategy, settings=settings,
                    resumed=resumed, done_phases=done)


def _read_text(path):
    """history.csv's text (None: absent), read as the run's other files are."""
    if not os.path.isfile(path) or os.path.islink(path):
        return None
    with zio.open_regular(path, newline="", max_bytes=runs.MAX_HISTORY_BYTES) as f:
        return f.read()


def _interrupted_state(run_dir, settings):
    """finetune_state.json of an interrupted fine-tuning with these settings (None: none)."""
    path = os.path.join(run_dir, STATE_FILE)
    if not os.path.exists(path) or runs.is_finished(run_dir):
        return None
    state = runs.read_json(path)
    if state.get("settings") != zio.json_safe(settings.to_dict()):
        raise runs.RunError(f"run_dir holds an interrupted fine-tuning with other settings "
                            f"({state.get('settings')}); resume it with the same arguments "
                            f"or pass overwrite=True. Received: run_dir={run_dir!r}")
    return state


@dataclasses.dataclass
class _Session:
    """One fine-tuning run between claiming its directory and finishing it."""

    run: runs.OpenRun
    plan: object  # the zoo.training.Plan
    model: object
    backbone: object
    stages: tuple
    strategy: object
    settings: FinetuneSettings
    resumed: bool
    done_phases: int  # phases an interrupted run had completed
    orders_used: int = 0  # training-data orders (iterators) this process has drawn

    @property
    def resumed_phase(self):
        return self.done_phases if self.resumed else None

    def compile_phase(self, index, phase):
        """Set the phase's freeze plan and recompile; returns the phase's recipe."""
        from zoo import training

        set_freeze_plan(self.backbone, self.stages, phase.unfrozen)
        recipe = self.plan.recipe.replace(
            learning_rate=self.plan.recipe.learning_rate * phase.lr_scale)
        with self.strategy.scope():
            training.build_model(self.plan, model=self.model, recipe=recipe,
                                 epochs=phase.end - phase.start)
            if self.settings.layer_decay is not None and phase.unfrozen:
                _scale_updates(self.model, layer_decay_scales(
                    self.model, self.backbone, self.stages, self.settings.layer_decay))
        return recipe

    def train_phase(self, index, phase, *, callbacks=None, verbose="auto"):
        """Set the phase's freeze plan, recompile, fit; the chief records the phase."""
        from zoo import training

        run_dir, monitor = self.run.run_dir, self.plan.hooks.monitor
        recipe = self.compile_phase(index, phase)
        # Keras's BackupAndRestore sets model._initial_epoch when it restores and
        # fit prefers it to its initial_epoch argument, and nothing resets it
        # (Keras 3.15): a phase after a resumed one would restart at the resumed
        # epoch (history 0,1,1,2,3).  Each phase starts where its plan says.
        self.model._initial_epoch = None
        self._align_data_order(index, phase)
        best = os.path.join(run_dir, "checkpoints", "best.keras")
        previous_best = os.path.join(run_dir, "checkpoints", "best_before_phase.keras")
        best_so_far = _history_best(run_dir, monitor, 0, phase.start) if monitor else math.inf
        if self.run.chief and index and os.path.exists(best):
            shutil.copyfile(best, previous_best)
        advanced = runs.completed_epochs(run_dir) if (self.resumed or index > 0) else 0
        fitted = training.fit(self.plan, self.model, run_dir=run_dir, epochs=phase.end,
                              initial_epoch=phase.start, resume=self.resumed or index > 0,
                              recipe=recipe, callbacks=callbacks, verbose=verbose)
        ran = len((getattr(fitted, "history", None) or {}).get("loss", []))
        self.orders_used += advanced + (ran + 1 if ran else 0)
        if not self.run.chief:
            return  # multi-worker: the chief alone writes the run directory
        # The best checkpoint is kept across phases: Keras's checkpoint starts
        # each fit afresh, so put the earlier best back if this phase did worse.
        if os.path.exists(previous_best):
            if _history_best(run_dir, monitor, phase.start, phase.end) > best_so_far:
                os.replace(previous_best, best)
            else:
                os.remove(previous_best)
        self._record_phase(index)

    def _align_data_order(self, index, phase):
        """Draw the training-data orders an uninterrupted run had drawn before this fit.

        The training pipeline reshuffles once per iterator, and Keras's fit
        draws one iterator per epoch plus one after its last epoch (Keras
        3.15; none when it runs no epoch).  `zoo.training.fit` replays the
        backup's completed epochs, which is all a single fit needs; the phases
        of one process also drew one extra order per earlier phase, and a run
        resumed between phases has no backup at all.  What the uninterrupted
        run drew comes from history.csv: each earlier phase's epochs plus one,
        then the epochs of this phase already done (the backup's).
        """
        run_dir = self.run.run_dir
        epochs = runs.read_history(os.path.join(run_dir, runs.HISTORY_FILE)).get("epoch", [])
        epochs = [int(e) for e in epochs]
        backed_up = runs.completed_epochs(run_dir)
        start = max(backed_up, phase.start)
        wanted = sum(n + 1 for n in (
            sum(1 for e in epochs if earlier.start <= e < earlier.end)
            for earlier in self.settings.phases[:index]) if n) + (start - phase.start)
        replayed = backed_up if (self.resumed or index > 0) else 0  # by training.fit
        for _ in range(max(0, wanted - self.orders_used - replayed)):
            iter(self.plan.bundle.train)
            self.orders_used += 1

    def finish(self, *, export=True):
        """Evaluate and save the run (`zoo.training.finish_run`), curves with phase lines."""
        from zoo import training

        run_dir = self.run.run_dir
        model, history, metrics = training.finish_run(self.plan, self.model, self.run,
                                                      export=export)
        if self.run.chief:
            _plot_phases(history, self.settings.phases, os.path.join(run_dir, "curves.png"))
        return FinetuneResult(model=model, run_dir=run_dir, history=history, metrics=metrics,
                              phases=self.settings.phases, resumed_phase=self.resumed_phase,
                              config=self.plan.config)

    def _record_phase(self, index):
        run_dir = self.run.run_dir
        weights_name = f"phase_{index + 1}.weights.h5"
        runs.atomic_write(os.path.join(run_dir, weights_name), self.model.save_weights,
                          suffix=".weights.h5")
        from zoo.callbacks import seed_states
        runs.write_json(os.path.join(run_dir, STATE_FILE), {
            "completed_phases": index + 1, "weights": weights_name,
            "settings": self.settings.to_dict(),
            # Dropout's random state, which weights files leave out: the next
            # phase of a run resumed here draws the uninterrupted run's masks.
            "seed_generators": seed_states(self.model)})
        # The phase is safely recorded: its backup (kept past fit for kill
        # safety) must not seed the next phase's optimizer or early stopping.
        # The last phase's stays, as zoo.train's does, until metrics.json is
        # written (`zoo.training.save_run`): a kill while the run is saved
        # then resumes instead of leaving "a trained model but no metrics.json".
        if index + 1 < len(self.settings.phases):
            shutil.rmtree(os.path.join(run_dir, runs.BACKUP_DIR), ignore_errors=True)
        earlier = os.path.join(run_dir, f"phase_{index}.weights.h5")
        if index and os.path.exists(earlier):
            os.remove(earlier)


def probe_head(model, run_plan, *, seed=0, max_examples=PROBE_MAX_EXAMPLES):
    """Set the new classifier to a logistic regression fitted on the frozen features.

    A randomly initialised head on a frozen backbone needs many optimizer
    steps before its gradients say anything useful to the backbone, and a
    small target dataset gives few steps per epoch: with 80 images (5 steps of
    16) a random head was still at chance after 8 epochs while a linear probe
    of the same features reached 78% (benchmarks/transfer_gain.py).  So the
    head starts where a linear probe ends (Kumar et al. 2022, "LP-FT"): one
    inference pass over the training split (no augmentation; at most
    `max_examples` examples) through the model up to its pooled features,
    then scikit-learn's L2-regularised multinomial logistic regression,
    whose weights are exactly a softmax Dense layer's.

    Returns:
        {"examples", "train_accuracy"} of the probe, or {"skipped": reason}.
    """
    import numpy as np
    import keras

    from zoo import data as zdata

    arrays = run_plan.bundle.arrays
    x, y = arrays.x_train, arrays.y_train
    if x is None or y is None or not len(x):
        return {"skipped": "no training arrays"}
    y = np.asarray(y)
    if y.ndim == 2:
        y = y.argmax(axis=1)
    y = y.astype("int64")
    head = model.get_layer("predictions")
    num_classes = head.units
    from zoo.distribute import uses_custom_loop
    if uses_custom_loop(model.distribute_strategy):
        # Keras 3's predict under these strategies is what fit cannot do either.
        return {"skipped": f"strategy {run_plan.config.strategy}"}
    if len(x) > max_examples:
        keep = np.sort(np.random.default_rng(seed).choice(len(x), max_examples, replace=False))
        x, y = x[keep], y[keep]
    present = np.unique(y)
    if len(present) < 2:
        return {"skipped": "fewer than 2 classes in the training split"}
    features = keras.Model(model.inputs, model.get_layer("avg_pool").output)
    if isinstance(arrays, zdata.IndexSplits):
        # A streamed source: x holds example ids; only these are decoded.
        chosen = dataclasses.replace(arrays, x_train=x, y_train=y.astype("int32"))
        dataset = zdata.index_pipeline(chosen, "train", batch_size=run_plan.bundle.batch_size,
                                       input_shape=tuple(model.input_shape[1:]))
        dataset = dataset.map(lambda inputs, _: inputs)
    else:
        dataset = zdata.pipeline(x, None, batch_size=run_plan.bundle.batch_size,
                                 input_shape=tuple(model.input_shape[1:]))
    feats = np.asarray(features.predict(dataset, verbose=0), dtype="float64")
    probe, mean, scale, converged = fit_probe(feats, y)
    kernel = np.zeros((feats.shape[1], num_classes), "float32")
    bias = np.full((num_classes,), -10.0, "float32")  # classes absent from the split
    if len(present) == 2:  # scikit-learn keeps one logit for two classes
        coef = np.stack([-probe.coef_[0] / 2, probe.coef_[0] / 2])
        intercept = np.array([-probe.intercept_[0] / 2, probe.intercept_[0] / 2])
    else:
        coef, intercept = probe.coef_, probe.intercept_
    # The probe saw standardized features: fold the scaling into the Dense layer.
    coef = coef / scale
    kernel[:, present] = coef.T
    bias[present] = intercept - coef @ mean
    head.set_weights([kernel, bias])
    return {"examples": int(len(x)), "converged": converged,
            "train_accuracy": round(float(probe.score((feats - mean) / scale, y)), 4)}


def fit_probe(features, y):
    """(scikit-learn's logistic regression, mean, scale, converged) on standardized features.

    Standardized because unscaled pooled features (magnitudes 0.02-2.6 apart
    for a ResNet-20) left L-BFGS unconverged after 1,000 iterations where
    standardized ones converge in ~140; one BLAS thread because on this
    small problem OpenBLAS's threads fight TensorFlow's pools: 0.6 s against
    10 s (and ~100 s inside a fine-tuning process) for 2,000 x 64 features.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale < 1e-12] = 1.0
    with threadpool_limits(1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        probe = LogisticRegression(max_iter=1000).fit((features - mean) / scale, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return probe, mean, scale, converged


def _scale_updates(model, scales):
    """Swap the compiled optimizer for one that scales each variable's update (layer decay)."""
    import keras

    from zoo.models.layers.transfer import with_update_scales

    optimizer = model.optimizer
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        model.optimizer = keras.optimizers.LossScaleOptimizer(
            with_update_scales(optimizer.inner_optimizer, scales))
    else:
        model.optimizer = with_update_scales(optimizer, scales)
