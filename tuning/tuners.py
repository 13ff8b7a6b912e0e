"""KerasTuner's own oracles and one `Tuner`, with the fixes a long search needs.

KerasTuner 1.4.8 does the searching (random, grid, Bayesian optimisation,
Hyperband oracles, unchanged algorithms) and the chief/worker protocol.
What this module changes around them:

* trial 0 is always the default point (the registered model with its
  recipe) under every oracle, not only grid search;
* `GridSearchOracle` saves its position, so grid search resumes (upstream
  issue 1055: it stops after a reload);
* a trial that was running when the process died continues from its last
  completed epoch (`BackupAndRestore` in the trial directory) instead of
  epoch 0 (upstream issues 439, 702); a trial that had finished but was not
  yet recorded by the oracle is not trained again;
* a trial that raises is recorded with a typed reason (`invalid_config`,
  `nan`, `oom`, `error`) and the search goes on; a model over `max_params`
  is `skipped` without training; only `max_consecutive_failed_trials`
  failures in a row (skips do not count) stop the search, and they stop it
  cleanly, naming the last error (KerasTuner raises from inside
  `end_trial`, holding the oracle's lock);
* a NaN loss fails the trial with reason `nan` (KerasTuner marks NaN scores
  INVALID and retries or counts them);
* every trial gets a seed derived from the search seed and its trial id;
* the median-stopping rule ends a trial whose best objective so far is worse
  than the median of the completed trials' at the same epoch;
* only the best few trials keep their weights (Hyperband also keeps those its
  open brackets may continue);
* oracle and trial state files are written atomically (a kill -9 during a
  save never leaves half a JSON file).
"""

import collections
import gc
import json
import math
import os
import statistics
import time
import traceback
import warnings

import keras
import keras_tuner as kt
from keras_tuner.src.engine import trial as trial_module

from tuning import results

FAILED = trial_module.TrialStatus.FAILED
RUNNING = trial_module.TrialStatus.RUNNING
STOPPED = trial_module.TrialStatus.STOPPED
COMPLETED = trial_module.TrialStatus.COMPLETED


def _atomic_json(path, obj):
    """Write JSON via a temporary file and a rename: a killed process never leaves half a file.

    (No fsync: a kill -9 loses no written page; only a power cut could.)
    """
    temporary = f"{path}.partial{os.getpid()}"
    with open(temporary, "w") as f:
        json.dump(obj, f)
    os.replace(temporary, path)


def trial_seed(seed, trial_id, execution=0):
    """A trial's seed: a function of the search seed and the trial id only."""
    digits = "".join(c for c in str(trial_id) if c.isdigit()) or "0"
    return (int(seed) * 1_000_003 + int(digits) * 7_919 + execution * 104_729) % (2 ** 31 - 1)


# ------------------------------------------------------------------ oracles


class _ZooOracle:
    """Mixin over a KerasTuner oracle (see the module docstring)."""

    zoo_stop_message = None

    def default_values(self):
        hps = self.get_space()
        values = {}
        for hp in hps.space:
            hps.values = dict(values)
            if hps.is_active(hp):
                values[hp.name] = hp.default
        return values

    def populate_space(self, trial_id):
        if self.zoo_stop_message:
            return {"status": STOPPED, "values": None}
        response = super().populate_space(trial_id)
        if not self.trials and response.get("status") == RUNNING and response.get("values"):
            # Trial 0: the registered model with its recipe (KerasTuner's hp defaults).
            tuner_values = {k: v for k, v in response["values"].items()
                            if k.startswith("tuner/")}
            response = dict(response, values={**self.default_values(), **tuner_values})
        return response

    def _trial_record(self, trial_id):
        path = os.path.join(self._project_dir, f"trial_{trial_id}", results.RECORD_FILE)
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def _check_consecutive_failures(self):
        limit = self.max_consecutive_failed_trials
        if not limit:
            return
        count, last = 0, None
        for trial_id in self.end_order:
            trial = self.trials[trial_id]
            if trial.status == FAILED:
                record = self._trial_record(trial_id)
                if record.get("status") == "skipped":
                    continue  # over max_params: not a failure, and not a success
                count += 1
                last = (trial_id, record)
            else:
                count = 0
            if count >= limit:
                trial_id, record = last
                reason = record.get("reason", "error")
                message = record.get("message") or (self.trials[trial_id].message or "")
                message = " ".join(str(message).split())[-500:]
                self.zoo_stop_message = (
                    f"search stopped: {count} consecutive trials failed "
                    f"(max_consecutive_failed_trials={limit}); last: trial {trial_id} "
                    f"({reason}): {message}")
                return

    @kt.synchronized
    def release_tuner(self, tuner_id):
        """Forget a worker that is gone; its running trial goes back to the queue (its id)."""
        self.tuner_ids.discard(tuner_id)
        trial = self.ongoing_trials.pop(tuner_id, None)
        if trial is None:
            return None
        if trial.trial_id not in self._retry_queue:
            self._retry_queue.append(trial.trial_id)
        self.save()
        return trial.trial_id

    def has_pending(self):
        return bool(self._retry_queue)

    # Atomic state files: a kill during a save never leaves half a JSON file.
    def save(self):
        _atomic_json(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial):
        path = os.path.join(self._get_trial_dir(trial.trial_id), "trial.json")
        _atomic_json(path, trial.get_state())


