"""LR schedules by name, the standard callbacks, early stopping, atomic checkpoints."""

import os

import numpy as np
import pytest

from zoo.callbacks import make_schedule, standard_callbacks

LR = 0.1


def _at(schedule, step):
    return float(schedule(step)) if callable(schedule) else float(schedule)


@pytest.mark.parametrize("name, step, expected", [
    ("constant", 70, LR),
    ("reduce_on_plateau", 70, LR),
    ("step", 0, LR), ("step", 50, LR), ("step", 60, LR * 0.1), ("step", 90, LR * 0.01),
    ("exponential", 0, LR), ("exponential", 50, LR * 0.1), ("exponential", 100, LR * 0.01),
    ("cosine", 0, LR), ("cosine", 50, LR / 2), ("cosine", 100, 0.0),
    ("warmup_cosine", 0, 0.0), ("warmup_cosine", 5, LR), ("warmup_cosine", 100, 0.0),
])
def test_schedule_values(name, step, expected):
    schedule = make_schedule(name, LR, total_steps=100)
    assert _at(schedule, step) == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_warmup_is_linear():
    schedule = make_schedule("warmup_cosine", LR, total_steps=1000)  # 50 warmup steps
    assert _at(schedule, 25) == pytest.approx(LR / 2, rel=1e-4)


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "linear"}, "schedule must be one of"),
    ({"learning_rate": 0.0}, "learning_rate must be a positive"),
    ({"total_steps": 0}, "total_steps must be a positive integer"),
])
def test_schedule_bad_input(kwargs, message):
    args = {"name": "cosine", "learning_rate": LR, "total_steps": 10, **kwargs}
    name = args.pop("name")
    with pytest.raises(ValueError, match=message):
        make_schedule(name, **args)


def test_standard_callbacks_compose_keras_callbacks(tmp_path):
    import keras
    callbacks = standard_callbacks(str(tmp_path), schedule="reduce_on_plateau", patience=3)
    kinds = {type(c).__name__ for c in callbacks}
    assert {"TerminateOnNaN", "BackupAndRestore", "EarlyStopping", "ReduceLROnPlateau",
            "AtomicModelCheckpoint", "CSVLogger", "EpochTensorBoard"} <= kinds
    assert all(isinstance(c, keras.callbacks.Callback) for c in callbacks)
    none = standard_callbacks(str(tmp_path), patience=None, checkpoint=False, backup=False,
                              csv_log=False, tensorboard=False, terminate_on_nan=False)
    assert none == []


def test_early_stopping_stops_and_checkpoint_is_atomic(tmp_path):
    import keras
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 20)).astype("float32")
    y = rng.integers(0, 4, size=256)  # random labels: validation loss cannot keep improving
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(4, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    callbacks = standard_callbacks(str(tmp_path), patience=2, tensorboard=False)
    history = model.fit(x, y, validation_split=0.25, epochs=100, verbose=0,
                        callbacks=callbacks)
    assert len(history.epoch) < 100
    best = int(np.argmin(history.history["val_loss"]))
    assert len(history.epoch) == best + 1 + 2  # stopped `patience` epochs after the best
    files = os.listdir(tmp_path / "checkpoints")
    assert files == ["best.keras"]  # no partial files left behind
    restored = keras.saving.load_model(tmp_path / "checkpoints" / "best.keras")
    np.testing.assert_allclose(restored.predict(x[:8], verbose=0),
                               model.predict(x[:8], verbose=0), atol=1e-6)
    # The backup outlives fit (a kill before the run is finished resumes);
    # finishing the run directory removes it.
    assert os.path.exists(tmp_path / "backup" / "callbacks.json")
    from zoo import runs
    runs.finish_run_dir(str(tmp_path))
    assert not os.path.exists(tmp_path / "backup")


def test_no_monitor_keeps_the_latest_epoch(tmp_path):
    callbacks = standard_callbacks(str(tmp_path), monitor=None, patience=3,
                                   schedule="reduce_on_plateau", tensorboard=False)
    kinds = [type(c).__name__ for c in callbacks]
    assert "EarlyStopping" not in kinds and "ReduceLROnPlateau" not in kinds
    checkpoint = next(c for c in callbacks if type(c).__name__ == "AtomicModelCheckpoint")
    assert not checkpoint.save_best_only


def test_tensorboard_writes_epoch_summaries(tmp_path):
    import keras
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    callbacks = standard_callbacks(str(tmp_path), patience=None, checkpoint=False,
                                   backup=False, csv_log=False)
    model.fit(x, x[:, :1], validation_split=0.25, epochs=2, verbose=0, callbacks=callbacks)
    for split in ("train", "validation"):
        events = os.listdir(tmp_path / "logs" / split)
        assert events and all(e.startswith("events.out.tfevents") for e in events)


def test_remaining_time_is_the_pace_so_far_times_the_epochs_left():
    from zoo.callbacks import RemainingTime, _duration

    lines, now = [], [0.0]
    callback = RemainingTime(min_seconds=60, print_fn=lines.append, clock=lambda: now[0])
    callback.set_params({"epochs": 10, "verbose": 2, "steps": 5})
    callback.on_train_begin()
    for epoch in (3, 4, 5, 8, 9):  # a run resumed at epoch 3 (0-based)
        callback.on_epoch_begin(epoch)
        now[0] += 40.0 if epoch < 8 else 1.0
        callback.on_epoch_end(epoch)
    # After epoch 4 (1-based): 40 s per epoch x 6 left = 240 s; after 5: 40 x 5 = 200 s;
    # after 6: 40 x 4 = 160 s; after 9: 121 s / 6 epochs x 1 left < 60 s, silent;
    # nothing after the last.
    assert lines == ["epoch 4/10: about 4 min left at this pace",
                     "epoch 5/10: about 3 min left at this pace",
                     "epoch 6/10: about 3 min left at this pace"]
    assert [_duration(s) for s in (45, 89, 90, 3000, 7500)] == [
        "45 s", "89 s", "2 min", "50 min", "2 h 05 min"]


def test_one_cycle_rises_then_anneals_far_below_the_start():
    import keras

    schedule = make_schedule("one_cycle", LR, total_steps=100)  # 30 steps up, 70 down
    values = [_at(schedule, step) for step in range(0, 121, 10)]
    assert values[0] == pytest.approx(LR / 25, rel=1e-5)
    assert values[3] == pytest.approx(LR, rel=1e-5)  # the peak at 30% of the steps
    assert all(a < b for a, b in zip(values[:3], values[1:4]))  # rising
    assert all(a > b for a, b in zip(values[3:10], values[4:11]))  # falling
    assert values[10] == pytest.approx(LR * 1e-4, rel=1e-3) == values[12]  # held at the end
    assert _at(schedule, 65) == pytest.approx(LR * (1 + 1e-4) / 2, rel=1e-4)  # cosine midpoint
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule))
    assert type(restored).__name__ == "OneCycle" and _at(restored, 42) == _at(schedule, 42)
    with pytest.raises(ValueError, match="warmup_fraction must be a number in"):
        type(schedule)(LR, 100, warmup_fraction=1.5)


