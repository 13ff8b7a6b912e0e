"""Argument checks shared by builders, data, training and export.

Every check raises before TensorFlow is reached, with a message in the Keras
style: what is wrong, then `Received: name=value`.
"""

import math
import numbers


def positive_int(name, value, *, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
    return int(value)


def non_negative_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer. Received: {name}={value!r}")
    return int(value)


def positive_float(name, value, *, allow_none=False):
    if value is None and allow_none:
        return None
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value <= 0):
        raise ValueError(f"{name} must be a positive finite number. Received: {name}={value!r}")
    return float(value)


def fraction(name, value, *, low=0.0, high=1.0, include_high=False):
    """A float in [low, high) (or [low, high] with include_high)."""
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real)
          and math.isfinite(value) and value >= low
          and (value <= high if include_high else value < high))
    if not ok:
        bracket = "]" if include_high else ")"
        raise ValueError(f"{name} must be a number in [{low}, {high}{bracket}. "
                         f"Received: {name}={value!r}")
    return float(value)


def non_negative_float(name, value):
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value < 0):
        raise ValueError(f"{name} must be a non-negative finite number. Received: {name}={value!r}")
    return float(value)


def choice(name, value, allowed):
    if value not in allowed:
        allowed_text = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {allowed_text}. Received: {name}={value!r}")
    return value


def shape(name, value, *, rank=None, min_shape=None, channels=None):
    """Validate a shape tuple of positive ints.

    Args:
        name: argument name used in the message.
        value: the shape (tuple or list; `None` entries are not allowed).
        rank: required length, or None.
        min_shape: smallest allowed size per dimension (None entries skip a
            dimension), or None.
        channels: required last dimension, or None.
    """
    if not isinstance(value, (tuple, list)) or not value or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in value):
        raise ValueError(f"{name} must be a non-empty tuple of positive integers. "
                         f"Received: {name}={value!r}")
    value = tuple(int(d) for d in value)
    if rank is not None and len(value) != rank:
        raise ValueError(f"{name} must have rank {rank}. Received: {name}={value!r}")
    if min_shape is not None:
        for got, least in zip(value, min_shape):
            if least is not None and got < least:
                raise ValueError(f"{name} is too small for this network: the minimum is "
                                 f"{tuple(min_shape)}. Received: {name}={value!r}")
    if channels is not None and value[-1] != channels:
        raise ValueError(f"{name} must have {channels} channels here. Received: {name}={value!r}")
    return value


# ------------------------------------------------------------------ builder arguments

# Limits on what a builder may be asked to allocate (float32 weights: 4 bytes
# a parameter), checked before any memory is taken.
MAX_PARAMS = 2 ** 31           # 8 GiB of weights
MAX_INPUT_ELEMENTS = 2 ** 28   # values in one example (1 GiB of float32)
MAX_LAYERS = 2000              # entries of a per-layer list, or a layer/block count
MAX_REGULARIZATION = 1.0       # l1, l2, weight_decay factors
# A layer or block count, by the builder argument's name.
_COUNT_WORDS = ("layers", "depth", "blocks", "stages", "repeats")
_REGULARIZERS = ("l1", "l2", "weight_decay")
# Builds whose integers all stay within these are small: no dry build needed.
_SMALL_INT, _SMALL_LIST, _SMALL_INPUT = 1024, 32, 2 ** 18


