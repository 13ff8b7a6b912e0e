"""Transfer learning: backbones, verified weights, freeze plans, fine-tuning runs, resume.

Offline and small: every backbone is built at its minimum input once; the
end-to-end run uses 8x8 digits.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import transfer
import zoo
from transfer import backbones as bb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------- no TensorFlow


def test_import_and_list_backbones_without_tensorflow():
    code = ("import sys, transfer, transfer.cli; rows = transfer.list_backbones(); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; "
            "print(len(rows)); print(rows[0])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    backbones = [n for n in zoo.list_models() if zoo.get_spec(n).backbone]
    assert int(out[0]) == len(backbones) + len(bb.KERAS_BACKBONES)
    names = [row[0] for row in transfer.list_backbones()]
    assert "resnet50" in names and "keras:MobileNetV2" in names
    row = dict((r[0], r) for r in transfer.list_backbones())["vgg16"]
    assert row[1] == "zoo" and "caffe" in row[3]


@pytest.mark.parametrize("kwargs, match", [
    (dict(backbone="lenet5"), "not a backbone.*resnet50"),
    (dict(backbone="keras:NoSuchNet"), "Unknown keras.applications backbone.*MobileNetV2"),
    (dict(backbone="resnet20", weights="/nonexistent/w.weights.h5"), "not found"),
    (dict(backbone="resnet20", weights="imagenet"), "publishes no ImageNet weights"),
    (dict(backbone="resnet20", unfreeze=4), "larger than the backbone's 3 stages"),
    (dict(backbone="resnet20", unfreeze=0), "unfreeze must be"),
    (dict(backbone="resnet20", method="sideways"), "method must be one of"),
    (dict(backbone="resnet20", input_size=4), "smaller than resnet20's minimum 8x8"),
    (dict(backbone="resnet20", num_classes=3), "data has 10 classes but num_classes=3"),
    (dict(backbone="resnet20", layer_decay=1.5), "layer_decay"),
    (dict(backbone="resnet20", in_channels="paint"), "in_channels"),
    (dict(backbone="resnet20", bogus=1), "Unknown finetune argument"),
])
def test_bad_inputs_fail_before_training(kwargs, match, tmp_path):
    with pytest.raises((ValueError, TypeError), match=match):
        from transfer.finetuning import finetune
        finetune(data="digits", run_dir=str(tmp_path / "run"), **kwargs)
    assert not (tmp_path / "run").exists()


def test_weights_file_sha256_and_unfinished_run(tmp_path):
    path = tmp_path / "w.weights.h5"
    path.write_bytes(b"not really weights")
    digest = bb.sha256_of(str(path))
    assert bb.resolve("resnet20", weights=str(path), weights_sha256=digest).weights_sha256 == digest
    with pytest.raises(ValueError, match="sha256 mismatch"):
        bb.resolve("resnet20", weights=str(path), weights_sha256="0" * 64)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "resnet20"}))
    with pytest.raises(ValueError, match="finished run"):
        bb.resolve(str(run))


# ----------------------------------------------------------------- freeze plans


def _bn_layers(model):
    import keras
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def _one_step_per_method(source, size, channels=3):
    """Build once, then one training step in each method's phases; returns the model."""
    import keras

    from transfer.finetuning import assemble, plan_phases, set_freeze_plan

    backbone, _ = bb.build(source, channels=channels, size=size)
    model = assemble(backbone, input_shape=(size, size, channels), num_classes=3,
                     preprocessing=source.preprocessing, dropout=0.0, name="probe")
    rng = np.random.default_rng(0)
    x = rng.random((2, size, size, channels)).astype("float32")
    y = np.array([0, 2])
    n = len(source.stages)
    # The freeze plans of the three methods' first phases: frozen (feature
    # extraction, head phase), top stage (gradual), everything (two_phase).
    plans = sorted({phase.unfrozen for method in ("feature_extraction", "two_phase", "gradual")
                    for phase in plan_phases(method, head_epochs=1, epochs=2, unfreeze=n,
                                             unfreeze_every=1, lr_factor=10.0)[:2]})
    assert plans == sorted({0, 1, n})
    for unfrozen in plans:
        set_freeze_plan(backbone, source.stages, unfrozen)
        # Eager: tracing a deep graph per plan would cost more than the step itself.
        model.compile(optimizer=keras.optimizers.SGD(1e-3), run_eagerly=True,
                      loss="sparse_categorical_crossentropy")
        frozen = [w for w in backbone.weights if not w.trainable]
        before = [np.array(w) for w in frozen]
        trained = [w for w in model.trainable_weights]
        trained_before = [np.array(w) for w in trained]
        # (A random deep net with BN in inference mode may overflow: no finiteness check.)
        model.train_on_batch(x, y)
        assert any(not np.array_equal(np.array(w), b) for w, b in zip(trained, trained_before))
        assert len(trained) == len(model.trainable_weights)
        for w, b in zip(frozen, before):  # frozen weights and BN statistics untouched
            np.testing.assert_array_equal(np.array(w), b)
        assert all(not layer.trainable for layer in _bn_layers(backbone))
    return model


