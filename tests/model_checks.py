"""The standard checks every registered model passes (used by test_models.py)."""

import numpy as np


def example_batch(spec, model, n, rng):
    """(x, y) for one training step; y is None for unsupervised models."""
    from zoo.tasks import get_hooks
    custom = get_hooks(spec).example_batch(spec, model, n, rng)
    if custom is not None:
        return custom
    shape = (n, *spec.test_input_shape)
    if spec.input_dtype.startswith("int"):
        vocab = spec.test_kwargs.get("vocab_size", 10)
        x = rng.integers(0, vocab, size=shape).astype(spec.input_dtype)
    else:
        x = rng.random(shape).astype("float32")
    out_shape = tuple(model.outputs[0].shape[1:])
    if spec.task == "classification":
        width = out_shape[-1]
        y = (rng.integers(0, 2, size=(n, 1)).astype("float32") if width == 1
             else rng.integers(0, width, size=(n,)).astype("int32"))
    elif spec.task == "regression":
        y = rng.normal(size=(n, *out_shape)).astype("float32")
    elif spec.task == "sequence":
        y = rng.integers(0, out_shape[-1], size=(n, *out_shape[:-1])).astype("int32")
    elif spec.task == "autoencoder":
        y = x
    else:
        y = None
    return x, y


def as_list(outputs):
    if isinstance(outputs, dict):
        return [np.asarray(outputs[k]) for k in sorted(outputs)]
    if isinstance(outputs, (list, tuple)):
        return [np.asarray(o) for o in outputs]
    return [np.asarray(outputs)]


def assert_same_outputs(expected, actual, atol=1e-5):
    """Two lists of output arrays are equally long and equal within `atol`."""
    assert len(expected) == len(actual), (len(expected), len(actual))
    for i, (a, b) in enumerate(zip(expected, actual)):
        np.testing.assert_allclose(a, b, atol=atol, rtol=atol, err_msg=f"output {i}")


def random_feed(input_signature, rng, batch=2):
    """Random inputs matching a SavedModel endpoint's input signature."""
    feeds = []
    for spec in input_signature:
        shape = [batch if d is None else d for d in spec.shape]
        dtype = spec.dtype if isinstance(spec.dtype, str) else spec.dtype.name
        if dtype == "string":
            feeds.append(np.array(["a b c"] * batch).reshape(shape))
        elif dtype.startswith("int"):
            feeds.append(np.zeros(shape, dtype))
        else:
            feeds.append(rng.random(shape).astype(dtype))
    return feeds


# Up to this many recorded parameters a model gets the expensive checks
# (weights written and reloaded, a step per freeze plan); above it, only the
# smallest model of its family does: the larger members (vgg13..vgg19_bn,
# resnet34..resnet152: 20-140M parameters even at the test shape) are their
# family's smaller builder with more of the same blocks.
FULL_CHECK_PARAMS = 12_000_000


def fully_checked(name, names):
    """Whether `name` is at most FULL_CHECK_PARAMS or the smallest of its family in `names`."""
    import zoo
    spec = zoo.get_spec(name)
    family = [zoo.get_spec(n) for n in names if zoo.get_spec(n).family == spec.family]
    smallest = min(family, key=lambda s: (s.num_params or 0, s.name))
    return (spec.num_params or 0) <= FULL_CHECK_PARAMS or spec.name == smallest.name