class RandomOracle(_ZooOracle, kt.oracles.RandomSearchOracle):
    pass


class BayesianOracle(_ZooOracle, kt.oracles.BayesianOptimizationOracle):
    pass


class HyperbandOracle(_ZooOracle, kt.oracles.HyperbandOracle):
    def open_trial_ids(self):
        """Trial ids the open brackets may still continue from."""
        ids = set()
        for bracket in self._brackets:
            for round_info in bracket["rounds"]:
                for info in round_info:
                    ids.update(v for v in (info.get("id"), info.get("past_id")) if v)
        return ids


class GridOracle(_ZooOracle, kt.oracles.GridSearchOracle):
    """Grid search that resumes: its position (upstream issue 1055) is part of the state."""

    def get_state(self):
        state = super().get_state()
        ordered = self._ordered_ids
        state["zoo_grid"] = {
            "memory": list(ordered._memory),
            "next_index": [[k, v] for k, v in ordered._next_index.items()],
            "last_index": ordered._last_index,
            "populate_next": list(self._populate_next),
        }
        return state

    def set_state(self, state):
        super().set_state(state)
        grid = state.get("zoo_grid")
        if not grid:
            return
        ordered = self._ordered_ids
        ordered._memory = list(grid["memory"])
        ordered._data_to_index = {d: i for i, d in enumerate(ordered._memory)}
        ordered._next_index = collections.defaultdict(lambda: None)
        ordered._next_index.update({k: v for k, v in grid["next_index"]})
        ordered._last_index = grid["last_index"]
        self._populate_next = list(grid["populate_next"])


ORACLES = {"random": RandomOracle, "bayesian": BayesianOracle, "hyperband": HyperbandOracle,
           "grid": GridOracle}


def make_oracle(tuner, *, objective, max_trials, max_epochs, seed, hyperparameters,
                max_consecutive_failed_trials, hyperband_factor=3, hyperband_iterations=1):
    common = dict(objective=objective, seed=seed, hyperparameters=hyperparameters,
                  max_retries_per_trial=0,
                  max_consecutive_failed_trials=max_consecutive_failed_trials)
    if tuner == "hyperband":
        oracle = HyperbandOracle(max_epochs=max_epochs, factor=hyperband_factor,
                                 hyperband_iterations=hyperband_iterations, **common)
        oracle.max_trials = max_trials  # KerasTuner's Hyperband has no cap; ours does
        return oracle
    return ORACLES[tuner](max_trials=max_trials, **common)


# ------------------------------------------------------------------ callbacks


class OneTrialDone(Exception):
    """A one-trial worker (`isolate`) has finished its trial."""


class SkipTrial(Exception):
    """The built model is over `max_params`: recorded as skipped, not trained."""


