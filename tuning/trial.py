"""One trial of a search: its record (zoo_trial.json), its callbacks, its result.

`tuning.tuners.ZooTuner.run_trial` runs a trial as KerasTuner's
`Tuner.run_trial` does (build with `_try_build`, fit through the hypermodel,
callbacks deep-copied by `_deepcopy_callbacks`, one fit per execution); what
differs, and why, is here:

* `TrialRecord`: what a trial trains and how it ended, rewritten after every
  epoch, so a running search is readable (`zoo tune DIR --report`) and a
  trial the oracle never heard of after a kill is not trained again;
* `EpochRecorder` + `AtomicBackupAndRestore`: a killed trial continues from
  its last completed epoch, its history whole (upstream issues 439, 702);
* `BestWeights` instead of KerasTuner's `SaveBestEpoch`, which writes the
  weights in place at every improving epoch: half a file after a kill, and
  a large model's writes cost more than a small model's epochs;
* `best_metrics` instead of KerasTuner's History-based averaging, which
  counts epochs from 0 in every fit (a resumed or Hyperband-continued trial
  starts later) and lets a NaN epoch win.
"""

import json
import math
import os
import statistics
import time

import keras

from tuning import results
from zoo import io as zio

COMPLETED = ("completed", "stopped_early")


def trial_seed(seed, trial_id, execution=0):
    """A trial's seed: a function of the search seed and the trial id only."""
    digits = "".join(c for c in str(trial_id) if c.isdigit()) or "0"
    return (int(seed) * 1_000_003 + int(digits) * 7_919 + execution * 104_729) % (2 ** 31 - 1)


def write_state(path, state):
    """Write a KerasTuner state file (or a history) atomically, in KerasTuner's own JSON.

    Upstream writes these in place; a kill during the write left half a file.
    """
    zio.write_text(path, json.dumps(state))


def classify_error(err, *, building):
    """The typed failure reason of an exception raised by a trial."""
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, MemoryError) or type(err).__name__ == "ResourceExhaustedError" or \
            "out of memory" in text.lower() or " OOM " in text:
        return "oom"
    if building and isinstance(err, (ValueError, TypeError)):
        return "invalid_config"
    return "error"


class TrialRecord:
    """A trial's zoo_trial.json: what it trains and how it ended (read by `tuning.results`).

    Written atomically at every change; `seconds` counts the time of earlier
    processes too, so a resumed trial keeps its time.

    Args:
        path: the record file.
    """

    def __init__(self, path):
        self.path = path
        self.previous = zio.read_json(path, default={})
        self.fields = {}
        self._seconds_before = float(self.previous.get("seconds", 0.0)) if self.previous else 0.0
        self._start = time.time()

    def earlier_result(self, objective):
        """(metrics, best epoch) if the trial finished before the process died, else None.

        Raises:
            keras_tuner.errors.FailedTrialError: it failed or was skipped then.
        """
        import keras_tuner as kt

        previous = self.previous
        if previous.get("status") in COMPLETED and \
                (previous.get("metrics") or {}).get(objective.name) is not None:
            return previous["metrics"], int(previous.get("best_epoch", 0))
        if previous.get("status") in ("failed", "skipped"):
            raise kt.errors.FailedTrialError(f"{previous.get('reason')}: "
                                             f"{previous.get('message')}")
        return None

    def update(self, **fields):
        self.fields.update(fields, seconds=self._seconds_before + time.time() - self._start)
        zio.write_json(self.path, self.fields)

    def fail(self, reason, message, **fields):
        """Record the failure; returns the `FailedTrialError` that reports it to the oracle."""
        import keras_tuner as kt

        # Skipped: not trained, and no failure of the model (over max_params, or no
        # time left in the search's budget: tuning.budget.SKIP_REASON).
        status = "skipped" if reason in ("max_params", "time_budget") else "failed"
        self.update(status=status, reason=reason, message=message, **fields)
        return kt.errors.FailedTrialError(f"{'skipped' if status == 'skipped' else reason}: "
                                          f"{message}")


def _floats(logs):
    out = {}
    for k, v in (logs or {}).items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def _finite(value):
    return value is not None and math.isfinite(value)


def nan_epoch(epochs_log):
    """(epoch, "loss" or "val_loss") of the first loss that is not finite, or None.

    A NaN/inf `val_loss` beside a finite training loss means the model
    outputs NaN/inf on some validation inputs: its accuracy there is still a
    number (argmax of NaN), so without this check such a trial could win.
    """
    return next(((e["epoch"], key) for e in epochs_log for key in ("loss", "val_loss")
                 if not _finite(e.get(key, 0.0))), None)


def curve(epochs_log, objective):
    return {str(e["epoch"]): e.get(objective.name) for e in epochs_log}


def best_metrics(executions, objective):
    """(metrics averaged over executions at each one's best epoch, best epoch of the first).

    (None, 0) when an execution has no finite objective.
    """
    bests = []
    for epochs_log in executions:
        candidates = [e for e in epochs_log if _finite(e.get(objective.name))]
        if not candidates:
            return None, 0
        best = candidates[0]
        for e in candidates[1:]:
            if objective.better_than(e[objective.name], best[objective.name]):
                best = e
        bests.append(best)
    keys = set.intersection(*(set(b) for b in bests)) - {"epoch", "seconds"}
    metrics = {k: float(statistics.fmean(b[k] for b in bests)) for k in keys
               if all(_finite(b[k]) for b in bests)}
    if objective.name not in metrics:
        return None, 0
    return metrics, int(bests[0]["epoch"])


def macs(model):
    try:
        from zoo.flops import count_macs
        return int(count_macs(model))
    except Exception:  # noqa: BLE001  (subclassed models have no static graph)
        return None


