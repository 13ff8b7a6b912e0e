"""The model registry: `ModelSpec`, `register`, `register_variant`, `list_models`, `get_spec`.

A builder is a plain function with keyword-only arguments returning an
uncompiled `keras.Model`; a variant of a family is data (`register_variant`:
the family's builder with its depth, block type, ... fixed).  Registering
records a `ModelSpec`; importing this module (and `zoo.models`, which
registers the families) never imports TensorFlow, so `zoo list` stays fast.
"""

import dataclasses
import difflib
import fnmatch
import inspect
from typing import Callable, Optional

from zoo import checks

TASKS = ("classification", "regression", "sequence", "autoencoder", "generative")
# What a model consumes: images (H, W, C), flat feature vectors, integer token
# ids, raw strings, or numeric windows (steps, features).
INPUT_KINDS = ("image", "vector", "tokens", "text", "timeseries")
# How training picks the model's input shape from the data: "resize" keeps the
# spec's spatial size and resizes/pads the data to it (channels follow the
# data); "data" builds the model for the data's own shape.
INPUT_POLICIES = ("resize", "data")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad", "adadelta")
LOSSES = ("mse", "mae", "binary_crossentropy", "categorical_crossentropy",
          "sparse_categorical_crossentropy")
SCHEDULES = ("constant", "step", "exponential", "cosine", "warmup_cosine", "one_cycle",
             "reduce_on_plateau")

