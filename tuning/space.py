"""Search spaces: the shared training space, and user overrides (`space=` / `--space FILE`).

A trial's configuration has two parts:

* the spec's own space (`ModelSpec.search_space`, owned by each model
  family): builder kwargs and, optionally, recipe fields;
* the shared training space declared here, whose every default is the
  recipe's value: `learning_rate` (log scale, a decade either side of the
  recipe's), `optimizer`, `schedule` (constant, cosine, one_cycle,
  reduce_on_plateau), `weight_decay`, `batch_size`, `ema` (an exponential
  moving average of the weights, on/off; not for generative models), for
  classifiers `label_smoothing` (0 or 0.1), for image classifiers `erasing`
  (random erasing on/off) and, for a recipe with other augmentation,
  `augment` (those on/off).  A name the spec's space already declares (e.g.
  the CNNs' `weight_decay` builder argument) is not declared twice.

Overrides map hyperparameter names to

* a value: `hp.Fixed` (e.g. `{"units": 64}`);
* a list: a `Choice` among those values (each must be allowed);
* a dict with `min`/`max` (and optionally `step`, `sampling`, `default`):
  a narrower numeric range.

Every override is checked against the declared space before any trial runs.
Importing this module does not import TensorFlow.
"""

import math
import numbers
import os

from zoo import io as zio

# Optimizers the training space chooses among (with the recipe's own).
OPTIMIZER_CHOICES = ("adam", "adamw", "rmsprop", "nesterov")
WEIGHT_DECAYS = (0.0, 1e-5, 1e-4, 1e-3)
SCHEDULE_CHOICES = ("constant", "cosine", "one_cycle", "reduce_on_plateau")
LABEL_SMOOTHINGS = (0.0, 0.1)
# The momentum of an `ema` trial whose recipe keeps no average (Keras's default:
# an average over ~100 steps, short enough for a trial of a few epochs).
EMA_MOMENTUM = 0.99
RANGE_KEYS = ("min", "max", "step", "sampling", "default")


class SpaceError(ValueError):
    """A search space or an override of it is not usable."""


def _unique(values):
    out = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def _round_sig(x, digits=3):
    return float(f"{x:.{digits}g}")


def learning_rates(lr):
    """Five log-spaced rates, a decade either side of `lr` (grid search's choices)."""
    return sorted({_round_sig(lr * f) for f in (0.1, 0.3, 3.0, 10.0)} | {float(lr)})


