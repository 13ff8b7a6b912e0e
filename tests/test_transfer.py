"""Transfer learning: backbones, verified weights, freeze plans, fine-tuning runs, resume.

Offline and small.  Every backbone (the registered ones and two `keras:`
ones) is built once at its minimum input and takes one training step under
each method's freeze plans (`_check_backbone`).  One run, in a process with
two logical CPU devices (`_phase2_job`): pretrain a tiny zoo run, fine-tune
from it under MirroredStrategy with layer decay, measure the first phase-2
update of every variable, and SIGKILL it in phase 2; the test then resumes
it in phase 2 and checks the exported run.

    python tests/test_transfer.py backbones OUT.json NAME...   # the backbone checks by hand
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import transfer
import zoo
from transfer import backbones as bb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKBONES = [n for n in zoo.list_models() if zoo.get_spec(n).backbone]
KERAS_PROBES = ["keras:MobileNetV2", "keras:ResNet50V2"]
# The fine-tuning run killed in phase 2 and resumed: the same arguments both times.
PHASE2_ARGS = dict(method="two_phase", head_epochs=1, epochs=2, unfreeze=2, layer_decay=0.5,
                   input_size=8, batch_size=64, strategy="mirrored")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}


def _tiny_digits(path):
    """150 digits images (15 per class), 8x8x1 in [0, 1], as an npz source."""
    from zoo import data as zdata
    (x, y), _, _ = zdata.read_source("digits")
    keep = np.concatenate([np.flatnonzero(y == c)[:15] for c in range(10)])
    np.savez(path, x=x[keep], y=y[keep])


# ----------------------------------------------------------------- no TensorFlow


def test_import_and_list_backbones_without_tensorflow():
    code = ("import sys, transfer, transfer.cli; rows = transfer.list_backbones(); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; "
            "print(len(rows)); print(rows[0])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert int(out[0]) == len(BACKBONES) + len(bb.KERAS_BACKBONES)
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
    (dict(backbone="resnet20", layer_decay=0), "layer_decay"),
    (dict(backbone="resnet20", in_channels="paint"), "in_channels"),
    (dict(backbone="resnet20", strategy="telepathy"), "strategy"),
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


def test_a_folder_is_resized_to_the_backbones_native_size(tmp_path):
    """A folder's images have no size of their own: keras:* backbones see 224, a zoo
    backbone its input_shape, unless --input-size says otherwise; arrays keep theirs."""
    from PIL import Image

    from transfer.finetuning import FinetuneSettings, _image_geometry

    for c in range(2):
        (tmp_path / f"c{c}").mkdir()
        for i in range(15):
            Image.new("RGB", (40 + i, 30), (120 * c, 60, 200)).save(tmp_path / f"c{c}" / f"{i}.jpg")
    data = f"folder:{tmp_path}"
    options = dict(seed=0, validation_split=0.2, test_split=0.2)

    def size(backbone, input_size=None, source=data):
        settings = FinetuneSettings(method="two_phase", unfreeze="all", head_epochs=1, epochs=1,
                                    lr_factor=0.1, layer_decay=None, unfreeze_every=None,
                                    in_channels="adapt", input_size=input_size, dropout=0.2,
                                    head_init="random")
        return _image_geometry(bb.resolve(backbone), source, settings, num_classes=None,
                               plan_options=options)[1]

    assert size("keras:MobileNetV2") == 224
    assert size("resnet20") == zoo.get_spec("resnet20").input_shape[0]
    assert size("keras:MobileNetV2", input_size=96) == 96
    assert size("resnet20", source="digits") == 8  # arrays: their own size (min 1)


def test_phase_plans_of_each_method():
    from transfer.finetuning import plan_phases

    def plans(method, **kw):
        args = dict(head_epochs=2, epochs=4, unfreeze=3, unfreeze_every=None, lr_factor=10.0)
        return [(ph.start, ph.end, ph.unfrozen, ph.lr_scale)
                for ph in plan_phases(method, **{**args, **kw})]

    assert plans("feature_extraction") == [(0, 6, 0, 1.0)]
    assert plans("two_phase") == [(0, 2, 0, 1.0), (2, 6, 3, 0.1)]
    assert plans("two_phase", head_epochs=0) == [(0, 4, 3, 0.1)]
    # gradual: one more stage every unfreeze_every epochs, the last one to the end
    assert plans("gradual", unfreeze_every=1) == [(0, 2, 0, 1.0), (2, 3, 1, 0.1),
                                                  (3, 4, 2, 0.1), (4, 6, 3, 0.1)]
    assert plans("gradual", epochs=3) == [(0, 2, 0, 1.0), (2, 3, 1, 0.1), (3, 4, 2, 0.1),
                                          (4, 5, 3, 0.1)]


def test_finetune_space_defaults_are_finetunes_defaults():
    import inspect

    kt = pytest.importorskip("keras_tuner")
    from transfer.finetuning import finetune

    hp = kt.HyperParameters()
    point = transfer.finetune_space(hp, stages=3)
    defaults = inspect.signature(finetune).parameters
    assert point == {k: defaults[k].default for k in ("unfreeze", "lr_factor", "layer_decay")}
    assert hp.values == {"unfreeze": "all", "lr_factor": 10.0, "layer_decay": 1.0}
    # Choices beyond the backbone's stages are not offered.
    small = kt.HyperParameters()
    transfer.finetune_space(small, stages=1)
    assert small.get_config()["space"][0]["config"]["values"] == ["all", "1"]
    hp.values.update(unfreeze="2", layer_decay=0.75, lr_factor=30.0)
    assert transfer.finetune_space(hp) == {"unfreeze": 2, "lr_factor": 30.0, "layer_decay": 0.75}
    with pytest.raises(ValueError, match="stages"):
        transfer.finetune_space(kt.HyperParameters(), stages=0)


# ----------------------------------------------------------------- freeze plans, in process


def test_freeze_plans_and_trainable_change_takes_effect_only_after_recompile():
    import keras

    from transfer.finetuning import assemble, set_freeze_plan

    source = bb.resolve("resnet20")
    backbone, _ = bb.build(source, channels=1, size=8)
    # Any plan after any other: stage k trains iff it is among the top `unfrozen`
    # (Keras ignores `model.trainable = True` when it is already True, so a
    # gradual 1 -> 2 step must set every layer itself).
    convs = {s: [layer for layer in backbone.layers if layer.name.startswith(f"conv{s}_")
                 and isinstance(layer, keras.layers.Conv2D)] for s in (2, 3, 4)}
    for unfrozen in (0, 1, 2, 3, 1, 3, 0):
        set_freeze_plan(backbone, source.stages, unfrozen)
        trained = {id(w) for w in backbone.trainable_weights}
        for s, layers in convs.items():
            expected = s > 4 - unfrozen
            assert all((id(layer.kernel) in trained) == expected for layer in layers), \
                (unfrozen, s)
        assert (id(backbone.get_layer("conv1_conv").kernel) in trained) == (unfrozen == 3)
        assert not any(isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
                       for layer in backbone.layers)

    model = assemble(backbone, input_shape=(8, 8, 1), num_classes=2, preprocessing="none",
                     dropout=0.0, name="probe")
    x, y = np.random.default_rng(1).random((4, 8, 8, 1)).astype("float32"), np.array([0, 1] * 2)
    set_freeze_plan(backbone, source.stages, 0)
    # Compiled (not eager) training, as fit runs it: the traced step keeps the
    # trainable set it was traced with.  (No XLA: "auto" would compile each trace.)
    compile_args = dict(loss="sparse_categorical_crossentropy", jit_compile=False)
    model.compile(optimizer=keras.optimizers.SGD(0.1), **compile_args)
    model.train_on_batch(x, y)
    top = backbone.get_layer("conv4_block3_2_conv").kernel
    stem = backbone.get_layer("conv1_conv").kernel
    bn = backbone.get_layer("conv4_block3_2_bn")
    set_freeze_plan(backbone, source.stages, 1)  # top stage trains from now on...
    before = np.array(top)
    model.train_on_batch(x, y)
    np.testing.assert_array_equal(np.array(top), before)  # ...but not before a recompile
    model.compile(optimizer=keras.optimizers.SGD(0.1), **compile_args)
    stem_before, stats_before = np.array(stem), [np.array(v) for v in bn.non_trainable_weights]
    model.train_on_batch(x, y)
    assert not np.array_equal(np.array(top), before)
    np.testing.assert_array_equal(np.array(stem), stem_before)
    for v, b in zip(bn.non_trainable_weights, stats_before):  # BN moving stats frozen (#20285)
        np.testing.assert_array_equal(np.array(v), b)
    # ...and in the other direction: frozen again, it still trains until recompiled.
    set_freeze_plan(backbone, source.stages, 0)
    before = np.array(top)
    model.train_on_batch(x, y)
    assert not np.array_equal(np.array(top), before)


def test_probe_head_is_the_logistic_regression_of_the_frozen_features():
    """head_init="probe": the new Dense predicts exactly what scikit-learn's probe does
    (several classes, two classes -- one logit in scikit-learn -- and a class absent)."""
    import types

    import keras
    from sklearn.linear_model import LogisticRegression

    from transfer.finetuning import assemble, probe_head

    source = bb.resolve("resnet20")
    backbone, _ = bb.build(source, channels=1, size=8)
    rng = np.random.default_rng(0)
    for classes, present in ((3, (0, 1, 2)), (2, (0, 1)), (4, (0, 2, 3))):
        model = assemble(backbone, input_shape=(8, 8, 1), num_classes=classes,
                         preprocessing="none", dropout=0.2, name="probe")
        y = np.array([present[i % len(present)] for i in range(30)])
        x = (rng.random((30, 8, 8, 1)) * 0.3 + y[:, None, None, None] / 4).astype("float32")
        p = types.SimpleNamespace(
            bundle=types.SimpleNamespace(arrays=types.SimpleNamespace(x_train=x, y_train=y),
                                         batch_size=8),
            config=types.SimpleNamespace(strategy=None))
        info = probe_head(model, p)
        assert info["examples"] == 30 and info["train_accuracy"] > 0.5 and info["converged"]
        feats = keras.Model(model.inputs, model.get_layer("avg_pool").output).predict(
            x, verbose=0).astype("float64")
        # scikit-learn's probe on standardized features, folded into the Dense layer.
        mean, scale = feats.mean(0), feats.std(0)
        scale[scale < 1e-12] = 1.0
        expected = LogisticRegression(max_iter=1000).fit((feats - mean) / scale, y)
        probs = model.predict(x, verbose=0)
        assert probs.shape == (30, classes)
        np.testing.assert_allclose(probs[:, list(present)],
                                   expected.predict_proba((feats - mean) / scale), atol=1e-3)
        assert probs[:, [c for c in range(classes) if c not in present]].max(initial=0) < 1e-3
    keras.backend.clear_session()


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

    from zoo.models import weights

    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setattr(weights, "keras_cache_dir", lambda: str(tmp_path))
    # Offline without the file: the error names Keras's file (MobileNetV2's names
    # its input size) and nothing is built first.
    with monkeypatch.context() as patch:
        patch.setattr(bb.KerasApplication, "make",
                      lambda *a, **k: pytest.fail("built before finding the file"))
        with pytest.raises(ValueError, match="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96"):
            bb.build(bb.resolve("keras:MobileNetV2", weights="imagenet"), channels=3, size=96)
    # Keras's own file name in Keras's cache, made from a random model (no ImageNet offline).
    source = bb.resolve("keras:VGG16", weights="imagenet")
    ref = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    name, _, _ = weights.imagenet_file_name("VGG16", include_top=False)
    with h5py.File(tmp_path / name, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, ref)
    rgb, provenance = bb.build(source, channels=3, size=32)
    assert provenance == {"source": "imagenet", "file": str(tmp_path / name),
                          "sha256": bb.sha256_of(str(tmp_path / name))}
    gray, _ = bb.build(source, channels=1, size=32)
    x = np.random.default_rng(2).random((2, 32, 32, 1)).astype("float32") * 255
    expected = ref(np.repeat(x, 3, axis=-1))
    np.testing.assert_allclose(rgb(np.repeat(x, 3, axis=-1)), expected, rtol=1e-5, atol=1e-4)
    # In-channel adaptation: the gray network on g equals the RGB one on (g, g, g).
    np.testing.assert_allclose(gray(x), expected, rtol=1e-4, atol=1e-3)
    assert gray.get_layer("block1_conv1").kernel.shape == (3, 3, 1, 64)
    # Repeat-and-scale (timm): 6 channels holding RGB twice give the RGB activations.
    kernel = np.random.default_rng(3).normal(size=(3, 3, 3, 4))
    six = bb.adapt_kernel(kernel, 6)
    assert six.shape == (3, 3, 6, 4)
    np.testing.assert_allclose(six.sum(axis=2), kernel.sum(axis=2))


def test_weights_file_that_does_not_fit_names_the_layer(tmp_path):
    other = zoo.build("resnet32", input_shape=(8, 8, 3), include_top=False)
    path = str(tmp_path / "resnet32.weights.h5")
    other.save_weights(path)
    with pytest.raises(ValueError, match="does not fit.*first layer that does not match"):
        bb.build(bb.resolve("resnet20", weights=path), channels=3, size=8)


# ----------------------------------------------------------------- a run: mirrored, killed, resumed


def _stage_scale(path, decay, stages=3):
    """Expected update scale of a resnet20 fine-tuning variable (None: frozen)."""
    if "predictions" in path.split("/"):
        return 1.0
    stage = int(re.match(r"conv(\d)_", path.split("/")[-2]).group(1))
    stage = max(stage - 2, 0)  # the stem trains with stage conv2 (index 0)
    return decay ** (stages - stage)


@pytest.mark.heavy
def test_finetune_from_a_run_mirrored_layer_decay_killed_in_phase_2_resumes(tmp_path):
    from zoo.runs import load_run

    work = str(tmp_path)
    _tiny_digits(os.path.join(work, "digits.npz"))
    out_path = os.path.join(work, "phase2.json")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "phase2", out_path, work],
                          cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL and os.path.exists(out_path), proc.stderr[-4000:]
    out = json.load(open(out_path))
    # ---- the killed process: two replicas, layer decay on every variable's first update
    assert out["replicas"] == 2 and out["optimizer"] == "LayerDecayAdam"
    lr = out["learning_rate"]
    assert lr == pytest.approx(1e-4)  # Adam's 1e-3 / lr_factor 10 in phase 2
    steps = out["first_phase2_update"]
    trained = {p for p in steps}
    # unfreeze=2: stages conv3 and conv4 train (no BatchNorm), conv1/conv2 stay frozen
    assert trained and not any(p.split("/")[-2].startswith(("conv1_", "conv2_")) or "_bn/" in p
                               for p in trained if "predictions" not in p.split("/")), trained
    assert {p.split("/")[-2] for p in trained if "conv" in p} >= {
        f"conv{s}_block{b}_{i}_conv" for s in (3, 4) for b in (1, 2, 3) for i in (1, 2)}
    for path, step in steps.items():
        # Adam's first update of an element is lr * g / (|g| + eps'): its largest is lr * scale.
        assert step == pytest.approx(lr * _stage_scale(path, 0.5), rel=2e-2), (path, step)
    run_dir = os.path.join(work, "ft")
    state = json.load(open(os.path.join(run_dir, "finetune_state.json")))
    assert state["completed_phases"] == 1 and not os.path.exists(os.path.join(run_dir, "metrics.json"))

    # ---- the same call resumes in phase 2 (under mirrored on this process's one CPU device)
    data = "npz:" + os.path.join(work, "digits.npz")
    result = transfer.finetune("resnet20", data, weights=out["pretrained"], run_dir=run_dir,
                               verbose=0, **PHASE2_ARGS)
    assert result.resumed_phase == 1
    epochs = [int(e) for e in result.history["epoch"]]
    assert epochs == [0, 1, 2]  # nothing trained twice, nothing skipped
    config = json.load(open(os.path.join(run_dir, "config.json")))
    assert config["registered"] is False and config["base_model"] == "resnet20"
    assert config["weights"] == {"source": out["pretrained"], "sha256": bb.sha256_of(
        os.path.join(out["pretrained"], "model.keras"))}
    assert config["finetune"]["layer_decay"] == 0.5
    card = json.load(open(os.path.join(run_dir, "model_card.json")))
    assert card["backbone"]["source"] == "run" and card["weights"] == config["weights"]
    # The SavedModel, on the test images as the pipeline gives them, was compared with
    # the Keras model in a fresh process.
    assert card["exports"]["saved_model"]["max_abs_diff"] < 1e-5
    # The stem came from the pretrained run and stayed frozen through both phases.
    stem = np.asarray(result.model.get_layer("backbone").get_layer("conv1_conv").kernel)
    assert hashlib.sha256(stem.tobytes()).hexdigest() == out["pretrained_stem_sha256"]
    raw = np.random.default_rng(4).random((3, 8, 8, 1)).astype("float32")
    _, reloaded = load_run(run_dir)
    np.testing.assert_allclose(reloaded(raw), result.model(raw), atol=1e-6)


def _phase2_job(out_path, work):
    """Pretrain, then fine-tune under MirroredStrategy (2 CPUs) with layer decay; die in phase 2."""
    from zoo.distribute import configure_cpu_devices
    configure_cpu_devices(2)  # before TensorFlow starts
    import keras

    data = "npz:" + os.path.join(work, "digits.npz")
    pre = zoo.train("resnet20", data, classes=(0, 1, 2, 3, 4), epochs=1, batch_size=64,
                    model_kwargs={"input_shape": (8, 8, 1)}, run_dir=os.path.join(work, "pre"),
                    export=False, verbose=0, augment=())
    stem = np.asarray(pre.model.get_layer("conv1_conv").kernel)
    report = {"pretrained": pre.run_dir,
              "pretrained_stem_sha256": hashlib.sha256(stem.tobytes()).hexdigest()}

    class Probe(keras.callbacks.Callback):
        """Measures the first update of phase 2 (epoch 1), then kills the process."""

        epoch = None

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if self.epoch == 1 and batch == 0:
                self.before = {v.path: np.array(v) for v in self.model.trainable_weights}

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 0:
                optimizer = self.model.optimizer
                report.update(
                    replicas=self.model.distribute_strategy.num_replicas_in_sync,
                    optimizer=type(optimizer).__name__,
                    learning_rate=float(np.asarray(optimizer.learning_rate)),
                    first_phase2_update={
                        v.path: float(np.max(np.abs(np.array(v) - self.before[v.path])))
                        for v in self.model.trainable_weights})

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:  # phase 2's first epoch is backed up (BackupAndRestore runs first)
                with open(out_path + ".tmp", "w") as f:
                    json.dump(report, f)
                os.replace(out_path + ".tmp", out_path)
                os.kill(os.getpid(), signal.SIGKILL)

    transfer.finetune("resnet20", data, weights=pre.run_dir, run_dir=os.path.join(work, "ft"),
                      callbacks=[Probe()], verbose=0, export=False, **PHASE2_ARGS)


# ----------------------------------------------------------------- every backbone, one step per method


def _check_backbone(name, step=True):
    """Build `name` once at its minimum input; one step under each method's freeze plans.

    Returns a list of problems (empty: all good).  For each plan the methods
    use (frozen; top stage only, gradual's first step; everything), after a
    recompile: exactly the top stages' non-BatchNorm variables and the head
    train, and (with `step`) every one of them changes in one SGD step, the
    loss and weights stay finite, and every other variable (BatchNorm
    statistics included) is bit-identical.
    """
    import keras

    from transfer.finetuning import assemble, plan_phases, set_freeze_plan

    source = bb.resolve(name)
    size = 32 if name.startswith("keras:") else zoo.get_spec(name).min_input_shape[0]
    backbone, _ = bb.build(source, channels=3, size=size)
    model = assemble(backbone, input_shape=(size, size, 3), num_classes=3,
                     preprocessing=source.preprocessing, dropout=0.0, name="probe")
    x = np.random.default_rng(0).random((2, size, size, 3)).astype("float32")
    y = np.array([0, 2])
    norms = _settle_batchnorm(backbone, x)

    problems = []
    n = len(source.stages)
    plans = sorted({phase.unfrozen for method in ("feature_extraction", "two_phase", "gradual")
                    for phase in plan_phases(method, head_epochs=1, epochs=2, unfreeze=n,
                                             unfreeze_every=1, lr_factor=10.0)[:2]})
    if plans != [0, 1, n]:
        problems.append(f"the methods' first plans are {plans}, not [0, 1, {n}]")
    names = [layer.name for layer in backbone.layers]
    head = {id(w) for w in model.get_layer("predictions").weights}
    initial = [np.array(w) for w in model.weights]  # every plan starts from these
    for unfrozen in plans:
        set_freeze_plan(backbone, source.stages, unfrozen)
        # Eager: tracing a deep graph per plan costs more than the step itself.
        model.compile(optimizer=keras.optimizers.SGD(1e-2), run_eagerly=True,
                      loss="sparse_categorical_crossentropy")
        # Expected to train: the layers after the end of stage n - unfrozen, minus BatchNorm.
        first = names.index(source.stages[n - unfrozen - 1]) + 1 if 0 < unfrozen < n else 0
        expected = {id(w) for layer in backbone.layers[first:] if unfrozen
                    and not isinstance(layer, keras.layers.BatchNormalization)
                    for w in layer.weights} | head
        trained = {id(w) for w in model.trainable_weights}
        if trained != expected:
            problems.append(f"plan {unfrozen}: {len(trained - head)} backbone variables train, "
                            f"expected {len(expected - head)} (and the head)")
        if any(bn.trainable for bn in norms):
            problems.append(f"plan {unfrozen}: a BatchNormalization layer is trainable")
        if step:
            problems += [f"plan {unfrozen}: {problem}"
                         for problem in _step_problems(model, x, y, trained, initial)]
    return problems


def _settle_batchnorm(backbone, x):
    """Set the moving statistics of `backbone`'s BatchNorm layers to batch `x`'s; returns them.

    A random network with BatchNorm in inference mode (mean 0, variance 1)
    blows its activations up (resnet110 overflows) or lets them vanish
    (MobileNetV2) layer by layer; a trained backbone has its data's statistics.
    """
    import keras

    norms = [layer for layer in backbone.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.momentum = 0.0
    backbone(x, training=True)
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
    return norms


def _step_problems(model, x, y, trained, initial):
    """One SGD step: what went wrong (the trained variables are reset to `initial` after)."""
    problems = []
    loss = model.train_on_batch(x, y)
    if not np.isfinite(loss):
        problems.append(f"loss {loss}")
    same, moved, broken = [], [], []
    for w, before in zip(model.weights, initial):
        after = np.array(w)
        if id(w) in trained:
            if np.array_equal(after, before):
                same.append(w.path)
            if not np.isfinite(after).all():
                broken.append(w.path)
            w.assign(before)  # the next plan starts from the same weights
        elif not np.array_equal(after, before):
            moved.append(w.path)
    for what, paths in (("trainable variables did not change", same),
                        ("variables are not finite after the step", broken),
                        ("frozen variables changed", moved)):
        if paths:
            problems.append(f"{len(paths)} {what} (e.g. {paths[:3]})")
    return problems


def _backbones_job(out_path, *names):
    import keras

    report = {}
    for name in names:
        started = time.process_time()
        try:
            report[name] = {"problems": _check_backbone(name)}
        except Exception as err:  # reported by the backbone's own test
            report[name] = {"problems": [f"{type(err).__name__}: {err}"]}
        report[name]["cpu_seconds"] = round(time.process_time() - started, 2)
        keras.backend.clear_session()
        with open(out_path + ".tmp", "w") as f:
            json.dump(report, f)
        os.replace(out_path + ".tmp", out_path)


@pytest.mark.heavy
def test_tune_finetune_searches_the_space_and_resumes(tmp_path, capsys):
    """KerasTuner's oracle drives finetune: each trial an ordinary run; the same call resumes.

    One trial from Python, a second one by `zoo finetune --tune 2` on the same
    search (the CLI's own options reach finetune), then the Python call again:
    nothing retrains and the table is the same, best first."""
    import keras

    from zoo.cli import main

    data = str(tmp_path / "digits.npz")
    _tiny_digits(data)
    kwargs = dict(method="two_phase", head_epochs=1, epochs=1, input_size=8, batch_size=64,
                  directory=str(tmp_path / "search"))
    for bad, match in (({"unfreeze": 1}, "searched by tune_finetune"),
                       ({"tuner": "hyperband"}, "tuner"), ({"run_dir": "x"}, "sets run_dir")):
        with pytest.raises((ValueError, TypeError), match=match):
            transfer.tune_finetune("resnet20", "npz:" + data, **{**kwargs, **bad})
    # Bad input ends the search with its own error, not with N invalid trials.
    with pytest.raises(ValueError, match="File does not exist"):
        transfer.tune_finetune("resnet20", "npz:" + data + ".missing", max_trials=2,
                               **{**kwargs, "directory": str(tmp_path / "bad_search")})
    first = transfer.tune_finetune("resnet20", "npz:" + data, max_trials=1, **kwargs)
    assert [t["status"] for t in first.trials] == ["COMPLETED"]
    assert {"unfreeze", "lr_factor", "layer_decay", "test_accuracy"} <= set(first.best)
    config = json.load(open(os.path.join(first.best["run_dir"], "config.json")))
    assert config["finetune"]["lr_factor"] == first.best["lr_factor"]
    assert main(["finetune", "resnet20", "--data", "npz:" + data, "--tune", "2",
                 "--head-epochs", "1", "--epochs", "1", "--input-size", "8",
                 "--batch-size", "64", "--out", kwargs["directory"]]) == 0
    out = capsys.readouterr().out
    lines = out[out.index("trial"):].splitlines()
    assert lines[0].split()[:2] == ["trial", "unfreeze"] and len(lines) == 4, out
    result = transfer.tune_finetune("resnet20", "npz:" + data, max_trials=2, **kwargs)
    assert [t["status"] for t in result.trials] == ["COMPLETED"] * 2
    assert result.best == result.trials[0] and result.best["score"] >= result.trials[1]["score"]
    assert len({(t["unfreeze"], t["lr_factor"], t["layer_decay"]) for t in result.trials}) == 2
    assert [line.split()[0] for line in lines[1:3]] == [t["trial"] for t in result.trials]
    assert lines[-1] == f"best: {result.best['run_dir']} (zoo export {result.best['run_dir']})"
    assert json.load(open(os.path.join(result.directory, "finetune_trials.json")))["trials"]
    # The finished search: nothing retrains.
    stamps = [os.path.getmtime(os.path.join(t["run_dir"], "metrics.json")) for t in result.trials]
    again = transfer.tune_finetune("resnet20", "npz:" + data, max_trials=2, **kwargs)
    assert again.trials == result.trials
    assert [os.path.getmtime(os.path.join(t["run_dir"], "metrics.json"))
            for t in result.trials] == stamps
    keras.backend.clear_session()


def _steps(name):
    """One SGD step per plan for keras: probes, backbones up to 12M parameters and the
    smallest of each family; the larger ones (resnet34..152, the VGGs) are the same
    freeze code over more blocks of the same kinds: their trainable sets are checked."""
    from model_checks import fully_checked
    return name.startswith("keras:") or fully_checked(name, BACKBONES)


@pytest.mark.parametrize("name", BACKBONES + KERAS_PROBES)
def test_every_backbone_takes_a_step_in_each_method(name):
    import keras

    try:
        assert _check_backbone(name, step=_steps(name)) == []
    finally:
        keras.backend.clear_session()


if __name__ == "__main__":
    job, out, *rest = sys.argv[1:]
    {"backbones": _backbones_job, "phase2": _phase2_job}[job](out, *rest)