_REGISTRY = {}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Default training recipe of a model (what `zoo train NAME` uses).

    Args:
        optimizer: one of `OPTIMIZERS`. Defaults to "adam".
        learning_rate: initial learning rate. Defaults to 1e-3.
        schedule: one of `SCHEDULES`. Defaults to "constant".
        loss: one of `LOSSES`, or None to derive it from the task and the
            number of classes. Defaults to None.
        batch_size: Defaults to 32.
        epochs: Defaults to 10.
        weight_decay: decoupled weight decay (AdamW/SGD `weight_decay`).
            Defaults to 0.
        momentum: momentum for "momentum"/"nesterov"/"rmsprop". Defaults to 0.9.
        label_smoothing: for categorical losses. Defaults to 0.
        augment: augmentation names applied to the training split. Defaults to ().
        early_stopping_patience: epochs without improvement before stopping,
            or None to disable. Defaults to 10.
        steps_per_execution: training steps per call into TensorFlow (Keras's
            `compile(steps_per_execution=...)`): a positive integer, or "auto"
            (`zoo.training.choose_steps_per_execution`). Defaults to "auto".
        ema_momentum: keep an exponential moving average of the weights
            (Keras optimizers' `use_ema=True, ema_momentum=...`), which
            validation, the checkpoints, evaluation and export use; None for
            none. Defaults to None.
        tta: test-time augmentation of image classifiers: the test accuracy is
            also measured on the average of the image's and its horizontal
            mirror's predictions (`test_tta_accuracy`). Defaults to False.
    """

    optimizer: str = "adam"
    learning_rate: float = 1e-3
    schedule: str = "constant"
    loss: Optional[str] = None
    batch_size: int = 32
    epochs: int = 10
    weight_decay: float = 0.0
    momentum: float = 0.9
    label_smoothing: float = 0.0
    augment: tuple = ()
    early_stopping_patience: Optional[int] = 10
    steps_per_execution: object = "auto"
    ema_momentum: Optional[float] = None
    tta: bool = False

    def __post_init__(self):
        checks.choice("optimizer", self.optimizer, OPTIMIZERS)
        checks.positive_float("learning_rate", self.learning_rate)
        checks.choice("schedule", self.schedule, SCHEDULES)
        if self.loss is not None:
            checks.choice("loss", self.loss, LOSSES)
        checks.positive_int("batch_size", self.batch_size)
        checks.positive_int("epochs", self.epochs)
        checks.non_negative_float("weight_decay", self.weight_decay)
        checks.fraction("momentum", self.momentum)
        checks.fraction("label_smoothing", self.label_smoothing)
        checks.positive_int("early_stopping_patience", self.early_stopping_patience,
                            allow_none=True)
        if self.steps_per_execution != "auto" and (
                isinstance(self.steps_per_execution, bool)
                or not isinstance(self.steps_per_execution, int)
                or self.steps_per_execution < 1):
            raise ValueError(f"steps_per_execution must be a positive integer or 'auto'. "
                             f"Received: steps_per_execution={self.steps_per_execution!r}")
        if self.ema_momentum is not None:
            checks.fraction("ema_momentum", self.ema_momentum)
            if not 0.0 < self.ema_momentum < 1.0:
                raise ValueError(f"ema_momentum must be between 0 and 1 (exclusive), e.g. "
                                 f"0.99. Received: ema_momentum={self.ema_momentum!r}")
        if not isinstance(self.tta, bool):
            raise TypeError(f"tta must be True or False. Received: tta={self.tta!r}")
        object.__setattr__(self, "augment", tuple(self.augment))

    def replace(self, **changes):
        """A copy with `changes` applied; `None` values leave a field as is."""
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"Unknown recipe fields {unknown}. Allowed: "
                             f"{[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["augment"] = list(self.augment)
        return d


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
    """Where a backbone's features are (timm's `feature_info`), declared next to `@register`.

    Args:
        stages: names of the layers that end each resolution stage, shallow to
            deep (the last one is the feature map a new head pools).
        reductions: total stride of each stage output, same length as `stages`.
        first_conv: name of the stem convolution (adapted to other channel counts).
        classifier: name of the layer `include_top=True` ends with. Defaults to "predictions".
        imagenet: the `keras.applications` model whose published ImageNet
            weights load into this architecture unchanged, or None. Defaults to None.
        imagenet_preprocessing: the `preprocess_input` mode those weights expect
            ("caffe", "tf", "torch"; "raw": [0, 255], the model normalises itself).
            Defaults to None.
    """

    stages: tuple
    reductions: tuple
    first_conv: str
    classifier: str = "predictions"
    imagenet: Optional[str] = None
    imagenet_preprocessing: Optional[str] = None

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(self.stages))
        object.__setattr__(self, "reductions", tuple(self.reductions))
        if not self.stages or len(self.stages) != len(self.reductions):
            raise ValueError(f"stages and reductions must be non-empty and of equal length. "
                             f"Received: stages={self.stages!r}, reductions={self.reductions!r}")
        if self.imagenet_preprocessing not in (None, "raw", "caffe", "tf", "torch"):
            raise ValueError(f"imagenet_preprocessing must be None, 'raw', 'caffe', 'tf' or "
                             f"'torch'. Received: imagenet_preprocessing="
                             f"{self.imagenet_preprocessing!r}")

    def stage_outputs(self, model):
        """[(layer name, KerasTensor)] of each stage of a model built from this spec.

        Use them as multi-scale features:
        `keras.Model(model.input, [t for _, t in info.stage_outputs(model)])`.
        """
        names = {layer.name for layer in model.layers}
        missing = [n for n in self.stages if n not in names]
        if missing:
            raise ValueError(f"Model {model.name!r} lacks the stage layers {missing}; it was "
                             f"not built by this spec's builder.")
        return [(n, model.get_layer(n).output) for n in self.stages]

    def to_dict(self):
        return {"stages": list(self.stages), "reductions": list(self.reductions),
                "first_conv": self.first_conv, "classifier": self.classifier,
                "imagenet": self.imagenet, "imagenet_preprocessing": self.imagenet_preprocessing}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything the package knows about one registered model.

    `num_params` is the parameter count of `build(name)` with default
    arguments (the reference a schema test recomputes); `params_note` says
    which published variant that number is for.
    """

    name: str
    builder: Callable
    family: str
    task: str
    description: str
    input_shape: tuple
    min_input_shape: Optional[tuple]
    test_input_shape: tuple
    input_kind: str = "image"
    input_policy: str = "resize"
    input_dtype: str = "float32"
    paper: str = ""
    num_params: Optional[int] = None
    params_note: str = ""
    recipe: Recipe = Recipe()
    search_space: Optional[Callable] = None
    exportable: bool = True
    trainable: bool = True
    backbone: bool = False
    hooks: Optional[str] = None
    test_kwargs: dict = dataclasses.field(default_factory=dict)
    features: Optional[FeatureInfo] = None

    @property
    def arguments(self):
        """Builder keyword arguments and their defaults ({} for an unregistered model)."""
        if self.builder is None:
            return {}
        return {n: p.default for n, p in inspect.signature(self.builder).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def build(self, **kwargs):
        """Build an uncompiled model; unknown arguments raise `ValueError`."""
        params = inspect.signature(self.builder).parameters
        takes_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        if not takes_var_kw:
            unknown = sorted(set(kwargs) - set(self.arguments))
            if unknown:
                raise ValueError(
                    f"Unknown argument(s) {unknown} for model '{self.name}'. "
                    f"Allowed: {sorted(self.arguments)}")
        checks.builder_arguments(self.name, kwargs)
        return checks.build_within_limits(self.name, self.builder, kwargs)

    def space_point(self, hp):
        """(builder kwargs, recipe overrides) of the spec's search space at `hp`.

        A spec without a space gives ({}, {}); an `hp` with no values set
        (`keras_tuner.HyperParameters()`) gives the space's default point.
        """
        if self.search_space is None:
            return {}, {}
        point = dict(self.search_space(hp))
        recipe = dict(point.pop("recipe", None) or {})
        unknown = sorted(set(recipe) - {f.name for f in dataclasses.fields(Recipe)})
        if unknown:
            raise ValueError(f"Search space of '{self.name}' sets unknown recipe fields "
                             f"{unknown}. Allowed: {[f.name for f in dataclasses.fields(Recipe)]}")
        return point, recipe

    def load_hooks(self):
        """The object named by `hooks` ("module:attribute"), or None."""
        if not self.hooks:
            return None
        import importlib
        module, _, attr = self.hooks.partition(":")
        return getattr(importlib.import_module(module), attr)

    def to_dict(self):
        """JSON-ready metadata (no callables)."""
        args = {k: (v if isinstance(v, (int, float, str, bool, type(None), tuple, list)) else repr(v))
                for k, v in self.arguments.items()}
        return {
            "name": self.name,
            "family": self.family,
            "task": self.task,
            "description": self.description,
            "input_shape": list(self.input_shape),
            "min_input_shape": list(self.min_input_shape) if self.min_input_shape else None,
            "test_input_shape": list(self.test_input_shape),
            "input_kind": self.input_kind,
            "input_policy": self.input_policy,
            "input_dtype": self.input_dtype,
            "paper": self.paper,
            "num_params": self.num_params,
            "params_note": self.params_note,
            "recipe": self.recipe.to_dict(),
            "has_search_space": self.search_space is not None,
            "exportable": self.exportable,
            "trainable": self.trainable,
            "backbone": self.backbone,
            "features": self.features.to_dict() if self.features else None,
            "arguments": args,
        }


def _check_keyword_only(builder, model_name):
    positional = [p.name for p in inspect.signature(builder).parameters.values()
                  if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    if positional:
        raise TypeError(f"Builder '{model_name}' must take keyword-only arguments; "
                        f"positional: {positional}")


def _default_input_shape(builder, input_shape, test_input_shape):
    """`input_shape`, else the builder's own `input_shape` default, else `test_input_shape`."""
    params = inspect.signature(builder).parameters
    if input_shape is None and "input_shape" in params:
        input_shape = params["input_shape"].default
    if input_shape is None or input_shape is inspect.Parameter.empty:
        input_shape = test_input_shape
    return tuple(input_shape)


def register(*, family, task, test_input_shape, input_shape=None, min_input_shape=None,
             input_kind="image", input_policy="resize", input_dtype="float32", paper="",
             num_params=None, params_note="", recipe=None, search_space=None,
             exportable=True, trainable=True, backbone=False, hooks=None, test_kwargs=None,
             features=None, name=None):
    """Decorator that records a builder in the registry and returns it unchanged.

    Args:
        family: model family, e.g. "resnet".
        task: one of `TASKS`.
        test_input_shape: a tiny input shape the tests build with.
        input_shape: default input shape; defaults to the builder's own
            `input_shape` default.
        min_input_shape: smallest input the architecture accepts. Defaults to None.
        input_kind: one of `INPUT_KINDS`. Defaults to "image".
        input_policy: one of `INPUT_POLICIES`. Defaults to "resize".
        input_dtype: dtype of the model input. Defaults to "float32".
        paper: reference. Defaults to "".
        num_params: parameter count with default arguments. Defaults to None.
        params_note: which variant `num_params` is for. Defaults to "".
        recipe: a `Recipe`. Defaults to `Recipe()`.
        search_space: function of a KerasTuner `hp` returning builder kwargs,
            every value with a default equal to the registered model's (so
            the space's default point is the model `zoo train NAME` trains).
            The returned dict may also hold a "recipe" entry: a dict of
            `Recipe` fields (learning_rate, optimizer, batch_size,
            weight_decay, ...) that the space tunes, with the recipe's values
            as defaults. See `ModelSpec.space_point`. Defaults to None.
        exportable / trainable / backbone: capability flags; a backbone must
            declare `features`.
        hooks: "module:attribute" of an object with optional training,
            evaluation and export hooks (see `zoo.training`). Defaults to None.
        features: a `FeatureInfo` (stage outputs, first convolution,
            classifier, ImageNet weights); giving it makes the model a backbone.
            Defaults to None.
        test_kwargs: builder kwargs the registry-driven tests use (small
            sizes). Defaults to {}.
        name: registry name; defaults to the function's name.
    """
    checks.choice("task", task, TASKS)
    checks.choice("input_kind", input_kind, INPUT_KINDS)
    checks.choice("input_policy", input_policy, INPUT_POLICIES)
    if features is not None and not isinstance(features, FeatureInfo):
        raise TypeError(f"features must be a zoo.registry.FeatureInfo. "
                        f"Received: {type(features).__name__}")
    if backbone and features is None:
        raise TypeError("A backbone must declare its features (features=FeatureInfo(...)).")
    backbone = backbone or features is not None

    def decorator(fn):
        model_name = name or fn.__name__
        if model_name in _REGISTRY:
            raise ValueError(f"A model named '{model_name}' is already registered "
                             f"(by {_REGISTRY[model_name].builder.__module__}).")
        _check_keyword_only(fn, model_name)
        doc = inspect.getdoc(fn) or ""
        _REGISTRY[model_name] = ModelSpec(
            name=model_name, builder=fn, family=family, task=task,
            description=doc.splitlines()[0] if doc else "",
            input_shape=_default_input_shape(fn, input_shape, test_input_shape),
            min_input_shape=tuple(min_input_shape) if min_input_shape else None,
            test_input_shape=tuple(test_input_shape), input_kind=input_kind,
            input_policy=input_policy, input_dtype=input_dtype, paper=paper,
            num_params=num_params, params_note=params_note, recipe=recipe or Recipe(),
            search_space=search_space, exportable=exportable, trainable=trainable,
            backbone=backbone, hooks=hooks, test_kwargs=dict(test_kwargs or {}),
            features=features)
        return fn

    return decorator


class Variant:
    """A registered model declared as data: a family builder with some arguments fixed.

    Calling it calls `base(**model_args, **kwargs)`.  Its signature
    (`inspect.signature`, which the registry, the CLI's `--arg` and the
    tuning search read) is the base's keyword-only arguments less the fixed
    `model_args`, with `defaults` as the new defaults; `doc` is its own
    docstring.  Make one with `register_variant`.
    """

    def __init__(self, name, base, *, model_args, defaults, doc):
        params = inspect.signature(base).parameters
        unknown = sorted((set(model_args) | set(defaults)) - set(params))
        if unknown:
            raise TypeError(f"Variant '{name}': {base.__qualname__} takes no argument(s) "
                            f"{unknown}. Allowed: {list(params)}")
        arguments = [p.replace(default=defaults.get(n, p.default)) for n, p in params.items()
                     if n not in model_args]
        missing = [p.name for p in arguments if p.kind is not inspect.Parameter.KEYWORD_ONLY
                   or p.default is inspect.Parameter.empty]
        if missing:
            raise TypeError(f"Variant '{name}': give {missing} a value in model_args (fixed) "
                            f"or defaults; the variant's arguments are keyword-only with defaults.")
        self.base = base
        self.model_args = dict(model_args)
        self.__name__ = self.__qualname__ = name
        self.__module__ = base.__module__
        self.__doc__ = doc
        self.__signature__ = inspect.Signature(arguments)

    def __call__(self, **kwargs):
        bound = self.__signature__.bind(**kwargs)
        bound.apply_defaults()
        return self.base(**self.model_args, **bound.arguments)

    def __repr__(self):
        fixed = ", ".join(f"{k}={v!r}" for k, v in self.model_args.items())
        return f"<variant {self.__name__}: {self.base.__qualname__}({fixed}, ...)>"


def register_variant(name, base, *, model_args=None, defaults=None, doc, **spec_fields):
    """Register `name` as `base` with `model_args` fixed (timm's `model_args`); returns it.

    Args:
        name: registry name.
        base: the family's builder, a function of keyword-only arguments.
        model_args: `base` arguments the variant fixes (depth, block type,
            ...); they are not arguments of the variant. Defaults to {}.
        defaults: new defaults of `base` arguments the variant keeps (its
            model `name`, input size, ...). Defaults to {}.
        doc: the variant's docstring; its first line is the spec's description.
        **spec_fields: as `register`.
    """
    variant = Variant(name, base, model_args=model_args or {}, defaults=defaults or {}, doc=doc)
    return register(name=name, **spec_fields)(variant)


def list_models(pattern="*", family=None, task=None):
    """Sorted names of registered models matching a glob and filters.

    Args:
        pattern: glob over names, e.g. "resnet*". Defaults to "*".
        family: keep only this family. Defaults to None.
        task: keep only this task (one of `TASKS`). Defaults to None.
    """
    if task is not None:
        checks.choice("task", task, TASKS)
    if family is not None:
        families = sorted({s.family for s in _REGISTRY.values()})
        checks.choice("family", family, families)
    return sorted(n for n, s in _REGISTRY.items()
                  if fnmatch.fnmatchcase(n, pattern)
                  and (family is None or s.family == family)
                  and (task is None or s.task == task))


def get_spec(name):
    """The `ModelSpec` of `name`; unknown names raise `ValueError` with close matches."""
    if not isinstance(name, str):
        raise TypeError(f"Model name must be a string. Received: name={name!r}")
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown model name. Received: name={name!r}.{hint} "
                         f"`zoo list` shows all {len(_REGISTRY)} models.")
    return _REGISTRY[name]


def backbone_info(name):
    """The `FeatureInfo` of backbone `name`; other names raise `ValueError` listing the backbones."""
    spec = get_spec(name)
    if spec.features is None:
        backbones = [n for n in list_models() if _REGISTRY[n].features is not None]
        raise ValueError(f"Model {name!r} is not a backbone. Backbones: {', '.join(backbones)}. "
                         f"Received: name={name!r}")
    return spec.features


def custom_spec(name, *, input_shape, task="classification", input_kind=None, base=None):
    """A spec for a model that is not registered (a user's `keras.Model`, a fine-tuned backbone).

    Args:
        name: the model's name.
        input_shape: its per-example input shape.
        task: "classification", "regression" or "autoencoder". Defaults to "classification".
        input_kind: one of `INPUT_KINDS`; None infers "image" for rank 3, else
            "vector". Defaults to None.
        base: the registered spec it derives from, if any (its recipe is kept).
            Defaults to None.
    """
    checks.choice("task", task, ("classification", "regression", "autoencoder"))
    shape = tuple(input_shape)
    kind = input_kind or ("image" if len(shape) == 3 else "vector")
    checks.choice("input_kind", kind, INPUT_KINDS)
    return ModelSpec(name=name, builder=None, family="custom", task=task,
                     description=f"derived from {base.name}" if base else "user model",
                     input_shape=shape, min_input_shape=None, test_input_shape=shape,
                     input_kind=kind, input_policy="resize" if kind == "image" else "data",
                     recipe=base.recipe if base else Recipe(), backbone=False)


def build(name, /, **kwargs):
    """Build the registered model `name` (uncompiled) with builder kwargs."""
    return get_spec(name).build(**kwargs)