def _integers(value):
    """Every integer in `value` (nested lists and tuples included)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, numbers.Integral):
        return [int(value)]
    if isinstance(value, (list, tuple)):
        return [i for v in value for i in _integers(v)]
    return []


def builder_arguments(model, kwargs):
    """Refuse builder arguments that would allocate beyond memory or cannot name a layer.

    Checked for every model before its builder runs: per-layer lists of at
    most `MAX_LAYERS` entries, layer counts up to `MAX_LAYERS`, an input of at
    most `MAX_INPUT_ELEMENTS` values, regularization factors in [0, 1], a
    non-empty `name`.  The parameter count is
    checked by `build_within_limits`.

    Args:
        model: the model's name (for messages).
        kwargs: the builder keyword arguments.
    """
    for key, value in kwargs.items():
        received = f"Received: {key}={value!r:.200}"
        if isinstance(value, (list, tuple)) and len(value) > MAX_LAYERS:
            raise ValueError(f"{key} has {len(value)} entries; model '{model}' takes at most "
                             f"{MAX_LAYERS}. Received: {key} of length {len(value)}")
        if any(word in key for word in _COUNT_WORDS) and any(
                i > MAX_LAYERS for i in _integers(value)):
            raise ValueError(f"{key} may be at most {MAX_LAYERS} (a layer or block count). "
                             f"{received}")
        if key == "input_shape" and _integers(value) and isinstance(value, (list, tuple)):
            elements = 1
            for i in _integers(value):
                elements *= max(i, 1)
            if elements > MAX_INPUT_ELEMENTS:
                raise ValueError(f"input_shape holds {elements} values per example, more than "
                                 f"the limit of {MAX_INPUT_ELEMENTS}. {received}")
        if key in _REGULARIZERS and value is not None:
            fraction(key, value, high=MAX_REGULARIZATION, include_high=True)
        if key == "name" and (not isinstance(value, str) or not value.strip() or "/" in value):
            raise ValueError(f"name must be a non-empty string without '/'. {received}")


def _is_small(kwargs):
    for key, value in kwargs.items():
        if isinstance(value, (list, tuple)) and len(value) > _SMALL_LIST:
            return False
        integers = _integers(value)
        if key == "input_shape":
            elements = 1
            for i in integers:
                elements *= max(i, 1)
            if elements > _SMALL_INPUT:
                return False
        elif any(abs(i) > _SMALL_INT for i in integers) and "seed" not in key:
            return False
    return True


def count_parameters(builder, kwargs):
    """The parameter count of `builder(**kwargs)`, found without allocating the weights.

    The model is built in a Keras `StatelessScope` that defers every
    variable's initialization, so only shapes exist; the deferred variables
    are then dropped.  Returns None where a builder cannot be built that way.
    """
    import math

    import keras
    from keras.src.backend.common import global_state

    try:
        with keras.StatelessScope(initialize_variables=False):
            model = builder(**kwargs)
            return sum(math.prod(v.shape) for v in model.weights)
    except ValueError as err:
        if "stateless scope" in str(err):
            return None
        raise
    finally:
        global_state.set_global_attribute("uninitialized_variables", [])


def build_within_limits(model, builder, kwargs):
    """`builder(**kwargs)`, refused where its weights would exceed `MAX_PARAMS`.

    Large arguments get a dry build first (`count_parameters`); the refusal
    names the argument with the largest value.  A refusal of Keras's own that
    names no argument is given the arguments received.  A string where the
    builder's default is a list (`--arg hidden_units=abc`) is refused naming
    the argument and the list it takes (a string would be read letter by letter).
    """
    import inspect
    defaults = {n: p.default for n, p in inspect.signature(builder).parameters.items()}
    for key, value in kwargs.items():
        default = defaults.get(key)
        if isinstance(value, str) and isinstance(default, (list, tuple)) and default:
            kind = ("integers" if all(isinstance(v, int) for v in default) else
                    "numbers" if all(isinstance(v, numbers.Real) for v in default) else "values")
            raise ValueError(f"{key} takes a list of {kind} such as {list(default)} (or one of "
                            f"them), not a string. Received: {key}={value!r:.200}")
    if not _is_small(kwargs):
        params = count_parameters(builder, kwargs)
        if params is not None and params > MAX_PARAMS:
            key = max(kwargs, key=lambda k: max(_integers(kwargs[k]) or [0])
                      if "seed" not in k else 0)
            raise ValueError(f"model '{model}' would have {params:,} parameters "
                             f"({params * 4 / 2 ** 30:,.0f} GiB of float32 weights), more than "
                             f"the limit of {MAX_PARAMS:,}; use a smaller {key}. "
                             f"Received: {key}={kwargs[key]!r:.200}")
    try:
        return builder(**kwargs)
    except (TypeError, ValueError) as err:
        if "Received" in str(err) or not kwargs:
            raise
        # Name the argument(s) the message is about (Keras's "Could not
        # interpret activation function identifier: x" names only the value).
        named = [k for k, v in kwargs.items() if isinstance(v, str) and v in str(err)
                 or k in str(err)] or list(kwargs)
        shown = ", ".join(f"{k}={kwargs[k]!r:.60}" for k in named)
        raise type(err)(f"model '{model}' cannot be built with these arguments ({err}). "
                        f"Received: {shown}") from None