def _floats(logs):
    out = {}
    for k, v in (logs or {}).items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


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
        self.epochs = results.read_json(self.path, default={}).get("epochs", [])

    def on_epoch_begin(self, epoch, logs=None):
        if not self._started:  # BackupAndRestore has restored the epoch by now
            self._started = True
            self.epochs = [e for e in self.epochs if e.get("epoch", 0) < epoch]

    def on_epoch_end(self, epoch, logs=None):
        now = time.time()
        self.epochs.append({"epoch": int(epoch), "seconds": now - self._t, **_floats(logs)})
        self._t = now
        _atomic_json(self.path, {"epochs": self.epochs})
        if self.on_epoch is not None:
            self.on_epoch(self.epochs)


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose backup is replaced atomically (weights, then epoch).

    Keras writes latest.weights.h5 in place: a kill -9 during that write
    leaves a file that cannot be opened, and on the first epoch there is no
    previous copy to fall back to, so the resumed trial fails.  Here both
    files are written to temporary names and renamed over the old ones.  A
    backup that still cannot be read is discarded (the execution starts
    again) instead of failing the trial.
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
        weights = self._weights_path.replace(".weights.h5", ".partial.weights.h5")
        self.model.save_weights(filepath=weights, overwrite=True)
        metadata = f"{self._training_metadata_path}.partial"
        with open(metadata, "w") as f:
            json.dump({"epoch": self._current_epoch, "batch": self._last_batch_seen}, f)
        os.replace(weights, self._weights_path)
        os.replace(metadata, self._training_metadata_path)


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
        temporary = self.path.replace(".weights.h5", ".partial.weights.h5")
        self.model.save_weights(temporary)
        os.replace(temporary, self.path)
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


# ------------------------------------------------------------------ the tuner


def classify_error(err, *, building):
    """The typed failure reason of an exception raised by a trial."""
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, MemoryError) or type(err).__name__ == "ResourceExhaustedError" or \
            "out of memory" in text.lower() or " OOM " in text:
        return "oom"
    if building and isinstance(err, (ValueError, TypeError)):
        return "invalid_config"
    return "error"