def test_batch_callbacks_written_for_one_step_are_told_apart():
    import keras

    from zoo.callbacks import EpochTensorBoard, needs_every_batch

    class PerBatch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    class PerEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            pass

    class Aware(PerBatch):
        steps_per_execution_aware = True

    assert needs_every_batch(PerBatch())
    assert not needs_every_batch(PerEpoch()) and not needs_every_batch(Aware())
    keras_own = [keras.callbacks.TerminateOnNaN(), keras.callbacks.ProgbarLogger(),
                 keras.callbacks.BackupAndRestore("unused", save_freq=5),
                 EpochTensorBoard("unused")]
    assert not any(needs_every_batch(c) for c in keras_own)
    import keras_tuner
    from keras_tuner.src.engine.tuner_utils import TunerCallback

    class BatchTuner(keras_tuner.RandomSearch):
        def on_batch_end(self, trial, model, batch, logs=None):
            pass

    plain, watching = (object.__new__(cls) for cls in (keras_tuner.RandomSearch, BatchTuner))
    assert not needs_every_batch(TunerCallback(plain, trial=None))
    assert needs_every_batch(TunerCallback(watching, trial=None))


def test_progress_bar_stops_at_the_epochs_steps():
    from zoo.callbacks import ExecutionProgbar

    progbar = ExecutionProgbar()
    progbar.set_params({"verbose": 2, "epochs": 1, "steps": 10})
    progbar.on_epoch_begin(0)
    progbar.on_train_batch_end(7)  # steps 0-7 of an execution of 8
    assert progbar.seen == 8
    progbar.on_train_batch_end(15)  # Keras reports 15 for the last execution's 2 steps
    assert progbar.seen == 10


def _ema_fit(tmp_path, callbacks=(), **kwargs):
    import keras
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 20)).astype("float32")
    y = rng.integers(0, 4, size=256)  # random labels: early stopping ends the run
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(4, activation="softmax")])
    model.compile(keras.optimizers.Adam(use_ema=True, ema_momentum=0.9),
                  "sparse_categorical_crossentropy")
    from zoo.callbacks import finalize_last
    callbacks = finalize_last(standard_callbacks(str(tmp_path), tensorboard=False, ema=True,
                                                 **kwargs) + list(callbacks))
    history = model.fit(x, y, validation_split=0.25, epochs=100, verbose=0,
                        callbacks=callbacks).history
    return model, history, model.evaluate(x[192:], y[192:], verbose=0)


def test_ema_weights_are_what_early_stopping_and_the_checkpoint_keep(tmp_path):
    import keras

    model, history, loss = _ema_fit(tmp_path, patience=2)
    best = int(np.argmin(history["val_loss"]))
    assert len(history["val_loss"]) == best + 3 < 100
    # Validation measured the average; early stopping kept the best epoch's
    # average, and the best checkpoint holds the same weights.
    assert loss == pytest.approx(history["val_loss"][best], rel=1e-5)
    restored = keras.saving.load_model(tmp_path / "checkpoints" / "best.keras")
    for saved, kept in zip(restored.get_weights(), model.get_weights()):
        np.testing.assert_allclose(saved, kept, atol=1e-6)


def test_ema_weights_stay_when_another_callback_stops_training(tmp_path):
    import keras

    class StopAfterTwo(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = epoch == 1

    model, history, loss = _ema_fit(tmp_path, [StopAfterTwo()], patience=None, backup=False,
                                    checkpoint=False, csv_log=False)
    assert len(history["val_loss"]) == 2
    assert loss == pytest.approx(history["val_loss"][-1], rel=1e-5)  # the average, not the raw
    for average, weight in zip(model.optimizer._model_variables_moving_average,
                               model.trainable_weights):
        np.testing.assert_allclose(np.asarray(average), np.asarray(weight), atol=1e-6)