BACKBONES = [n for n in zoo.list_models() if zoo.get_spec(n).backbone]


@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_takes_a_step_in_each_method(name):
    spec = zoo.get_spec(name)
    _one_step_per_method(bb.resolve(name), spec.min_input_shape[0])


@pytest.mark.parametrize("name", ["keras:MobileNetV2", "keras:ResNet50V2"])
def test_keras_backbones_take_a_step_in_each_method(name):
    source = bb.resolve(name)
    assert all(n in source.stages for n in bb.KERAS_BACKBONES[name[6:]]["stages"])
    _one_step_per_method(source, 32)


def test_trainable_change_takes_effect_only_after_recompile():
    import keras

    from transfer.finetuning import assemble, set_freeze_plan

    source = bb.resolve("resnet20")
    backbone, _ = bb.build(source, channels=1, size=8)
    model = assemble(backbone, input_shape=(8, 8, 1), num_classes=2, preprocessing="none",
                     dropout=0.0, name="probe")
    x, y = np.random.default_rng(1).random((4, 8, 8, 1)).astype("float32"), np.array([0, 1] * 2)
    set_freeze_plan(backbone, source.stages, 0)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    model.train_on_batch(x, y)
    top = backbone.get_layer("conv4_block3_2_conv").kernel
    stem = backbone.get_layer("conv1_conv").kernel
    bn = backbone.get_layer("conv4_block3_2_bn")
    set_freeze_plan(backbone, source.stages, 1)  # top stage trains from now on...
    before = np.array(top)
    model.train_on_batch(x, y)
    np.testing.assert_array_equal(np.array(top), before)  # ...but not before a recompile
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    stem_before, stats_before = np.array(stem), [np.array(v) for v in bn.non_trainable_weights]
    model.train_on_batch(x, y)
    assert not np.array_equal(np.array(top), before)
    np.testing.assert_array_equal(np.array(stem), stem_before)
    for v, b in zip(bn.non_trainable_weights, stats_before):  # BN moving stats frozen (#20285)
        np.testing.assert_array_equal(np.array(v), b)


@pytest.mark.parametrize("base", ["SGD", "Adam"])
def test_layer_decay_scales_each_variables_update(base):
    import keras

    from zoo.models.layers.transfer import with_update_scales

    a = keras.Variable(np.ones(3, "float32"), name="a")
    b = keras.Variable(np.ones(3, "float32"), name="b")
    optimizer = with_update_scales(getattr(keras.optimizers, base)(0.1), {b.path: 0.25})
    grads = [np.array([1.0, -2.0, 3.0], "float32")] * 2
    optimizer.apply_gradients(zip(grads, [a, b]))
    step_a, step_b = 1 - np.array(a), 1 - np.array(b)
    np.testing.assert_allclose(step_b, 0.25 * step_a, rtol=1e-5)
    # Under Adam, scaling the gradient would change nothing: the update, not the gradient, scales.
    config = optimizer.get_config()
    assert type(optimizer).from_config(config).scales == {b.path: 0.25}


# ----------------------------------------------------------------- weights