def declare_training_space(hp, recipe, *, skip=(), grid=False, monitor="val_loss",
                           task="classification", input_kind=None):
    """Declare the shared training hyperparameters on `hp`; return recipe overrides.

    Args:
        hp: a `keras_tuner.HyperParameters`.
        recipe: the plan's `Recipe` (every default is its value).
        skip: names not to declare (the spec's space has them, or the recipe
            fields they set). Defaults to ().
        grid: declare a discrete learning-rate set instead of a log range.
            Defaults to False.
        monitor: the task's monitored quantity; None drops "reduce_on_plateau".
            Defaults to "val_loss".
        task: the model's task; "classification" adds `label_smoothing`,
            "generative" leaves out `ema`. Defaults to "classification".
        input_kind: the model's input kind; an "image" classifier adds
            `erasing`. Defaults to None.

    Returns:
        dict of `Recipe` field -> value at `hp`'s current values.
    """
    out = {}
    skip = set(skip)
    lr = float(recipe.learning_rate)
    if "learning_rate" not in skip:
        if grid:
            out["learning_rate"] = hp.Choice("learning_rate", learning_rates(lr), default=lr)
        else:
            out["learning_rate"] = hp.Float("learning_rate", lr / 10, lr * 10, sampling="log",
                                            default=lr)
    if "optimizer" not in skip:
        out["optimizer"] = hp.Choice("optimizer", _unique([recipe.optimizer, *OPTIMIZER_CHOICES]),
                                     default=recipe.optimizer)
    if "schedule" not in skip:
        schedules = [s for s in SCHEDULE_CHOICES if monitor or s != "reduce_on_plateau"]
        out["schedule"] = hp.Choice("schedule", _unique([recipe.schedule, *schedules]),
                                    default=recipe.schedule)
    if "weight_decay" not in skip:
        wd = float(recipe.weight_decay)
        out["weight_decay"] = hp.Choice("weight_decay", sorted({*WEIGHT_DECAYS, wd}), default=wd)
    if "batch_size" not in skip:
        bs = int(recipe.batch_size)
        out["batch_size"] = hp.Choice("batch_size", sorted({max(1, bs // 2), bs, bs * 2}),
                                      default=bs)
    if task == "classification" and "label_smoothing" not in skip:
        ls = float(recipe.label_smoothing)
        out["label_smoothing"] = hp.Choice("label_smoothing", sorted({*LABEL_SMOOTHINGS, ls}),
                                           default=ls)
    # A GAN's two optimizers would average weights that no step swaps in.
    if task != "generative" and not skip & {"ema", "ema_momentum"}:
        ema = hp.Boolean("ema", default=recipe.ema_momentum is not None)
        out["ema_momentum"] = (recipe.ema_momentum or EMA_MOMENTUM) if ema else None
    if "augment" not in skip:
        out["augment"] = _augment(hp, recipe, erasing=task == "classification"
                                  and input_kind == "image" and "erasing" not in skip)
    return out


def _augment(hp, recipe, *, erasing):
    """The trial's augmentation: the recipe's own (`augment`) and random erasing, each on/off.

    Both on gives the recipe's list as it is (erasing where the recipe has it,
    else last: after the crop and flip it is meant to follow).
    """
    names = tuple(recipe.augment)
    others = tuple(n for n in names if n != "erasing")
    keep_others = hp.Boolean("augment", default=True) if others else True
    with_erasing = "erasing" in names
    if erasing:
        with_erasing = hp.Boolean("erasing", default=with_erasing)
    if not with_erasing:
        names = others
    elif "erasing" not in names:
        names = (*names, "erasing")
    return names if keep_others else tuple(n for n in names if n == "erasing")


# ------------------------------------------------------------------ overrides


class Overrides(dict):
    """Checked overrides; `source` is the file they were read from (None: given as a dict)."""

    source = None


SAMPLINGS = ("linear", "log", "reverse_log")


def _where(source, name=None):
    """The start of an error message: which file and which entry."""
    if source is None:
        return "" if name is None else f"Search space entry '{name}': "
    return f"Search space file {source}" + ("" if name is None else f", entry '{name}'") + ": "


def load_space_file(path):
    """The overrides in a JSON file (an object of name -> value / list / range), checked."""
    try:  # a regular file of at most 10 MB (no FIFO, device or deep nesting): zoo.io
        overrides = zio.read_json(path, follow=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"Search space file not found: {path}") from None
    except ValueError as err:
        raise SpaceError(f"Search space file cannot be used: {err}") from None
    if not isinstance(overrides, dict):
        raise SpaceError(f"A search space file holds a JSON object of hyperparameter name -> "
                         f"value, list of values, or {{\"min\": .., \"max\": ..}}: {path}")
    return _check_entries(overrides, source=path)


def _number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_entry(name, value):
    """Why the override `name: value` cannot be used (None: its shape is fine)."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(RANGE_KEYS))
        missing = [key for key in ("min", "max") if key not in value]
        if unknown or missing:
            what = (f"unknown key(s) {unknown}" if unknown else
                    f"no {' and no '.join(repr(k) for k in missing)}")
            return (f"a range needs 'min' and 'max' (optionally "
                    f"{', '.join(RANGE_KEYS[2:])}); this one has {what}. Received: {value!r}")
        for key in ("min", "max", "default"):
            if key in value and not _number(value[key]):
                return f"{key} must be a finite number. Received: {value!r}"
        if value["min"] > value["max"]:
            return f"min is greater than max. Received: {value!r}"
        step = value.get("step")
        if step is not None and not (_number(step) and step > 0):
            return f"step must be a positive number (or null). Received: {value!r}"
        lo, hi = value["min"], value["max"]
        if step is not None and hi > lo and (
                lo * step > hi if value.get("sampling") in ("log", "reverse_log") and lo > 0
                else lo + step > hi):
            return (f"step leaves only min in the range (the next value would pass max). "
                    f"Received: {value!r}")
        if value.get("sampling", "linear") not in SAMPLINGS:
            return (f"sampling must be one of {', '.join(SAMPLINGS)}. "
                    f"Received: {value!r}")
    elif isinstance(value, (list, tuple)):
        if not value:
            return "the list of choices is empty; give at least one value."
        bad = [v for v in value
               if not (v is None or isinstance(v, (str, bool)) or _number(v))]
        if bad:
            return (f"choices must be numbers, strings or bools. Received: {bad[0]!r} "
                    f"in {value!r}")
    elif not (value is None or isinstance(value, (str, bool)) or _number(value)):
        return (f"a value must be a number, string, bool, list or range. "
                f"Received: {value!r}")
    return None


def _check_entries(overrides, source=None):
    out = Overrides()
    out.source = source
    for name, value in overrides.items():
        if not isinstance(name, str) or not name:
            raise SpaceError(f"{_where(source)}names must be non-empty strings. "
                             f"Received: {name!r}")
        problem = _check_entry(name, value)
        if problem:
            raise SpaceError(f"{_where(source, name)}{problem}")
        out[name] = value
    return out


def check_overrides(overrides):
    """Shape-check `space=` (a dict or a JSON file path) before anything else.

    Every entry is checked here, before the first trial: a range needs finite
    `min` <= `max`, a positive `step`, a known `sampling`; a list of choices is
    not empty.  Names are checked against the model's space later
    (`apply_overrides`), whose errors name the file too.
    """
    if overrides is None:
        return Overrides()
    if isinstance(overrides, (str, os.PathLike)):
        return load_space_file(os.fspath(overrides))
    if not isinstance(overrides, dict):
        raise TypeError(f"space must be a dict of hyperparameter name -> value, list or range "
                        f"(or a JSON file path). Received: {type(overrides).__name__}")
    return _check_entries(overrides)


def _describe(hp):
    kind = type(hp).__name__
    if kind == "Choice":
        return f"one of {list(hp.values)}"
    if kind == "Boolean":
        return "True or False"
    if kind == "Fixed":
        return f"fixed at {hp.value!r}"
    # 12 significant digits: a bound computed as lr / 10 reads 0.0003, not
    # 0.00030000000000000003.
    def number(v):
        return str(v) if isinstance(v, numbers.Integral) else f"{v:.12g}"
    return f"in [{number(hp.min_value)}, {number(hp.max_value)}]"


def _allowed(hp, value):
    """Whether `value` is a value `hp` can take."""
    import keras_tuner as kt
    if isinstance(hp, kt.engine.hyperparameters.Fixed):
        return value == hp.value
    if isinstance(hp, kt.engine.hyperparameters.Boolean):
        return isinstance(value, bool)
    if isinstance(hp, kt.engine.hyperparameters.Choice):
        return any(value == v and type(value) is type(v) or (
            isinstance(v, numbers.Real) and isinstance(value, numbers.Real)
            and not isinstance(value, bool) and math.isclose(value, v, rel_tol=1e-9))
            for v in hp.values)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    if isinstance(hp, kt.engine.hyperparameters.Int) and int(value) != value:
        return False
    lo, hi = hp.min_value, hp.max_value
    return lo - 1e-12 * abs(lo) <= value <= hi + 1e-12 * abs(hi)


def _canonical(hp, value):
    """`value` as `hp` stores it (e.g. the Choice's own float for 1e-3)."""
    import keras_tuner as kt
    if isinstance(hp, kt.engine.hyperparameters.Choice):
        for v in hp.values:
            if v == value or (isinstance(v, numbers.Real) and isinstance(value, numbers.Real)
                              and math.isclose(v, value, rel_tol=1e-9)):
                return v
    if isinstance(hp, kt.engine.hyperparameters.Int):
        return int(value)
    if isinstance(hp, kt.engine.hyperparameters.Float):
        return float(value)
    return value


def apply_overrides(space, overrides, source=None):
    """A `HyperParameters` pre-registering `overrides` over the declared `space`.

    Args:
        space: a `HyperParameters` with the full declared space (defaults).
        overrides: checked dict (see `check_overrides`).
        source: the file the overrides came from, named in errors. Defaults to None.

    Returns:
        `keras_tuner.HyperParameters` holding only the overridden entries,
        for the oracle's `hyperparameters=`: the hypermodel's own
        declarations of those names then return these values.

    Raises:
        SpaceError: an unknown name, or a value outside the declared range.
    """
    try:
        return _apply_overrides(space, overrides)
    except SpaceError as err:
        if source is None:
            raise
        text = str(err)
        text = text[len("Search space "):] if text.startswith("Search space ") else text
        raise SpaceError(f"{_where(source)}{text}") from None


def _apply_overrides(space, overrides):
    import keras_tuner as kt

    declared = {hp.name: hp for hp in space.space}
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise SpaceError(f"Search space override(s) {unknown} name no hyperparameter of this "
                         f"model. Its hyperparameters: {sorted(declared)}")
    out = kt.HyperParameters()
    for name, value in overrides.items():
        hp = declared[name]
        if isinstance(value, dict):
            if type(hp).__name__ not in ("Int", "Float"):
                raise SpaceError(f"'{name}' is {_describe(hp)}: give a value or a list, not a "
                                 f"range.")
            lo, hi = value["min"], value["max"]
            for bound in (lo, hi):
                if not _allowed(hp, bound):
                    raise SpaceError(f"Range for '{name}' must lie {_describe(hp)}. "
                                     f"Received: {value!r}")
            if lo > hi:
                raise SpaceError(f"Range for '{name}' has min > max. Received: {value!r}")
            step = value.get("step", hp.step)
            sampling = value.get("sampling", hp.sampling)
            default = value.get("default", hp.default if lo <= hp.default <= hi else lo)
            if not lo <= default <= hi:
                raise SpaceError(f"Default for '{name}' must lie in [{lo}, {hi}]. "
                                 f"Received: {default!r}")
            try:
                if type(hp).__name__ == "Int":
                    out.Int(name, int(lo), int(hi), step=step, sampling=sampling,
                            default=int(default))
                else:
                    out.Float(name, float(lo), float(hi), step=step, sampling=sampling,
                              default=float(default))
            except ValueError as err:
                raise SpaceError(f"Range for '{name}' is not valid: {err}") from None
        elif isinstance(value, (list, tuple)):
            bad = [v for v in value if not _allowed(hp, v)]
            if bad:
                raise SpaceError(f"Value(s) {bad} for '{name}' are outside its range: it is "
                                 f"{_describe(hp)}.")
            values = _unique([_canonical(hp, v) for v in value])
            default = hp.default if any(hp.default == v for v in values) else values[0]
            if len(values) == 1:
                out.Fixed(name, values[0])
            else:
                out.Choice(name, values, default=default)
        else:
            if not _allowed(hp, value):
                raise SpaceError(f"Value {value!r} for '{name}' is outside its range: it is "
                                 f"{_describe(hp)}.")
            out.Fixed(name, _canonical(hp, value))
    return out


def merged_space(space, fixed):
    """`space` with the entries of `fixed` (an overrides `HyperParameters`) replacing its own."""
    import keras_tuner as kt
    out = kt.HyperParameters()
    replaced = {hp.name: hp for hp in fixed.space}
    for hp in space.space:
        out._register(replaced.get(hp.name, hp))
    return out


def continuous(space):
    """Names of hyperparameters grid search cannot enumerate (no step)."""
    names = []
    for hp in space.space:
        kind = type(hp).__name__
        if kind == "Float" and hp.step is None:
            names.append(hp.name)
        elif kind == "Int" and hp.step is None and hp.sampling != "linear":
            names.append(hp.name)
    return names


def describe_space(space):
    """JSON-ready description of a space (for search.json and the fingerprint)."""
    rows = []
    for hp in space.space:
        config = hp.get_config()
        config.pop("conditions", None)
        rows.append({"name": hp.name, "type": type(hp).__name__,
                     **{k: (list(v) if isinstance(v, tuple) else v)
                        for k, v in config.items() if k != "name"}})
    return rows


def grid_size(space):
    """Number of points grid search enumerates (None when a range is continuous)."""
    total = 1
    for hp in space.space:
        kind = type(hp).__name__
        if kind == "Fixed":
            continue
        if kind in ("Float", "Int") and hp.step is None and (
                kind == "Float" or hp.sampling != "linear"):
            return None
        total *= len(list(hp.values))
    return total
