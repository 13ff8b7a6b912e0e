"""zoo.train: run directories, recipes, bad input, resume after interruption."""

import json
import os

import numpy as np
import pytest

import zoo.runs
from zoo import training
from zoo.registry import LOSSES, OPTIMIZERS
from zoo.tasks import loss_and_metrics


def _train(tmp_path, name="mlp", **kwargs):
    kwargs.setdefault("epochs", 2)
    kwargs.setdefault("export", False)
    kwargs.setdefault("verbose", 0)
    return training.train(name, run_dir=str(tmp_path / name), **kwargs)


def test_run_directory_contents(tmp_path):
    result = _train(tmp_path, epochs=3, model_kwargs={"hidden_units": (32,)})
    files = set(os.listdir(result.run_dir))
    assert {"config.json", "history.csv", "metrics.json", "curves.png", "model.keras",
            "checkpoints", "logs"} <= files
    assert "backup" not in files  # removed once the run finished
    assert not [f for f in files if "partial" in f]
    config = json.load(open(os.path.join(result.run_dir, "config.json")))
    assert config["model"] == "mlp" and config["num_classes"] == 10
    assert config["model_kwargs"] == {"hidden_units": [32]}
    assert result.history["epoch"] == [0.0, 1.0, 2.0]
    assert 0.5 < result.metrics["test_accuracy"] <= 1.0
    assert result.metrics["epochs_run"] == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, "epochs must be a positive integer. Received: epochs=0"),
    ({"batch_size": -4}, "batch_size must be a positive integer. Received: batch_size=-4"),
    ({"learning_rate": 0.0}, "learning_rate must be a positive finite number"),
    ({"learning_rate": float("nan")}, "learning_rate must be a positive finite number"),
    ({"optimizer": "sgdx"}, "optimizer must be one of"),
    ({"loss": "hinge"}, "loss must be one of"),
    ({"schedule": "linear"}, "schedule must be one of"),
    ({"strategy": "gpu_cluster"}, "strategy must be one of"),
    ({"model_kwargs": {"depth": 3}}, r"Unknown model argument\(s\) \['depth'\]"),
    ({"data": "imagenet"}, "Unknown dataset"),
    ({"seed": -1}, "seed must be a non-negative integer"),
])
def test_bad_arguments_raise_before_anything_is_written(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _train(tmp_path, **kwargs)
    assert not os.path.exists(tmp_path / "mlp")


def test_unknown_model_name(tmp_path):
    with pytest.raises(ValueError, match="Did you mean: mlp"):
        training.train("mpl", run_dir=str(tmp_path / "x"))


def test_existing_runs_are_never_clobbered(tmp_path):
    result = _train(tmp_path, epochs=1)
    before = {f: open(os.path.join(result.run_dir, f), "rb").read()
              for f in ("config.json", "metrics.json", "history.csv")}
    with pytest.raises(ValueError, match="already holds a finished run"):
        _train(tmp_path, epochs=1)
    after = {f: open(os.path.join(result.run_dir, f), "rb").read() for f in before}
    assert before == after
    other = tmp_path / "not_a_run"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds no run"):
        training.train("mlp", run_dir=str(other), epochs=1, export=False, verbose=0)
    assert (other / "notes.txt").read_text() == "keep me"
    again = _train(tmp_path, epochs=1, overwrite=True)
    assert again.metrics["epochs_run"] == 1


class Interrupted(Exception):
    pass


def _lock_is_free(run_dir):
    """Whether another holder could take run_dir's lock now (flock conflicts per open file)."""
    import fcntl

    with open(os.path.join(run_dir, zoo.runs.LOCK_FILE), "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def test_the_run_lifecycle_always_unlocks(tmp_path):
    run_dir = str(tmp_path / "run")
    with pytest.raises(Interrupted):
        with zoo.runs.open_run(run_dir) as run:
            assert run.created and not _lock_is_free(run_dir)
            raise Interrupted  # e.g. a bad argument found while planning
    assert not os.path.exists(run_dir)  # created here and left empty: removed again
    with pytest.raises(Interrupted):
        with zoo.runs.open_run(run_dir) as run:
            config = zoo.runs.RunConfig(model="mlp", input_shape=[64])
            run.claim(config, resumed=False)
            assert config.started and not _lock_is_free(run_dir)
            raise Interrupted  # e.g. a kill of fit: the claimed run stays to resume
    assert zoo.runs.read_config(run_dir).started == config.started
    assert _lock_is_free(run_dir)


def test_interrupted_run_resumes_from_backup(tmp_path):
    import keras

    class InterruptMidEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 2 and batch == 3:
                raise Interrupted("simulated crash in the middle of epoch 3")

    kwargs = dict(epochs=5, model_kwargs={"hidden_units": (16,)})
    with pytest.raises(Interrupted):
        _train(tmp_path, callbacks=[InterruptMidEpoch()], **kwargs)
    run_dir = tmp_path / "mlp"
    assert (run_dir / "backup").is_dir() and not (run_dir / "metrics.json").exists()
    assert zoo.runs.read_history(str(run_dir / "history.csv"))["epoch"] == [0.0, 1.0]

    with pytest.raises(ValueError, match="different configuration .*recipe"):
        _train(tmp_path, epochs=6, model_kwargs={"hidden_units": (16,)})

    result = _train(tmp_path, **kwargs)
    assert result.resumed
    assert result.history["epoch"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert not (run_dir / "backup").exists()


def test_an_interrupted_augmented_run_resumes_with_the_same_augmentation(tmp_path):
    """Interrupted after epoch 1 and resumed: the weights equal the uninterrupted run's."""
    import keras

    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise Interrupted("simulated crash at an epoch boundary")

    kwargs = dict(epochs=3, augment=("crop", "flip"), seed=1, deterministic=True,
                  model_kwargs={"hidden_units": (8,)})
    reference = training.train("mlp", run_dir=str(tmp_path / "reference"), export=False,
                               verbose=0, **kwargs)
    with pytest.raises(Interrupted):
        _train(tmp_path, callbacks=[StopAfterFirstEpoch()], **kwargs)
    resumed = _train(tmp_path, **kwargs)
    assert resumed.resumed
    assert resumed.history["loss"] == reference.history["loss"]
    for a, b in zip(resumed.model.get_weights(), reference.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_perceptron_is_binary(tmp_path):
    with pytest.raises(ValueError, match=r"one sigmoid output .* --classes"):
        _train(tmp_path, name="perceptron")
    result = _train(tmp_path, name="perceptron", classes=(0, 1), epochs=10)
    assert result.metrics["test_accuracy"] > 0.95


def test_regression_and_custom_model(tmp_path, rng):
    import keras
    x = rng.normal(size=(200, 3)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5], "float32"))[:, None]
    result = _train(tmp_path, name="mlp_regressor", data=(x, y), epochs=30,
                    learning_rate=0.01, model_kwargs={"hidden_units": (16,)})
    assert result.metrics["test_mae"] < 0.5
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)], name="linear")
    result = training.train(model, data=(x, y), task="regression", epochs=2, verbose=0,
                            run_dir=str(tmp_path / "custom"))
    assert "test_loss" in result.metrics
    card = json.load(open(os.path.join(result.run_dir, "model_card.json")))
    assert card["spec"]["family"] == "custom"
    assert card["exports"]["saved_model"]["max_abs_diff"] <= 1e-5


