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