class ZooTuner(kt.Tuner):
    """One `Tuner` for every oracle: trials through the zoo's training seam.

    Args:
        oracle: one of this module's oracles.
        hypermodel: a `tuning.hypermodel.ZooHyperModel`.
        settings: dict with seed, max_epochs, max_params, max_trials,
            early_stopping ("median" or None), keep_checkpoints, verbose,
            callbacks (extra Keras callbacks), tensorboard, worker.
        **kwargs: `keras_tuner.Tuner` arguments (directory, project_name, ...).
    """

    def __init__(self, oracle, hypermodel, *, settings, **kwargs):
        self.settings = dict(settings)
        super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)
        self._trial_seed = None
        self._trial_started = {}
        self._trials_run = 0
        self._asked_without_trial = False
        self._refreeze = False

    # The space is declared without building a model (KerasTuner builds one per
    # tuner construction to find conditional scopes; the zoo's spaces have none).
    def _populate_initial_space(self):
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def _try_build(self, hp):
        cached, self.hypermodel.first_model = self.hypermodel.first_model, None
        if cached is not None and not hp.values.get("tuner/trial_id") and cached[0] == {
                k: v for k, v in hp.values.items() if not k.startswith("tuner/")}:
            self._refreeze = True
            return cached[1]  # built (same seed) and checked before the search started
        keras.backend.clear_session()
        if self._refreeze and gc.get_freeze_count():
            # That model was alive when the search froze the heap (`frozen_gc`): thaw
            # once, so that it can be collected, and freeze again.
            gc.unfreeze()
            gc.collect()
            gc.freeze()
        else:
            gc.collect()
        self._refreeze = False
        if self._trial_seed is not None:
            keras.utils.set_random_seed(self._trial_seed)
        model = self._build_hypermodel(hp)
        if not isinstance(model, keras.Model):
            raise kt.errors.FatalTypeError(f"HyperModel.build returned {type(model).__name__}")
        return model

    def _build_hypermodel(self, hp):
        model = super()._build_hypermodel(hp)
        if "tuner/trial_id" in hp.values:
            # Hyperband: continue from the earlier round, optimizer state included (its
            # step count continues, and the schedule is sized for tuner/epochs from 0).
            optimizer = getattr(model, "optimizer", None)
            if optimizer is not None and not optimizer.built:
                optimizer.build(model.trainable_variables)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a GAN's two optimizers are not restored
                model.load_weights(self._get_checkpoint_fname(hp.values["tuner/trial_id"]))
        return model

    def save(self):
        """Oracle and tuner state, each file written atomically."""
        if not self._is_worker():
            self.oracle.save()
        _atomic_json(self._get_tuner_fname(), self.get_state())

    # ------------------------------------------------------------- paths, records

    def _record_path(self, trial_id):
        return os.path.join(self.get_trial_dir(trial_id), results.RECORD_FILE)

    def _write_record(self, trial_id, record):
        _atomic_json(self._record_path(trial_id), results.json_safe(record))

    def _worth_keeping(self, value):
        """Whether a trial scoring `value` may be among the `keep_checkpoints` best."""
        keep = self.settings.get("keep_checkpoints", 3)
        if keep is None or self.settings.get("tuner") == "hyperband":
            return True  # Hyperband continues from any of its trials' weights
        scores = [r["score"] for r in results.read_records(self.project_dir).values()
                  if r.get("status") in ("completed", "stopped_early")
                  and r.get("score") is not None]
        if len(scores) < keep:
            return True
        objective = self.oracle.objective
        scores.sort(reverse=objective.direction == "max")
        return objective.better_than(value, scores[keep - 1]) or value == scores[keep - 1]

    def _completed_curves(self, exclude):
        curves = []
        for record in results.read_records(self.project_dir).values():
            if record.get("trial_id") == exclude or record.get("status") not in (
                    "completed", "stopped_early"):
                continue
            curve = {int(e): v for e, v in (record.get("curve") or {}).items()}
            if curve:
                curves.append(curve)
        return curves

    # ------------------------------------------------------------- one trial

    def _run_and_update_trial(self, trial, *fit_args, **fit_kwargs):
        metrics, step = self.run_trial(trial, *fit_args, **fit_kwargs)
        self.oracle.update_trial(trial.trial_id, metrics, step=step)

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        trial_id = trial.trial_id
        objective = self.oracle.objective
        trial_dir = self.get_trial_dir(trial_id)
        previous = results.read_json(self._record_path(trial_id), default={})
        if previous.get("status") in ("completed", "stopped_early") and \
                previous.get("metrics", {}).get(objective.name) is not None:
            # Finished before the process died, but the oracle never heard: reuse it.
            return previous["metrics"], int(previous.get("best_epoch", 0))
        if previous.get("status") in ("failed", "skipped"):
            raise kt.errors.FailedTrialError(f"{previous.get('reason')}: "
                                             f"{previous.get('message')}")
        s = self.settings
        config = self.hypermodel.point(hp)
        epochs = int(hp.values.get("tuner/epochs", s["max_epochs"]))
        initial_epoch = int(hp.values.get("tuner/initial_epoch", 0))
        seconds_before = float(previous.get("seconds", 0.0)) if previous else 0.0
        start = time.time()
        record = {
            "trial_id": trial_id, "status": "running", "objective": objective.name,
            "direction": objective.direction, "hyperparameters": dict(hp.values),
            "model_kwargs": config.model_kwargs, "recipe": config.recipe.to_dict(),
            "registered_default": bool(config.pinned), "seed": trial_seed(s["seed"], trial_id),
            "epochs": epochs, "initial_epoch": initial_epoch,
            "started": previous.get("started") or time.strftime("%Y-%m-%dT%H:%M:%S"),
            "resumed": bool(previous), "seconds": seconds_before,
            "tuner_id": self.tuner_id,
        }
        self._write_record(trial_id, record)

        def progress(epochs_so_far):  # after every epoch: a resumed trial keeps its time
            record["seconds"] = seconds_before + time.time() - start
            record["epochs_run"] = len(epochs_so_far)
            self._write_record(trial_id, record)

        executions = []
        median = None
        checkpoint = BestWeights(self._get_checkpoint_fname(trial_id), objective,
                                 worth_keeping=self._worth_keeping)
        for execution in range(self.executions_per_trial):
            history_path = os.path.join(trial_dir, results.history_file(execution))
            self._trial_seed = trial_seed(s["seed"], trial_id, execution)
            self.hypermodel.new_trial()
            building = True
            try:
                model = self._try_build(hp)
                params = int(model.count_params())
                record["params"] = params
                record["macs"] = _macs(model)
                if s.get("max_params") and params > s["max_params"]:
                    raise SkipTrial(f"{params:,} parameters > max_params={s['max_params']:,}")
                building = False
                recorder = EpochRecorder(history_path, on_epoch=progress)
                callbacks = [recorder, AtomicBackupAndRestore(
                    os.path.join(trial_dir, f"backup{execution}")), checkpoint]
                if s.get("early_stopping") == "median":
                    median = MedianStopping(self._completed_curves(trial_id), objective,
                                            min_trials=s.get("median_min_trials", 3),
                                            grace_epochs=s.get("median_grace_epochs", 2))
                    callbacks.append(median)
                if s.get("tensorboard", True):
                    from zoo.callbacks import EpochTensorBoard
                    callbacks.append(EpochTensorBoard(
                        os.path.join(trial_dir, "logs", f"execution{execution}"),
                        profile_batch=0, write_graph=False))
                callbacks += self._deepcopy_callbacks(s.get("callbacks") or [])
                self.hypermodel.fit(hp, model, epochs=epochs, initial_epoch=initial_epoch,
                                    callbacks=callbacks, verbose=s.get("fit_verbose", 0))
            except SkipTrial as err:
                record.update(status="skipped", reason="max_params", message=str(err),
                              seconds=seconds_before + time.time() - start)
                self._write_record(trial_id, record)
                raise kt.errors.FailedTrialError(f"skipped: {err}") from None
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as err:  # noqa: BLE001  (recorded with its reason)
                reason = classify_error(err, building=building)
                record.update(status="failed", reason=reason,
                              message=f"{type(err).__name__}: {err}"[:2000],
                              traceback=traceback.format_exc()[-4000:],
                              seconds=seconds_before + time.time() - start)
                self._write_record(trial_id, record)
                raise kt.errors.FailedTrialError(f"{reason}: {type(err).__name__}: {err}") \
                    from None
            finally:
                model = None
            epochs_log = recorder.epochs
            if any(not math.isfinite(e.get("loss", 0.0)) for e in epochs_log):
                bad = next(e["epoch"] for e in epochs_log if not math.isfinite(e.get("loss", 0.0)))
                record.update(status="failed", reason="nan",
                              message=f"loss became NaN/inf at epoch {bad + 1}",
                              seconds=seconds_before + time.time() - start,
                              epochs_run=len(epochs_log), curve=_curve(epochs_log, objective))
                self._write_record(trial_id, record)
                raise kt.errors.FailedTrialError(f"nan: loss became NaN at epoch {bad + 1}")
            executions.append(epochs_log)

        metrics, best_epoch = _best_metrics(executions, objective)
        if metrics is None:
            record.update(status="failed", reason="nan",
                          message=f"no finite value of {objective.name} in any epoch",
                          seconds=seconds_before + time.time() - start)
            self._write_record(trial_id, record)
            raise kt.errors.FailedTrialError(f"nan: no finite {objective.name}")
        stopped = median is not None and median.stopped_epoch is not None
        record.update(status="stopped_early" if stopped else "completed", metrics=metrics,
                      score=metrics[objective.name], best_epoch=best_epoch,
                      epochs_run=len(executions[0]), curve=_curve(executions[0], objective),
                      seconds=seconds_before + time.time() - start,
                      finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        if stopped:
            record["message"] = (f"median stopping rule at epoch {median.stopped_epoch + 1}")
        self._write_record(trial_id, record)
        for execution in range(self.executions_per_trial):  # finished: backups not needed
            results.remove_tree(os.path.join(trial_dir, f"backup{execution}"))
        return metrics, best_epoch

    # ------------------------------------------------------------- progress, cleanup

    def pre_create_trial(self):
        if self.settings.get("one_trial") and self._trials_run:
            raise OneTrialDone()
        if self._asked_without_trial:
            time.sleep(0.5)  # the oracle answered IDLE: do not hammer it
        self._asked_without_trial = True

    def on_trial_begin(self, trial):
        self._asked_without_trial = False
        self._trials_run += 1
        self._trial_started[trial.trial_id] = time.time()
        if self.settings.get("verbose", 1):
            total = self.settings.get("max_trials") or "?"
            values = {k: v for k, v in trial.hyperparameters.values.items()
                      if not k.startswith("tuner/") or k == "tuner/epochs"}
            number = int("".join(c for c in trial.trial_id if c.isdigit()) or 0) + 1
            prefix = f"[{os.environ.get('KERASTUNER_TUNER_ID')}] " \
                if self.settings.get("worker") else ""
            print(f"{prefix}trial {trial.trial_id} ({number} of {total}): "
                  f"{results.format_values(values)}", flush=True)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        s = self.settings
        record = results.read_json(self._record_path(trial.trial_id), default={})
        if s.get("verbose", 1):
            name = self.oracle.objective.name
            if record.get("status") in ("completed", "stopped_early"):
                outcome = f"{name}={record['score']:.4f}"
                if record["status"] == "stopped_early":
                    outcome += f" (stopped early: {record.get('message')})"
            else:
                outcome = f"{record.get('status', 'failed')}: {record.get('reason', '')} " \
                          f"{record.get('message', trial.message or '')}"[:300]
            try:
                best = self.oracle.get_best_trials(1)
                best = [t for t in best if t.score is not None]
            except Exception:  # noqa: BLE001  (a progress line must not end the search)
                best = []
            best_text = f"; best {best[0].score:.4f} (trial {best[0].trial_id})" if best else ""
            print(f"  -> {outcome}, {record.get('epochs_run', 0)} epochs, "
                  f"{record.get('seconds', 0.0):.1f} s{best_text}", flush=True)
        if not s.get("worker"):
            cleanup_checkpoints(self.project_dir, self.oracle, keep=s.get("keep_checkpoints", 3))
            try:
                results.write_results(os.path.dirname(self.project_dir))
            except Exception as err:  # noqa: BLE001  (results are rewritten at the end)
                print(f"note: could not write the leaderboard yet: {err}", flush=True)


def _macs(model):
    try:
        from zoo.flops import count_macs
        return int(count_macs(model))
    except Exception:  # noqa: BLE001  (subclassed models have no static graph)
        return None


def _curve(epochs_log, objective):
    return {str(e["epoch"]): e.get(objective.name) for e in epochs_log}


def _best_metrics(executions, objective):
    """(metrics averaged over executions at each one's best epoch, best epoch of the first)."""
    bests, best_epoch = [], 0
    for i, epochs_log in enumerate(executions):
        candidates = [e for e in epochs_log if e.get(objective.name) is not None
                      and math.isfinite(e[objective.name])]
        if not candidates:
            return None, 0
        best = candidates[0]
        for e in candidates[1:]:
            if objective.better_than(e[objective.name], best[objective.name]):
                best = e
        bests.append(best)
        if i == 0:
            best_epoch = int(best["epoch"])
    keys = set.intersection(*(set(b) for b in bests)) - {"epoch", "seconds"}
    metrics = {k: float(statistics.fmean(b[k] for b in bests)) for k in keys
               if all(math.isfinite(b[k]) for b in bests)}
    if objective.name not in metrics:
        return None, 0
    return metrics, best_epoch


def cleanup_checkpoints(project_dir, oracle, *, keep=3):
    """Delete the weights of every trial but the best `keep` (and those Hyperband may continue)."""
    if keep is None:
        return
    try:
        trials = list(oracle.trials.values())
    except AttributeError:
        return
    done = [t for t in trials if t.status == COMPLETED and t.score is not None]
    reverse = oracle.objective.direction == "max"
    best = {t.trial_id for t in sorted(done, key=lambda t: t.score, reverse=reverse)[:keep]}
    protected = set(best) | {t.trial_id for t in trials if t.status == RUNNING}
    if hasattr(oracle, "open_trial_ids"):
        protected |= oracle.open_trial_ids()
    for t in trials:
        if t.trial_id in protected or t.status == RUNNING:
            continue
        path = os.path.join(project_dir, f"trial_{t.trial_id}", "checkpoint.weights.h5")
        if os.path.exists(path):
            os.remove(path)