# ------------------------------------------------------------------ callbacks


class EpochRecorder(keras.callbacks.Callback):
    """Writes the trial's per-epoch logs to history.json after every epoch (atomically).

    Placed before `BackupAndRestore`, so an epoch is in the history no later
    than in the backup; the epochs from the one a resumed trial restarts at
    are dropped and recorded again, the earlier ones kept, so the curve
    covers the whole trial.
    """

    def __init__(self, path, on_epoch=None):
        super().__init__()
        self.path = path
        self.on_epoch = on_epoch
        self.epochs = []
        self._started = False

    def on_train_begin(self, logs=None):
        self._started = False
        self._t = time.time()
        # All of them if no epoch is left to run (the trial had finished its epochs).
        self.epochs = zio.read_json(self.path, default={}).get("epochs", [])

    def on_epoch_begin(self, epoch, logs=None):
        if not self._started:  # BackupAndRestore has restored the epoch by now
            self._started = True
            self.epochs = [e for e in self.epochs if e.get("epoch", 0) < epoch]

    def on_epoch_end(self, epoch, logs=None):
        now = time.time()
        self.epochs.append({"epoch": int(epoch), "seconds": now - self._t, **_floats(logs)})
        self._t = now
        write_state(self.path, {"epochs": self.epochs})
        if self.on_epoch is not None:
            self.on_epoch(self.epochs)


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose backup is replaced atomically (weights, then epoch).

    Keras writes latest.weights.h5 in place: a kill -9 during that write
    leaves a file that cannot be opened, and on the first epoch there is no
    previous copy to fall back to, so the resumed trial fails.  Here both
    files go through `zoo.io`.  A backup that still cannot be read is
    discarded (the execution starts again) instead of failing the trial.
    """

    def __init__(self, backup_dir):
        super().__init__(backup_dir, save_freq="epoch", double_checkpoint=False)

    # Backups are per epoch: Keras's default (no-op) batch hook, so that fit does
    # not call back into Python after every batch on this callback's account.
    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end

    def on_epoch_end(self, epoch, logs=None):
        # No backup after the last epoch: the trial is over (and the backup deleted) at once.
        if epoch + 1 < (self.params or {}).get("epochs", epoch + 2):
            super().on_epoch_end(epoch, logs)
        else:
            self._current_epoch = epoch + 1

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except (OSError, ValueError, KeyError) as err:
            print(f"note: the trial's backup cannot be read ({type(err).__name__}: {err}); "
                  f"starting this trial again from its first epoch", flush=True)
            results.remove_tree(self.backup_dir)
            self.model._initial_epoch = None

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        zio.atomic_write(self._weights_path,
                         lambda path: self.model.save_weights(filepath=path, overwrite=True),
                         suffix=".weights.h5")
        write_state(self._training_metadata_path,
                    {"epoch": self._current_epoch, "batch": self._last_batch_seen})


class BestWeights(keras.callbacks.Callback):
    """The weights of a trial's best epoch by the objective, written once, at the end.

    The best epoch's weights are kept in memory and written (atomically)
    when training ends, and only if `worth_keeping(value)` says the trial
    can be among those whose weights are kept (every trial under Hyperband,
    whose later rounds continue from them): writing a large model's weights
    at every improving epoch of every trial costs more than the epochs of
    a small one.  The value saved last is `saved`.
    """

    def __init__(self, path, objective, worth_keeping=None):
        super().__init__()
        self.path = path
        self.objective = objective
        self.worth_keeping = worth_keeping
        self.saved = None

    def on_train_begin(self, logs=None):
        self.best, self.weights = None, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.objective.name)
        if value is None or not math.isfinite(float(value)):
            return
        value = float(value)
        if self.best is None or self.objective.better_than(value, self.best):
            self.best, self.weights = value, self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.weights is None or (self.saved is not None and
                                    not self.objective.better_than(self.best, self.saved)):
            return
        if self.worth_keeping is not None and not self.worth_keeping(self.best):
            return
        self.model.set_weights(self.weights)
        zio.atomic_write(self.path, self.model.save_weights, suffix=".weights.h5")
        self.saved, self.weights = self.best, None


class MedianStopping(keras.callbacks.Callback):
    """Stop a trial whose best objective so far is worse than the completed trials' median.

    At epoch e (1-based, from `grace_epochs` on), with at least
    `min_trials` completed trials that reached epoch e, the trial stops if
    its best objective up to e is worse than the median of theirs
    (the median-stopping rule of Golovin et al. 2017, Google Vizier).
    """

    def __init__(self, curves, objective, *, min_trials=3, grace_epochs=2):
        super().__init__()
        self.curves = curves  # [{epoch: value}] of completed trials
        self.objective = objective
        self.min_trials = min_trials
        self.grace_epochs = grace_epochs
        self.best = None
        self.stopped_epoch = None

    def _best_up_to(self, curve, epoch):
        values = [v for e, v in curve.items() if e <= epoch and v is not None]
        if not values:
            return None
        return max(values) if self.objective.direction == "max" else min(values)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.objective.name)
        if value is not None and math.isfinite(float(value)):
            value = float(value)
            if self.best is None or self.objective.better_than(value, self.best):
                self.best = value
        if epoch + 1 < self.grace_epochs or self.best is None:
            return
        others = [self._best_up_to(c, epoch) for c in self.curves if max(c, default=-1) >= epoch]
        others = [v for v in others if v is not None]
        if len(others) < self.min_trials:
            return
        median = statistics.median(others)
        if self.objective.better_than(median, self.best):
            self.stopped_epoch = epoch
            self.model.stop_training = True