# name -> (class, momentum, nesterov) when built with momentum=0.8.
OPTIMIZER_CLASSES = {
    "sgd": ("SGD", 0.0, False), "momentum": ("SGD", 0.8, False),
    "nesterov": ("SGD", 0.8, True), "adam": ("Adam", None, None),
    "adamw": ("AdamW", None, None), "rmsprop": ("RMSprop", 0.8, None),
    "adagrad": ("Adagrad", None, None), "adadelta": ("Adadelta", None, None),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizers_by_name(name):
    assert set(OPTIMIZER_CLASSES) == set(OPTIMIZERS)
    kind, momentum, nesterov = OPTIMIZER_CLASSES[name]
    optimizer = training.make_optimizer(name, 0.01, momentum=0.8, weight_decay=1e-4)
    assert type(optimizer).__name__ == kind
    assert float(optimizer.learning_rate) == pytest.approx(0.01)
    assert optimizer.weight_decay == pytest.approx(1e-4)
    if momentum is not None:
        assert optimizer.momentum == pytest.approx(momentum)
    if nesterov is not None:
        assert optimizer.nesterov is nesterov
    plain = training.make_optimizer(name, 0.01)
    # No decay unless asked, except AdamW, whose point is decay (Keras's default 0.004).
    assert plain.weight_decay == (pytest.approx(0.004) if name == "adamw" else None)


# name -> (loss class, metric names)
LOSS_CLASSES = {
    "mse": ("MeanSquaredError", ["mae", "rmse"]),
    "mae": ("MeanAbsoluteError", ["rmse"]),
    "binary_crossentropy": ("BinaryCrossentropy", ["accuracy"]),
    "categorical_crossentropy": ("CategoricalCrossentropy", ["accuracy"]),
    "sparse_categorical_crossentropy": ("SparseCategoricalCrossentropy", ["accuracy"]),
}


@pytest.mark.parametrize("name", LOSSES)
def test_losses_by_name(name):
    import zoo

    assert set(LOSS_CLASSES) == set(LOSSES)
    kind, metric_names = LOSS_CLASSES[name]
    for activation, logits in (("softmax", False), (None, True)):
        model = zoo.build("mlp", input_shape=(4,), num_classes=3, hidden_units=(2,),
                          classifier_activation=activation)
        loss, metrics = loss_and_metrics(name, model=model, label_smoothing=0.1)
        assert type(loss).__name__ == kind
        assert [m.name for m in metrics] == metric_names
        if name.endswith("crossentropy"):
            assert loss.from_logits is logits, activation
        if name in ("binary_crossentropy", "categorical_crossentropy"):
            assert loss.label_smoothing == pytest.approx(0.1)
    assert loss_and_metrics(None, model=model) == (None, [])


def test_categorical_loss_one_hots_labels(tmp_path):
    result = _train(tmp_path, loss="categorical_crossentropy", epochs=1)
    assert "test_accuracy" in result.metrics


def test_jit_compile_and_mixed_precision_are_correct(tmp_path):
    # Correctness only: on this CPU both are slower than float32 without XLA.
    import keras
    result = _train(tmp_path, epochs=2, jit_compile=True, mixed_precision=True)
    assert np.isfinite(result.metrics["test_loss"])
    assert result.metrics["test_accuracy"] > 0.5
    assert keras.config.dtype_policy().name == "float32"  # restored afterwards


def test_evaluate_reloads_the_run(tmp_path):
    result = _train(tmp_path, epochs=2)
    metrics = training.evaluate(result.run_dir)
    assert metrics["test_accuracy"] == pytest.approx(result.metrics["test_accuracy"], abs=1e-6)


# MirroredStrategy on two logical CPU devices: tests/test_distribute.py.


def test_mixup_trains_on_soft_labels_with_a_categorical_loss(tmp_path):
    result = _train(tmp_path, name="lenet5", augment=("mixup",), epochs=1)
    assert result.bundle.one_hot_labels
    config = json.load(open(os.path.join(result.run_dir, "config.json")))
    assert config["loss"] == "categorical_crossentropy"
    assert np.isfinite(result.metrics["test_loss"]) and "test_accuracy" in result.metrics
    before = open(os.path.join(result.run_dir, "metrics.json")).read()
    with pytest.raises(ValueError, match=r"Unknown augmentation\(s\) \['blur'\]"):
        _train(tmp_path, name="lenet5", augment=("blur",), overwrite=True)
    # A bad argument found while loading data must not cost the existing run.
    assert open(os.path.join(result.run_dir, "metrics.json")).read() == before


class _Batches:
    """Records (epoch, batch) of every on_train_batch_end call."""

    def __new__(cls, aware):
        import keras

        class Batches(keras.callbacks.Callback):
            steps_per_execution_aware = aware

            def __init__(self):
                super().__init__()
                self.seen = []

            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_end(self, batch, logs=None):
                self.seen.append((self.epoch, batch))

        return Batches()


def test_steps_per_execution_auto_and_batch_callbacks(tmp_path):
    # Batch 32 pinned (the mlp recipe's is 128): several executions of 16 steps an epoch.
    kwargs = dict(epochs=2, batch_size=32, model_kwargs={"hidden_units": (16,)}, overwrite=True)
    plain = _train(tmp_path, **kwargs)
    steps = plain.bundle.train.cardinality().numpy()  # 41 batches of 32 on digits
    assert plain.model.steps_per_execution == min(32, steps)
    assert plain.history["epoch"] == [0.0, 1.0]
    # A callback with batch hooks of its own sees every batch (auto becomes 1) ...
    every = _Batches(aware=False)
    result = _train(tmp_path, callbacks=[every], **kwargs)
    assert result.model.steps_per_execution == 1
    assert every.seen == [(e, b) for e in (0, 1) for b in range(steps)]
    # ... unless it counts executions itself: then Keras calls it once per execution
    # with the execution's last step (the last one as if it were full).
    aware = _Batches(aware=True)
    recipe = zoo.registry.get_spec("mlp").recipe.replace(steps_per_execution=16)
    result = _train(tmp_path, callbacks=[aware], recipe=recipe, **kwargs)
    assert result.model.steps_per_execution == 16
    last = [b for b in range(15, steps + 15, 16)]
    assert aware.seen == [(e, b) for e in (0, 1) for b in last]
    with pytest.raises(ValueError, match="steps_per_execution must be a positive integer or "
                                         "'auto'. Received: steps_per_execution=0"):
        training.fit(_mlp_plan(), result.model, steps_per_execution=0)


def _mlp_plan():
    return training.plan("mlp", data="digits", epochs=1, model_kwargs={"hidden_units": (16,)})


def test_steps_per_execution_rule_follows_the_compute_per_step():
    import keras

    small = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    big = keras.Sequential([keras.Input((64, 64, 64)),
                            keras.layers.Conv2D(64, 3, padding="same")])  # 151M MACs / image
    choose = training.choose_steps_per_execution
    assert choose(small, batch_size=128) == training.MAX_STEPS_PER_EXECUTION
    assert choose(small, batch_size=128, steps_per_epoch=5) == 5
    assert choose(big, batch_size=128) == int(training.EXECUTION_MACS // (151_257_088 * 128))
    assert choose(big, batch_size=1024) == 1
    assert choose(small, batch_size=128, asked=7) == 7
    assert choose(small, batch_size=128, one_step=True) == 1


def test_ema_weights_are_evaluated_saved_and_reloaded(tmp_path):
    from zoo.registry import get_spec

    recipe = get_spec("mlp").recipe.replace(ema_momentum=0.9)
    result = _train(tmp_path, epochs=2, recipe=recipe, model_kwargs={"hidden_units": (16,)})
    model = result.model
    assert model.optimizer.use_ema
    # fit wrote the average into the model (finalize_variable_values)
    for average, weight in zip(model.optimizer._model_variables_moving_average,
                               model.trainable_weights):
        np.testing.assert_allclose(np.asarray(average), np.asarray(weight), atol=1e-6)
    # ... which the last validation measured, evaluation used and model.keras holds
    validation = model.evaluate(result.bundle.validation, verbose=0, return_dict=True)
    assert validation["loss"] == pytest.approx(result.history["val_loss"][-1], rel=1e-5)
    saved = zoo.runs.load_model(os.path.join(result.run_dir, "model.keras"))
    for a, b in zip(saved.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    again = training.evaluate(result.run_dir)
    assert again["test_accuracy"] == pytest.approx(result.metrics["test_accuracy"])


def test_tta_averages_the_image_and_its_mirror(digits_lenet_run):
    model = digits_lenet_run.model
    test = digits_lenet_run.bundle.test
    x = np.concatenate([np.asarray(b[0]) for b in test])
    y = np.concatenate([np.asarray(b[1]) for b in test])
    both = model.predict(x, verbose=0) + model.predict(x[:, :, ::-1], verbose=0)
    expected = float(np.mean(both.argmax(-1) == y))
    assert training.tta_accuracy(model, test) == pytest.approx(expected)
    run_plan = training.plan("lenet5", data="digits", epochs=1)
    metrics = training.evaluate_model(run_plan, model, tta=True)
    assert metrics["test_tta_accuracy"] == pytest.approx(expected)
    vectors = _mlp_plan()
    vectors.bundle.input_shape = (64,)
    with pytest.raises(ValueError, match="tta .* applies to classifiers of .* images"):
        training.evaluate_model(vectors, model, tta=True)


def test_label_smoothing_applies_to_integer_labels():
    import keras

    from zoo.losses import SmoothedSparseCategoricalCrossentropy

    labels = np.array([0, 2, 1, 2])
    logits = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    smoothed = SmoothedSparseCategoricalCrossentropy(0.1, from_logits=True)
    expected = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(
        np.eye(3)[labels], logits)
    assert float(smoothed(labels[:, None], logits)) == pytest.approx(float(expected), rel=1e-6)
    assert float(smoothed(labels, logits)) == pytest.approx(float(expected), rel=1e-6)
    run_plan = _mlp_plan()
    model = training.build_model(run_plan, recipe=run_plan.recipe.replace(label_smoothing=0.1))
    assert isinstance(model.loss, SmoothedSparseCategoricalCrossentropy)
    assert model.loss.label_smoothing == pytest.approx(0.1)
    # mlp's recipe smooths (0.1); without smoothing the loss is Keras's own.
    plain = training.build_model(run_plan, recipe=run_plan.recipe.replace(label_smoothing=0.0))
    assert type(plain.loss).__name__ == "SparseCategoricalCrossentropy"


def test_an_interrupted_ema_run_resumes_to_the_same_weights(tmp_path):
    import keras

    class StopAtEpochTwo(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise Interrupted("simulated crash at the start of epoch 3")

    recipe = zoo.registry.get_spec("mlp").recipe.replace(ema_momentum=0.9)
    kwargs = dict(epochs=3, recipe=recipe, deterministic=True,
                  model_kwargs={"hidden_units": (16,)})
    whole = training.train("mlp", run_dir=str(tmp_path / "whole"), export=False, verbose=0,
                           **kwargs)
    with pytest.raises(Interrupted):
        training.train("mlp", run_dir=str(tmp_path / "cut"), export=False, verbose=0,
                       callbacks=[StopAtEpochTwo()], **kwargs)
    resumed = training.train("mlp", run_dir=str(tmp_path / "cut"), export=False, verbose=0,
                             **kwargs)
    assert resumed.resumed  # the backup held the raw weights and their average
    for a, b in zip(whole.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_mixed_precision_is_chosen_for_the_model_and_the_machine(monkeypatch):
    choose = training._precision
    monkeypatch.setattr(training, "cpu_has_amx_bf16", lambda: True)
    assert choose(None, on_gpu=False, family="resnet") == "bfloat16"
    assert choose(None, on_gpu=False, family="wide_resnet") == "bfloat16"
    assert choose(None, on_gpu=False, family="lenet") is False  # measured: no gain
    assert choose(None, on_gpu=False, family=None) is False  # a user's model
    assert choose(None, on_gpu=True, family="lenet") == "float16"
    assert choose(False, on_gpu=False, family="resnet") is False
    assert choose(True, on_gpu=False, family="mlp") == "float16"
    assert choose("bfloat16", on_gpu=True, family="mlp") == "bfloat16"
    monkeypatch.setattr(training, "cpu_has_amx_bf16", lambda: False)
    assert choose(None, on_gpu=False, family="resnet") is False
    for bad in ("fp8", "mixed_bfloat16", 1):
        with pytest.raises(ValueError, match=r"mixed_precision must be .*Received: "
                                             r"mixed_precision="):
            training.plan("mlp", mixed_precision=bad)


def test_bfloat16_training_records_exports_and_reloads(tmp_path):
    import keras
    from zoo import runs
    result = _train(tmp_path, name="resnet20", epochs=1, mixed_precision="bfloat16",
                    export=True)
    assert np.isfinite(result.metrics["test_loss"])
    assert keras.config.dtype_policy().name == "float32"  # restored afterwards
    config = json.load(open(os.path.join(result.run_dir, "config.json")))
    assert config["mixed_precision"] == "bfloat16"
    assert runs.read_config(result.run_dir).mixed_precision == "bfloat16"
    _, model = runs.load_run(result.run_dir)
    assert model.layers[1].compute_dtype == "bfloat16" and model.outputs[0].dtype == "float32"
    # Served in float32 (LiteRT, ONNX and CPUs without AMX have no bfloat16
    # kernels), with the trained weights; the SavedModel was verified against it.
    from zoo import export
    served = export.float32_model(model)
    assert {layer.compute_dtype for layer in served.layers} == {"float32"}
    x = result.bundle.take_inputs("test", 8)
    np.testing.assert_allclose(served.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=0.05)
    card = json.load(open(os.path.join(result.run_dir, "model_card.json")))
    assert card["exports"]["saved_model"]["max_abs_diff"] < 1e-4
    if export.litert_available():  # a float32 graph converts as any other
        assert export.export_run(result.run_dir, ("tflite",))["tflite"]["max_abs_diff"] < 1e-4
