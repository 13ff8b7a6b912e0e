"""Shared training callbacks and learning-rate schedules.

`standard_callbacks(run_dir, ...)` composes Keras's own callbacks (early
stopping, checkpoint, BackupAndRestore, TerminateOnNaN, CSV log, TensorBoard,
ReduceLROnPlateau); `make_schedule(name, ...)` turns a schedule name into a
Keras `LearningRateSchedule` (or a float), usable from Python and the CLI.
"""

import os
import time

import keras
import numpy as np

from zoo import checks, plots
from zoo import io as zio
from zoo.registry import SCHEDULES
from zoo.schedules import OneCycle


def make_schedule(name, learning_rate, *, total_steps, warmup_fraction=0.05,
                  step_boundaries=(0.5, 0.75), step_factor=0.1, final_fraction=0.01):
    """A learning-rate schedule by name.

    Args:
        name: one of "constant", "step", "exponential", "cosine",
            "warmup_cosine", "one_cycle" (`OneCycle`: 30% warm-up from a
            25th of the peak, then cosine down to 1e-4 of it),
            "reduce_on_plateau" (a constant rate that the
            `ReduceLROnPlateau` callback from `standard_callbacks` lowers).
        learning_rate: initial (peak, for warmup_cosine) learning rate.
        total_steps: number of optimizer steps in the whole run.
        warmup_fraction: share of steps spent warming up linearly from 0
            (warmup_cosine). Defaults to 0.05.
        step_boundaries: fractions of training where "step" multiplies the
            rate by `step_factor`. Defaults to (0.5, 0.75) (He et al. 2015).
        step_factor: Defaults to 0.1.
        final_fraction: "exponential" decays to this fraction of the initial
            rate at the last step. Defaults to 0.01.

    Returns:
        A float (constant rates) or a `keras.optimizers.schedules.LearningRateSchedule`.
    """
    checks.choice("schedule", name, SCHEDULES)
    learning_rate = checks.positive_float("learning_rate", learning_rate)
    total_steps = checks.positive_int("total_steps", total_steps)
    schedules = keras.optimizers.schedules
    if name in ("constant", "reduce_on_plateau"):
        return learning_rate
    if name == "step":
        boundaries = sorted({max(1, int(total_steps * f)) for f in step_boundaries})
        values = [learning_rate * step_factor ** i for i in range(len(boundaries) + 1)]
        return schedules.PiecewiseConstantDecay(boundaries, values)
    if name == "exponential":
        return schedules.ExponentialDecay(learning_rate, decay_steps=total_steps,
                                          decay_rate=final_fraction)
    if name == "cosine":
        return schedules.CosineDecay(learning_rate, decay_steps=total_steps)
    if name == "one_cycle":
        return OneCycle(learning_rate, total_steps)
    warmup = max(1, int(total_steps * warmup_fraction))
    return schedules.CosineDecay(0.0, decay_steps=max(1, total_steps - warmup),
                                 warmup_target=learning_rate, warmup_steps=warmup)


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint` that never leaves a half-written file behind.

    Keras writes the checkpoint in place, so a crash during the save would
    destroy the previous best model; this saves to a temporary file in the
    same folder and renames it over the target.
    """

    def _save_model(self, epoch, batch, logs):
        final = self.filepath
        # Keras picks the format from the file's ending, so the temporary name keeps it.
        suffix = ".weights.h5" if final.endswith(".weights.h5") else os.path.splitext(final)[1]
        temporary = zio.temporary_path(final, suffix=suffix)
        self.filepath = temporary
        try:
            super()._save_model(epoch, batch, logs)
            if os.path.exists(temporary):  # Keras saves only an improved model
                zio.replace(temporary, final)
        finally:
            self.filepath = final
            if os.path.lexists(temporary):
                os.remove(temporary)


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """`TensorBoard` that writes once per epoch and costs nothing per batch.

    With `update_freq="epoch"` Keras's callback still calls
    `summary.scalar` for every batch's logs (not recorded, but about 0.4 ms
    each: 5% of a LeNet-5 step on this CPU); this one skips those calls and
    keeps the rest (graph, profiling, epoch summaries).
    """

    steps_per_execution_aware = True

    def __init__(self, log_dir, **kwargs):
        super().__init__(log_dir, update_freq="epoch", **kwargs)

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs=None)


def standard_callbacks(run_dir, *, monitor="val_loss", patience=10, schedule="constant",
                       checkpoint=True, backup=True, backup_freq="epoch", csv_log=True,
                       tensorboard=True, terminate_on_nan=True, plateau_factor=0.1,
                       plateau_patience=3, resume=False, ema=False):
    """The callbacks every `zoo.train` run uses.

    Args:
        run_dir: the run directory (checkpoints/, backup/, history.csv, logs/), or
            None for the in-memory callbacks only (a tuning trial): then no
            checkpoint, backup, CSV log or TensorBoard is written.
        monitor: quantity for early stopping, ReduceLROnPlateau and the best
            checkpoint, or None: no early stopping or plateau schedule, and the
            checkpoint keeps the latest epoch. Defaults to "val_loss".
        patience: early-stopping patience in epochs, or None to disable. Defaults to 10.
        schedule: schedule name; "reduce_on_plateau" adds `ReduceLROnPlateau`.
            Defaults to "constant".
        checkpoint: keep the best model in checkpoints/best.keras. Defaults to True.
        backup: `BackupAndRestore` into backup/ so an interrupted run resumes.
            Defaults to True.
        backup_freq: "epoch" or a number of batches. Defaults to "epoch".
        csv_log: append epochs to history.csv. Defaults to True.
        tensorboard: write TensorBoard logs to logs/. Defaults to True.
        terminate_on_nan: stop on a NaN loss. Defaults to True.
        plateau_factor: ReduceLROnPlateau factor. Defaults to 0.1.
        plateau_patience: ReduceLROnPlateau patience. Defaults to 3.
        resume: continue history.csv rather than start it. Defaults to False.
        ema: the optimizer keeps a moving average of the weights (`use_ema`):
            validation, early stopping and the checkpoint use it (`EMAWeights`).
            Defaults to False.
    """
    checks.choice("schedule", schedule, SCHEDULES)
    checks.positive_int("patience", patience, allow_none=True)
    if run_dir is None:
        checkpoint = backup = csv_log = tensorboard = False
    callbacks = []
    if terminate_on_nan:
        callbacks.append(keras.callbacks.TerminateOnNaN())
    if backup:
        # Placed early so that it restores weights and the epoch counter before
        # the other callbacks start.
        # The backup outlives fit: `zoo.training.save_run` deletes it only once
        # model.keras and metrics.json are on disk, so a kill between the last
        # epoch and the end of the run resumes instead of retraining.
        callbacks.append(keras.callbacks.BackupAndRestore(
            os.path.join(run_dir, "backup"), save_freq=backup_freq, double_checkpoint=True,
            delete_checkpoint=False))
    averaged = EMAWeights() if ema else None
    if averaged is not None:
        callbacks.append(averaged)  # after the backup, before what judges the weights
    if patience and monitor:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, patience=patience, restore_best_weights=True))
    if schedule == "reduce_on_plateau" and monitor:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, factor=plateau_factor, patience=plateau_patience))
    if checkpoint:
        os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
        callbacks.append(AtomicModelCheckpoint(
            os.path.join(run_dir, "checkpoints", "best.keras"), monitor=monitor or "loss",
            save_best_only=bool(monitor)))
    if csv_log:
        callbacks.append(keras.callbacks.CSVLogger(os.path.join(run_dir, "history.csv"),
                                                   append=resume))
    if tensorboard:
        callbacks.append(EpochTensorBoard(os.path.join(run_dir, "logs"), profile_batch=0,
                                          write_graph=False))
    if averaged is not None:
        # After early stopping; `zoo.training.fit` moves it after the others too.
        callbacks.append(EMAWeights.Finalize(averaged))
    if backup:
        # Last, so that it restores the others' state after their on_train_begin reset it.
        callbacks.append(CallbackState(os.path.join(run_dir, "backup"), callbacks[:]))
    return callbacks


class RemainingTime(keras.callbacks.Callback):
    """After each epoch but the last, one line: the time the remaining epochs take at
    the pace so far (printed only once that is at least `min_seconds`).

    Keras's progress bar estimates the current epoch only, and the one-line-per-
    epoch mode nothing at all; a 30-epoch run wants the whole. Early stopping
    can end the run sooner, so it is an upper estimate.
    """

    def __init__(self, min_seconds=60.0, print_fn=print, clock=time.monotonic):
        super().__init__()
        self.min_seconds, self.print_fn, self.clock = min_seconds, print_fn, clock
        self._start = self._first = None

    def on_train_begin(self, logs=None):
        self._start, self._first = self.clock(), None

    def on_epoch_begin(self, epoch, logs=None):
        if self._first is None:
            self._first = epoch  # a resumed run starts past 0

    def on_epoch_end(self, epoch, logs=None):
        total = (self.params or {}).get("epochs")
        if not total or self._start is None or self._first is None:
            return
        done, left = epoch + 1 - self._first, total - (epoch + 1)
        if done <= 0 or left <= 0:
            return
        seconds = (self.clock() - self._start) / done * left
        if seconds >= self.min_seconds:
            self.print_fn(f"epoch {epoch + 1}/{total}: about {_duration(seconds)} left "
                          f"at this pace")


class ExecutionProgbar(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, never past the epoch's step count.

    With `steps_per_execution=k`, Keras reports the last step an execution
    could reach (begin + k - 1), so the last execution of an epoch whose step
    count k does not divide reads e.g. "128/100" until the epoch's line is
    finalised; this one stops at the epoch's steps.
    """

    def _update_progbar(self, batch, logs=None):
        if self.target is not None:
            batch = min(batch, self.target - 1)
        super()._update_progbar(batch, logs)


class EMAWeights(keras.callbacks.SwapEMAWeights):
    """The moving average of the weights is what validation and the epoch-end callbacks see.

    With an optimizer made with `use_ema=True`, Keras's `SwapEMAWeights`
    swaps the averaged weights in for validation and (swap_on_epoch) for the
    callbacks after it at the end of an epoch, and back at the next epoch's
    start; `fit` then ends with `optimizer.finalize_variable_values`, which
    writes the average into the model.  Two things are added here:

    - place it after `BackupAndRestore`, so a backup holds the raw weights
      with their average (a resumed run continues exactly) while early
      stopping and the best checkpoint that follow it see the average;
    - `EMAWeights.Finalize`, the last callback (`finalize_last`): when something
      stops training before its last epoch (a time budget, a user's
      callback), Keras's callback does not prepare the final write and the
      raw weights would end in the model; it makes the average equal to the
      model's (averaged) weights then.  Early stopping's best weights are
      averaged ones too: it reads them while the average is swapped in.
    """

    def __init__(self):
        super().__init__(swap_on_epoch=True)

    def on_train_begin(self, logs=None):
        self._ema_weights_in_model = False

    class Finalize(keras.callbacks.Callback):
        """See `EMAWeights`: the last callback of a run with an averaged model."""

        def __init__(self, ema):
            super().__init__()
            self.ema = ema

        def on_epoch_end(self, epoch, logs=None):
            if self.model.stop_training and self.ema._ema_weights_in_model:
                # Keras's own last-epoch step (SwapEMAWeights.on_epoch_end).
                self.ema._finalize_ema_values()


def finalize_last(callbacks):
    """`callbacks` with `EMAWeights.Finalize` moved to the end (it must see `stop_training`
    as every other callback left it)."""
    callbacks = list(callbacks)
    last = [c for c in callbacks if isinstance(c, EMAWeights.Finalize)]
    return [c for c in callbacks if not isinstance(c, EMAWeights.Finalize)] + last


def needs_every_batch(callback):
    """Whether `callback` has batch hooks written for one step per call.

    Keras's own callbacks count batches under `steps_per_execution` (they are
    called once per execution with the execution's last step); a callback
    from elsewhere that overrides a training batch hook is taken to want
    every batch, unless it sets `steps_per_execution_aware = True`.
    KerasTuner's `TunerCallback` needs every batch only where the tuner
    overrides `on_batch_begin`/`on_batch_end`.
    """
    if getattr(callback, "steps_per_execution_aware", False):
        return False
    if type(callback).__name__ == "TunerCallback" and hasattr(callback, "tuner"):
        # KerasTuner's forwards every batch to its tuner, whose batch hooks do
        # nothing unless a tuner class overrides them.
        from keras_tuner import Tuner
        return any(getattr(type(callback.tuner), hook) is not getattr(Tuner, hook)
                   for hook in ("on_batch_begin", "on_batch_end"))
    base = keras.callbacks.Callback
    for hook in ("on_batch_begin", "on_batch_end", "on_train_batch_begin",
                 "on_train_batch_end"):
        method = getattr(type(callback), hook, None)
        if method is None or method is getattr(base, hook):
            continue
        if not getattr(method, "__module__", "").startswith("keras."):
            return True
    return False


def _duration(seconds):
    """'45 s', '12 min', '2 h 05 min'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60:02d} min"


class CallbackState(keras.callbacks.Callback):
    """Backs up and restores the state of the other callbacks, next to `BackupAndRestore`.

    Keras's `BackupAndRestore` restores weights, optimizer and the epoch
    counter, but not the callbacks' own state, so after a resume early
    stopping forgot how long it had waited and what its best value was, and
    the best checkpoint accepted a worse model than the one it held.  This
    callback writes that state (EarlyStopping, ModelCheckpoint,
    ReduceLROnPlateau) to backup/callbacks.json after every epoch, atomically,
    and puts it back at the start of a resumed `fit`; early stopping's best
    weights come back from checkpoints/best.keras.  It also keeps the
    state of the model's random layers (Dropout's `SeedGenerator`s), which
    `save_weights` leaves out: without it a resumed run drew other dropout
    masks than the uninterrupted one and ended with other weights.

    Args:
        backup_dir: the BackupAndRestore directory.
        callbacks: the callbacks whose state is kept.
    """

    FIELDS = {"EarlyStopping": ("wait", "best", "best_epoch", "stopped_epoch"),
              "ModelCheckpoint": ("best",),
              "ReduceLROnPlateau": ("wait", "best", "cooldown_counter")}

    def __init__(self, backup_dir, callbacks):
        super().__init__()
        self.backup_dir = backup_dir
        self.callbacks = list(callbacks)
        self.path = os.path.join(backup_dir, "callbacks.json")

    def _kind(self, callback):
        for cls in type(callback).__mro__:
            if cls.__name__ in self.FIELDS:
                return cls.__name__
        return None

    def on_train_begin(self, logs=None):
        if not os.path.exists(self.path):
            return
        state = zio.read_json(self.path)
        restore_seed_states(self.model, state.get("seed_generators"))
        for index, callback in enumerate(self.callbacks):
            kind = self._kind(callback)
            saved = state.get(str(index))
            if kind is None or not saved or saved.get("kind") != kind:
                continue
            for field in self.FIELDS[kind]:
                if field in saved and saved[field] is not None:
                    setattr(callback, field, saved[field])
            if kind == "EarlyStopping" and callback.restore_best_weights:
                best = os.path.join(os.path.dirname(self.backup_dir), "checkpoints",
                                    "best.keras")
                if os.path.exists(best):
                    from zoo.runs import load_model
                    callback.best_weights = load_model(best).get_weights()

    def on_epoch_end(self, epoch, logs=None):
        state = {}
        for index, callback in enumerate(self.callbacks):
            kind = self._kind(callback)
            if kind:
                state[str(index)] = {"kind": kind, **{
                    field: _plain(getattr(callback, field, None)) for field in self.FIELDS[kind]}}
        state["seed_generators"] = seed_states(self.model)
        os.makedirs(self.backup_dir, exist_ok=True)
        zio.write_json(self.path, state)


def _seed_generators(model):
    """{layer path/index: SeedGenerator} of every random layer in `model` (nested ones too)."""
    found = {}
    if model is None:
        return found
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for index, generator in enumerate(getattr(layer, "_seed_generators", None) or ()):
            found[f"{getattr(layer, 'path', layer.name)}/{index}"] = generator
    return found


def seed_states(model):
    """{layer path/index: state as a list} of `model`'s random layers, JSON-ready."""
    return {key: np.asarray(generator.state.value).tolist()
            for key, generator in _seed_generators(model).items()}


def restore_seed_states(model, states):
    """Put back what `seed_states` recorded (layers it does not name are left as they are)."""
    generators = _seed_generators(model)
    for key, value in (states or {}).items():
        if key in generators:
            variable = generators[key].state
            variable.assign(np.asarray(value, dtype=variable.dtype))


def _plain(value):
    """A JSON-ready number (callback state holds numpy and tensor scalars)."""
    if value is None:
        return None
    try:
        return float(value) if not isinstance(value, int) else value
    except (TypeError, ValueError):
        return None


class SampleGrid(keras.callbacks.Callback):
    """Keras callback: a PNG grid of reconstructions and/or samples after each epoch.

    Writes `run_dir/samples/epoch_NNN.png` atomically (`zoo.plots`), so a
    viewer never sees a half-written file; with
    `latent_data` and a 2-D VAE also `run_dir/latent_space.png` at the end.

    Args:
        run_dir: the run directory.
        images: fixed inputs to reconstruct, or None. Defaults to None.
        num_samples: samples per grid from a fixed latent batch (VAE/GAN);
            0 for none. Defaults to 8.
        value_range: data range, (0, 1) or (-1, 1) for tanh GANs. Defaults to (0, 1).
        every: write every `every` epochs. Defaults to 1.
        latent_data: (x, y) for the 2-D latent plot, or None. Defaults to None.
        seed: seed of the fixed latent batch. Defaults to 0.
    """

    def __init__(self, run_dir, *, images=None, num_samples=8, value_range=(0.0, 1.0), every=1,
                 latent_data=None, seed=0):
        super().__init__()
        self.run_dir = os.fspath(run_dir)
        self.images = None if images is None else np.asarray(images)
        self.num_samples = checks.non_negative_int("num_samples", num_samples)
        self.value_range = tuple(value_range)
        self.every = checks.positive_int("every", every)
        self.latent_data = latent_data
        self.seed = seed
        self.written = []

    def on_train_begin(self, logs=None):
        self.written = []
        self._latents = None
        if self.num_samples:
            dim = getattr(self.model, "latent_dim", None)
            if dim:
                rng = np.random.default_rng(self.seed)
                self._latents = rng.standard_normal((self.num_samples, dim)).astype("float32")

    def _rows(self):
        rows = []
        if self.images is not None:
            rows.append(("input", self.images))
            rows.append(("reconstruction", np.asarray(self.model(self.images, training=False))))
        if self._latents is not None:
            part = getattr(self.model, "generator", None) or getattr(self.model, "decoder")
            classes = getattr(self.model, "num_classes", None)
            if classes:  # conditional GAN: labels 0, 1, ... cycling over the classes
                labels = (np.arange(len(self._latents)) % classes).astype("int32")
                images = np.asarray(part([self._latents, labels], training=False))
                width, label = min(classes, 10), f"labels 0..{min(classes, 10) - 1}"
            else:
                images = np.asarray(part(self._latents, training=False))
                width, label = 8, "sample"
            # Rows of at most `width` images keep the grid readable.
            rows += [(label, images[i:i + width]) for i in range(0, len(images), width)]
        return rows

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        path = os.path.join(self.run_dir, "samples", f"epoch_{epoch + 1:03d}.png")
        plots.save_image_grid(self._rows(), path, value_range=self.value_range,
                              title=f"{self.model.name}, epoch {epoch + 1}")
        self.written.append(path)

    def on_train_end(self, logs=None):
        if self.latent_data is not None and getattr(self.model, "latent_dim", None) == 2 \
                and hasattr(self.model, "encode"):
            x, y = self.latent_data
            plots.save_latent_plot(self.model, x, y, os.path.join(self.run_dir, "latent_space.png"))