def test_imagenet_from_keras_cache_and_in_channel_adaptation(tmp_path, monkeypatch):
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    from zoo.models import _blocks

    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setattr(_blocks, "keras_cache_dir", lambda: str(tmp_path))
    source = bb.resolve("keras:MobileNetV2", weights="imagenet")
    with pytest.raises(ValueError, match="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96"):
        bb.build(source, channels=3, size=96)
    # Keras's own file name in Keras's cache, made from a random model (no ImageNet offline).
    ref = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(96, 96, 3))
    name, _, _ = _blocks.imagenet_file_name("MobileNetV2", include_top=False, rows=96)
    with h5py.File(tmp_path / name, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, ref)
    rgb, provenance = bb.build(source, channels=3, size=96)
    assert provenance["sha256"] == bb.sha256_of(str(tmp_path / name))
    gray, _ = bb.build(source, channels=1, size=96)
    x = np.random.default_rng(2).random((2, 96, 96, 1)).astype("float32")
    expected = ref(np.repeat(x, 3, axis=-1), training=False)
    np.testing.assert_allclose(rgb(np.repeat(x, 3, axis=-1), training=False), expected, atol=1e-5)
    np.testing.assert_allclose(gray(x, training=False), expected, atol=1e-4)
    # Repeat-and-scale (timm): 6 channels holding RGB twice give the RGB activations.
    kernel = np.random.default_rng(3).normal(size=(3, 3, 3, 4))
    six = bb.adapt_kernel(kernel, 6)
    assert six.shape == (3, 3, 6, 4)
    np.testing.assert_allclose(six.sum(axis=2), kernel.sum(axis=2))


def test_weights_file_that_does_not_fit_names_the_layer(tmp_path):
    other = zoo.build("resnet32", input_shape=(8, 8, 3), include_top=False)
    path = str(tmp_path / "resnet32.weights.h5")
    other.save_weights(path)
    with pytest.raises(ValueError, match="does not fit"):
        bb.build(bb.resolve("resnet20", weights=path), channels=3, size=8)


# ----------------------------------------------------------------- a run, killed and resumed

_KILL_IN_PHASE_2 = textwrap.dedent("""
    import os, signal, sys, keras
    import transfer
    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:  # the first epoch of phase 2 is backed up; die in the next
                os.kill(os.getpid(), signal.SIGKILL)
    transfer.finetune(sys.argv[1], "digits", weights=sys.argv[2], method="two_phase",
                      head_epochs=2, epochs=2, unfreeze=1, input_size=8, batch_size=128,
                      run_dir=sys.argv[3], callbacks=[Kill()], verbose=0, export=False)
""")


def test_finetune_run_from_a_zoo_run_resumes_in_phase_2_and_exports(tmp_path):
    from zoo.runs import load_run

    pretrained = zoo.train("resnet20", "digits", epochs=1, batch_size=128, classes=(0, 1, 2, 3, 4),
                           model_kwargs={"input_shape": (8, 8, 1)}, run_dir=str(tmp_path / "pre"),
                           export=False, verbose=0, augment=())
    run_dir = str(tmp_path / "ft")
    proc = subprocess.run([sys.executable, "-c", _KILL_IN_PHASE_2, "resnet20",
                           pretrained.run_dir, run_dir], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    state = json.load(open(os.path.join(run_dir, "finetune_state.json")))
    assert state["completed_phases"] == 1 and not os.path.exists(os.path.join(run_dir, "metrics.json"))

    result = transfer.finetune("resnet20", "digits", weights=pretrained.run_dir,
                               method="two_phase", head_epochs=2, epochs=2, unfreeze=1,
                               input_size=8, batch_size=128, run_dir=run_dir, verbose=0)
    assert result.resumed_phase == 1
    epochs = [int(e) for e in result.history["epoch"]]
    assert epochs[:2] == [0, 1] and epochs.count(0) == 1 and max(epochs) == 3
    config = json.load(open(os.path.join(run_dir, "config.json")))
    assert config["registered"] is False and config["base_model"] == "resnet20"
    assert config["weights"]["source"] == pretrained.run_dir and len(config["weights"]["sha256"]) == 64
    card = json.load(open(os.path.join(run_dir, "model_card.json")))
    assert card["backbone"]["source"] == "run" and card["weights"] == config["weights"]
    assert card["exports"]["saved_model"]["max_abs_diff"] < 1e-5  # verified in a fresh process
    # The exported SavedModel on raw images equals the Keras model.
    from zoo.export import run_saved_model_fresh
    raw = np.random.default_rng(4).random((3, 8, 8, 1)).astype("float32")
    served = run_saved_model_fresh(os.path.join(run_dir, "saved_model"), {"inputs": raw})
    np.testing.assert_allclose(next(iter(served.values())), result.model(raw), atol=1e-5)
    _, reloaded = load_run(run_dir)
    np.testing.assert_allclose(reloaded(raw), result.model(raw), atol=1e-6)
