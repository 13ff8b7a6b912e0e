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
