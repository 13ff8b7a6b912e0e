"""Registry-driven checks: every registered model, the moment it is registered.

For each model at its tiny test shape: build, finite forward pass, one
training step with its own compile recipe (compile only beyond 300 layers);
then, for each model up to 12M parameters and the smallest of every family
(up to 300 layers), `.keras` round trip with equal outputs and SavedModel
export whose endpoints reload and (for the default endpoint) reproduce the
Keras outputs. Plus a schema test over every spec.
"""

import numpy as np
import pytest

import zoo
from model_checks import (as_list, assert_same_outputs, example_batch, fully_checked,
                          random_feed)

NAMES = zoo.list_models()
# Writing and reloading the weights of the larger members of a family costs
# 10-30 s each and checks no other code (`fully_checked`); tests/test_reload.py
# saves, reloads and exports every layer class in a fresh process.
ROUND_TRIP = [n for n in NAMES if fully_checked(n, NAMES)]
# Deeper than this: the family's shallower members (resnet18, resnet20) already
# trace the training step and export the same blocks.
DEEP_LAYERS = 100
VERY_DEEP_LAYERS = 300


@pytest.mark.parametrize("name", NAMES)
def test_model_contract(name, tmp_path, rng):
    import keras
    import tensorflow as tf

    from zoo.export import default_signature, export_saved_model, input_names
    from zoo.tasks import get_hooks
    from zoo.training import compile_model

    spec = zoo.get_spec(name)
    hooks = get_hooks(spec)
    keras.utils.set_random_seed(0)
    model = spec.build(input_shape=spec.test_input_shape, **spec.test_kwargs)
    assert isinstance(model, keras.Model)
    assert not model.compiled, "builders must return uncompiled models"

    x, y = example_batch(spec, model, 4, rng)
    outputs = as_list(model(x, training=False))
    assert all(np.isfinite(o).all() for o in outputs if o.dtype.kind == "f")

    if spec.trainable:
        compile_model(model, spec, epochs=1)
        # Tracing the training step of a deep or large stack costs 10-35 s
        # (resnet50: 23 s traced; resnet152: 35 s traced, 4 s eager) and checks
        # nothing that the family's smaller models, traced here, do not: those
        # (deeper than DEEP_LAYERS, or not in ROUND_TRIP) run eagerly.  Deeper
        # than VERY_DEEP_LAYERS (resnet101, resnet152, resnet110: the blocks of
        # resnet50 and resnet20, which step and round-trip here, repeated) the
        # model is built, run and compiled only.
        if len(model.layers) <= VERY_DEEP_LAYERS:
            model.run_eagerly = len(model.layers) > DEEP_LAYERS or name not in ROUND_TRIP
            history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
            assert all(np.isfinite(v[-1]) for v in history.history.values())

    if name not in ROUND_TRIP or len(model.layers) > VERY_DEEP_LAYERS:
        return
    before = as_list(model(x, training=False))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert_same_outputs(before, as_list(reloaded(x, training=False)))

    if not spec.exportable or len(model.layers) > DEEP_LAYERS:
        # A deep stack's SavedModel is its family's shallower one repeated
        # (resnet18's and resnet20's blocks, or their bottleneck/pre-activation
        # variants of the same layer classes): tracing and loading it costs
        # 10-60 s and exercises no other export code (tests/test_reload.py
        # exports every layer class in a fresh process).
        return
    signatures = hooks.export_signatures(model)
    saved = export_saved_model(model, tmp_path / "saved", signatures=signatures)
    loaded = tf.saved_model.load(saved)
    assert "serving_default" in loaded.signatures
    if not signatures or "serving_default" not in signatures:
        arrays = x if isinstance(x, (list, tuple)) else [x]
        names = input_names(model)
        assert len(names) == len(arrays), (names, len(arrays))
        served = loaded.signatures["serving_default"](
            **{n: tf.constant(a) for n, a in zip(names, arrays)})
        assert_same_outputs(before, [served[k].numpy() for k in
                                     _output_order(model, default_signature)])
    for endpoint, (_, input_signature) in (signatures or {}).items():
        fn = loaded.signatures[endpoint]
        feeds = random_feed(input_signature, rng)
        arg_names = sorted(fn.structured_input_signature[1])
        assert len(feeds) == len(arg_names), f"endpoint {endpoint} takes {arg_names}"
        result = fn(**dict(zip(arg_names, feeds)))
        assert result, f"endpoint {endpoint} returned nothing"
        for value in result.values():
            if value.dtype.is_floating:
                assert np.isfinite(value.numpy()).all()


def _output_order(model, _):
    from zoo.export import output_names
    return output_names(model)


def test_every_family_has_a_round_trip():
    assert {zoo.get_spec(n).family for n in ROUND_TRIP} == {zoo.get_spec(n).family
                                                            for n in NAMES}
    assert {"resnet18", "resnet20", "vgg11", "alexnet", "mlp", "dcgan"} <= set(ROUND_TRIP)


@pytest.mark.parametrize("name", NAMES)
def test_spec_schema(name):
    """Metadata is complete and the recorded parameter count is the built model's."""
    import keras_tuner

    spec = zoo.get_spec(name)
    assert spec.description, "the builder needs a docstring summary line"
    assert spec.paper, "cite the reference"
    assert spec.family and spec.task in zoo.registry.TASKS
    assert len(spec.test_input_shape) >= 1
    assert "input_shape" in spec.arguments, "every builder takes input_shape"
    if spec.num_params is not None:
        assert zoo.build(name).count_params() == spec.num_params
    if spec.search_space is not None:
        kwargs, _ = spec.space_point(keras_tuner.HyperParameters())
        spec.build(**{**spec.test_kwargs, **kwargs, "input_shape": spec.test_input_shape})


SPACES = [name for name in NAMES if zoo.get_spec(name).search_space is not None]


@pytest.mark.parametrize("name", SPACES)
def test_search_space_default_point_is_the_registered_model(name):
    """A search starts from the model `zoo.build(name)` and `zoo train name` give."""
    import keras_tuner

    spec = zoo.get_spec(name)
    kwargs, recipe = spec.space_point(keras_tuner.HyperParameters())
    assert kwargs, "a search space declares at least one builder argument"
    unknown = sorted(set(kwargs) - set(spec.arguments))
    assert not unknown, f"the space sets arguments the builder does not take: {unknown}"
    assert kwargs == {k: spec.arguments[k] for k in kwargs}
    assert recipe == {k: getattr(spec.recipe, k) for k in recipe}
