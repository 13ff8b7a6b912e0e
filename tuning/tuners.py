"""KerasTuner's own oracles and one `Tuner`, with the fixes a long search needs.

KerasTuner 1.4.8 does the searching (random, grid, Bayesian optimisation,
Hyperband oracles, unchanged algorithms; the list is `tuning.oracles.TABLE`)
and the chief/worker protocol.  What this module changes around them:

* trial 0 is always the default point (the registered model with its
  recipe) under every oracle, not only grid search; in a search over several
  models, trials 0, 1, ... are each model's default point in turn;
* a `time_budget` (`tuning.budget`): no trial starts that the rest of the
  budget cannot finish, and a trial stops after the epoch that leaves too
  little (KerasTuner counts trials, not time);
* `GridSearchOracle` saves its position, so grid search resumes (upstream
  issue 1055: it stops after a reload);
* a trial that was running when the process died continues from its last
  completed epoch (`tuning.trial`) instead of epoch 0 (upstream issues 439,
  702); a trial that had finished but was not yet recorded by the oracle is
  not trained again;
* a trial whose trial.json was written but whose oracle.json save a kill
  cut short is forgotten on reload and made again under its id (KerasTuner
  left it RUNNING forever and gave its values to the next trial id);
* KerasTuner's traceback print for every failed trial is off (its DEBUG
  flag): the zoo records the traceback in zoo_trial.json and a search
  without a completed trial ends in one line (`searcher.no_result_message`);
* a trial that raises is recorded with a typed reason (`invalid_config`,
  `nan`, `oom`, `error`) and the search goes on; a model over `max_params`
  is `skipped` without training; only `max_consecutive_failed_trials`
  failures in a row (skips do not count) stop the search, and they stop it
  cleanly, naming the last error (KerasTuner raises from inside
  `end_trial`, holding the oracle's lock);
* a NaN loss or validation loss fails the trial with reason `nan` (KerasTuner marks NaN scores
  INVALID and retries or counts them);
* every trial gets a seed derived from the search seed and its trial id;
* the median-stopping rule ends a trial whose best objective so far is worse
  than the median of the completed trials' at the same epoch;
* only the best few trials keep their weights (Hyperband also keeps those its
  open brackets may continue);
* oracle and trial state files are written atomically (`zoo.io`: a kill -9
  during a save never leaves half a JSON file).
"""

import collections
import contextlib
import dataclasses
import functools
import gc
import io
import os
import time
import traceback
import warnings
from typing import Optional

import keras
import keras_tuner as kt
from keras_tuner.src.engine import trial as trial_module

from tuning import budget, results
from tuning.oracles import TABLE
from tuning.trial import (AtomicBackupAndRestore, BestWeights, EpochRecorder, MedianStopping,
                          TrialRecord, best_metrics, classify_error, curve, macs, nan_epoch,
                          trial_seed, write_state)
from zoo import io as zio

FAILED = trial_module.TrialStatus.FAILED
RUNNING = trial_module.TrialStatus.RUNNING
STOPPED = trial_module.TrialStatus.STOPPED
COMPLETED = trial_module.TrialStatus.COMPLETED


# ------------------------------------------------------------------ oracles


class _ZooOracle:
    """Mixin over every KerasTuner oracle (see the module docstring)."""

    zoo_stop_message = None
    zoo_budget_message = None
    zoo_clock = None
    zoo_min_epochs = 1  # the fewest epochs a new trial trains (Hyperband: 1)

    def default_values(self, model=None):
        """The space's default point; `model`: that value of the "model" choice."""
        hps = self.get_space()
        values = {}
        for hp in hps.space:
            hps.values = dict(values)
            if hps.is_active(hp):
                values[hp.name] = model if (hp.name == "model" and model) else hp.default
        return values

    def model_choices(self):
        """The values of a multi-model search's "model" choice ([None] for one model)."""
        space = {hp.name: hp for hp in self.get_space().space}
        chosen = space.get("model")
        if chosen is None:
            return [None]
        return list(getattr(chosen, "values", None) or [chosen.value])

    def _budget_stop(self):
        clock = self.zoo_clock
        if clock is None or clock.budget_s is None:
            return None
        clock.save()
        records = {}
        if os.path.isdir(self._project_dir):
            records = results.read_records(self._project_dir)
        models = [m for m in self.model_choices() if m is not None] or [
            next((r.get("model") for r in records.values() if r.get("model")), None)]
        return clock.stop_reason(records, models, min_epochs=self.zoo_min_epochs)

    def populate_space(self, trial_id):
        if self.zoo_stop_message or self.zoo_budget_message:
            return {"status": STOPPED, "values": None}
        self.zoo_budget_message = self._budget_stop()
        if self.zoo_budget_message:
            return {"status": STOPPED, "values": None}
        response = super().populate_space(trial_id)
        models = self.model_choices()
        values = response.get("values")
        if len(self.trials) < len(models) and response.get("status") == RUNNING and values \
                and "tuner/trial_id" not in values:
            # Trial k < number of models: model k with its recipe (the hp defaults).
            tuner_values = {k: v for k, v in values.items() if k.startswith("tuner/")}
            response = dict(response, values={**self.default_values(models[len(self.trials)]),
                                              **tuner_values})
        return response

    def _trial_record(self, trial_id):
        path = os.path.join(self._project_dir, f"trial_{trial_id}", results.RECORD_FILE)
        return zio.read_json(path, default={})

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

    def reload(self):
        """KerasTuner's reload, forgetting a trial that a kill left half-created.

        `create_trial` writes the new trial's trial.json, then oracle.json.  A
        kill between the two (while oracle.json is saved) leaves a RUNNING
        trial that the oracle's state has never seen: not started, not
        ongoing, not queued for retry.  KerasTuner would keep it RUNNING
        forever and, its state being that from before the trial, hand the same
        hyperparameters to the next trial id.  Such a trial never trained (a
        trial is handed to a tuner only once oracle.json is saved), so it is
        forgotten and its trial.json removed: the next `create_trial` makes it
        again, under the same id and, with the same seed state, the same values.
        """
        super().reload()
        started = set(self.start_order) | set(self.end_order) | set(self._retry_queue)
        for trial_id in sorted(set(self.trials) - started):
            del self.trials[trial_id]
            folder = os.path.join(self._project_dir, f"trial_{trial_id}")
            for name in ("trial.json", results.RECORD_FILE):
                try:
                    os.remove(os.path.join(folder, name))
                except FileNotFoundError:
                    pass
            try:
                os.rmdir(folder)
            except OSError:
                pass  # not empty: something else lives there; left alone

    def save(self):
        write_state(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial):
        write_state(os.path.join(self._get_trial_dir(trial.trial_id), "trial.json"),
                    trial.get_state())


class HyperbandCheckpoints:
    """Hyperband fix: which trials' weights its open brackets may still continue from."""

    def open_trial_ids(self):
        ids = set()
        for bracket in self._brackets:
            for round_info in bracket["rounds"]:
                for info in round_info:
                    ids.update(v for v in (info.get("id"), info.get("past_id")) if v)
        return ids


class ResumableGrid:
    """Grid search fix: its position (upstream issue 1055) is part of the state."""

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


@functools.lru_cache(maxsize=None)
def oracle_class(tuner):
    """The oracle class of a `tuning.oracles.TABLE` row: the zoo's mixins over KerasTuner's."""
    kind = TABLE[tuner]
    fixes = (globals()[kind.fixes],) if kind.fixes else ()
    return type(f"Zoo{kind.oracle}", (_ZooOracle, *fixes, getattr(kt.oracles, kind.oracle)),
                {"__module__": __name__})


def make_oracle(tuner, *, objective, max_trials, max_epochs, seed, hyperparameters,
                max_consecutive_failed_trials, hyperband_factor=3, hyperband_iterations=1):
    """The oracle named `tuner` (a key of `tuning.oracles.TABLE`)."""
    common = dict(objective=objective, seed=seed, hyperparameters=hyperparameters,
                  max_retries_per_trial=0,
                  max_consecutive_failed_trials=max_consecutive_failed_trials)
    if TABLE[tuner].oracle_sets_epochs:
        oracle = oracle_class(tuner)(max_epochs=max_epochs, factor=hyperband_factor,
                                     hyperband_iterations=hyperband_iterations, **common)
        oracle.max_trials = max_trials  # KerasTuner's Hyperband has no cap; ours does
        return oracle
    return oracle_class(tuner)(max_trials=max_trials, **common)


# ------------------------------------------------------------------ the tuner


class OneTrialDone(Exception):
    """A one-trial worker (`isolate`) has finished its trial."""


@dataclasses.dataclass
class TunerSettings:
    """What a `ZooTuner` needs besides its oracle and hypermodel.

    Attributes:
        tuner: the `tuning.oracles.TABLE` name.
        clock: the search's `tuning.budget.Clock` (time budget and the
            wall-clock time every trial ends at), or None.
        seed: the search seed (every trial's seed derives from it).
        max_epochs: epochs of a trial whose oracle does not set them.
        max_trials: the budget's trials, for progress lines only.
        max_params: skip (without training) larger models.
        early_stopping: "median" or None.
        keep_checkpoints: keep the weights of this many best trials (None: all).
        verbose: 0 silent, 1 a line per trial.
        callbacks: extra Keras callbacks (deep-copied for every execution).
        tensorboard: TensorBoard logs per execution.
        worker: this tuner is a worker of a chief (the chief writes the results).
        one_trial: stop after one trial (`isolate`).
    """

    tuner: str
    seed: int = 0
    max_epochs: int = 1
    max_trials: Optional[int] = None
    max_params: Optional[int] = None
    early_stopping: Optional[str] = None
    keep_checkpoints: Optional[int] = 3
    verbose: int = 1
    callbacks: list = dataclasses.field(default_factory=list)
    tensorboard: bool = True
    worker: bool = False
    one_trial: bool = False
    clock: object = None
    median_min_trials: int = 3
    median_grace_epochs: int = 2


class ZooTuner(kt.Tuner):
    """One `Tuner` for every oracle: trials through the zoo's training seam.

    Args:
        oracle: from `make_oracle`.
        hypermodel: a `tuning.hypermodel.ZooHyperModel`.
        settings: a `TunerSettings`.
        **kwargs: `keras_tuner.Tuner` arguments (directory, project_name, ...).
    """

    def __init__(self, oracle, hypermodel, *, settings, **kwargs):
        self.settings = settings
        super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)
        self._trial_seed = None
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
        write_state(self._get_tuner_fname(), self.get_state())

    def _record_path(self, trial_id):
        return os.path.join(self.get_trial_dir(trial_id), results.RECORD_FILE)

    def _worth_keeping(self, value):
        """Whether a trial scoring `value` may be among the `keep_checkpoints` best."""
        keep = self.settings.keep_checkpoints
        if keep is None or TABLE[self.settings.tuner].oracle_sets_epochs:
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
            completed = {int(e): v for e, v in (record.get("curve") or {}).items()}
            if completed:
                curves.append(completed)
        return curves

    # ------------------------------------------------------------- one trial

    def _run_and_update_trial(self, trial, *fit_args, **fit_kwargs):
        # Upstream reads the best step off each fit's History, whose epochs count from
        # the fit's first one; run_trial returns the real epoch (see tuning.trial).
        metrics, step = self.run_trial(trial, *fit_args, **fit_kwargs)
        self.oracle.update_trial(trial.trial_id, metrics, step=step)

    def run_trial(self, trial, *args, **kwargs):
        """Train the trial's configuration; returns (metrics, best epoch)."""
        objective = self.oracle.objective
        record = TrialRecord(self._record_path(trial.trial_id))
        earlier = record.earlier_result(objective)
        if earlier is not None:
            return earlier
        hp = trial.hyperparameters
        config = self.hypermodel.point(hp)
        record.update(
            trial_id=trial.trial_id, status="running", objective=objective.name,
            direction=objective.direction, hyperparameters=dict(hp.values), model=config.model,
            model_kwargs=config.model_kwargs, recipe=config.recipe.to_dict(),
            registered_default=bool(config.pinned),
            seed=trial_seed(self.settings.seed, trial.trial_id),
            epochs=int(hp.values.get("tuner/epochs", self.settings.max_epochs)),
            initial_epoch=int(hp.values.get("tuner/initial_epoch", 0)),
            started=record.previous.get("started") or time.strftime("%Y-%m-%dT%H:%M:%S"),
            resumed=bool(record.previous), tuner_id=self.tuner_id)
        clock = self.settings.clock
        deadline = None
        if clock is not None and clock.budget_s is not None and not record.previous:
            records = results.read_records(self.project_dir)
            records.pop(trial.trial_id, None)
            epochs = record.fields["epochs"] - record.fields["initial_epoch"]
            why = clock.skip_reason(records, config.model, epochs)
            if why:
                raise record.fail(budget.SKIP_REASON, why,
                                  finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                                  search_seconds=round(clock.spent(), 1))
            deadline = budget.deadline_callback(clock, clock.reserve(records))
        elif clock is not None and clock.budget_s is not None:
            deadline = budget.deadline_callback(clock)
        checkpoint = BestWeights(self._get_checkpoint_fname(trial.trial_id), objective,
                                 worth_keeping=self._worth_keeping)
        executions = [self._execute(trial, execution, record, checkpoint, deadline)
                      for execution in range(self.executions_per_trial)]
        logs = [epochs for epochs, _ in executions]
        metrics, best_epoch = best_metrics(logs, objective)
        if metrics is None:
            raise record.fail("nan", f"no finite value of {objective.name} in any epoch")
        stopped_epoch = executions[-1][1]
        message = {} if stopped_epoch is None else {
            "message": f"median stopping rule at epoch {stopped_epoch + 1}"}
        if deadline is not None and deadline.stopped_epoch is not None:
            message = {"message": f"time budget: stopped after epoch {deadline.stopped_epoch + 1}"}
        record.update(status="completed" if not message else "stopped_early",
                      metrics=metrics, score=metrics[objective.name], best_epoch=best_epoch,
                      epochs_run=len(logs[0]), curve=curve(logs[0], objective),
                      finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                      search_seconds=round(clock.spent(), 1) if clock is not None else None,
                      **message)
        trial_dir = self.get_trial_dir(trial.trial_id)
        for execution in range(self.executions_per_trial):  # finished: backups not needed
            results.remove_tree(os.path.join(trial_dir, f"backup{execution}"))
        return metrics, best_epoch

    def _execute(self, trial, execution, record, checkpoint, deadline=None):
        """One fit of a trial; returns (per-epoch logs, the median rule's stop epoch or None).

        Raises:
            keras_tuner.errors.FailedTrialError: the failure, already recorded.
        """
        settings = self.settings
        hp = trial.hyperparameters
        trial_dir = self.get_trial_dir(trial.trial_id)
        self._trial_seed = trial_seed(settings.seed, trial.trial_id, execution)
        self.hypermodel.new_trial()
        building, model = True, None
        try:
            model = self._try_build(hp)
            params = int(model.count_params())
            record.fields.update(params=params, macs=macs(model))
            if settings.max_params and params > settings.max_params:
                raise record.fail("max_params",
                                  f"{params:,} parameters > max_params={settings.max_params:,}")
            building = False
            recorder = EpochRecorder(os.path.join(trial_dir, results.history_file(execution)),
                                     on_epoch=lambda epochs: record.update(epochs_run=len(epochs)))
            callbacks = [recorder,
                         AtomicBackupAndRestore(os.path.join(trial_dir, f"backup{execution}")),
                         checkpoint]
            median = None
            if settings.early_stopping == "median":
                median = MedianStopping(self._completed_curves(trial.trial_id),
                                        self.oracle.objective,
                                        min_trials=settings.median_min_trials,
                                        grace_epochs=settings.median_grace_epochs)
                callbacks.append(median)
            if deadline is not None:
                callbacks.append(deadline)
            if settings.tensorboard:
                from zoo.callbacks import EpochTensorBoard
                callbacks.append(EpochTensorBoard(
                    os.path.join(trial_dir, "logs", f"execution{execution}"),
                    profile_batch=0, write_graph=False))
            callbacks += self._deepcopy_callbacks(settings.callbacks)
            self.hypermodel.fit(hp, model, epochs=record.fields["epochs"],
                                initial_epoch=record.fields["initial_epoch"],
                                callbacks=callbacks, verbose=0)
        except (kt.errors.FailedTrialError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:  # noqa: BLE001  (recorded with its reason)
            raise record.fail(classify_error(err, building=building),
                              f"{type(err).__name__}: {err}"[:2000],
                              traceback=traceback.format_exc()[-4000:]) from None
        finally:
            model = None  # a failed trial's traceback must not hold its model
        bad = nan_epoch(recorder.epochs)
        if bad is not None:
            epoch, which = bad
            raise record.fail("nan", f"{which} became NaN/inf at epoch {epoch + 1}",
                              epochs_run=len(recorder.epochs),
                              curve=curve(recorder.epochs, self.oracle.objective))
        return recorder.epochs, None if median is None else median.stopped_epoch

    # ------------------------------------------------------------- progress, cleanup

    def pre_create_trial(self):
        if self.settings.one_trial and self._trials_run:
            raise OneTrialDone()
        if self._asked_without_trial:
            time.sleep(0.5)  # the oracle answered IDLE: do not hammer it
        self._asked_without_trial = True

    def on_trial_begin(self, trial):
        self._asked_without_trial = False
        self._trials_run += 1
        if self.settings.verbose:
            total = self.settings.max_trials or "?"
            values = {k: v for k, v in trial.hyperparameters.values.items()
                      if not k.startswith("tuner/") or k == "tuner/epochs"}
            number = int("".join(c for c in trial.trial_id if c.isdigit()) or 0) + 1
            prefix = f"[{os.environ.get('KERASTUNER_TUNER_ID')}] " if self.settings.worker else ""
            print(f"{prefix}trial {trial.trial_id} ({number} of {total}): "
                  f"{results.format_values(values)}", flush=True)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        if self.settings.verbose:
            self._print_outcome(trial)
        if not self.settings.worker:
            cleanup_checkpoints(self.project_dir, self.oracle,
                                keep=self.settings.keep_checkpoints)
            try:
                results.write_results(os.path.dirname(self.project_dir))
            except Exception as err:  # noqa: BLE001  (results are rewritten at the end)
                print(f"note: could not write the leaderboard yet: {err}", flush=True)

    def _print_outcome(self, trial):
        record = zio.read_json(self._record_path(trial.trial_id), default={})
        name = self.oracle.objective.name
        if record.get("status") in ("completed", "stopped_early"):
            outcome = f"{name}={record['score']:.4f}"
            if record["status"] == "stopped_early":
                outcome += f" (stopped early: {record.get('message')})"
        else:
            outcome = f"{record.get('status', 'failed')}: {record.get('reason', '')} " \
                      f"{record.get('message', trial.message or '')}"[:300]
        try:
            best = [t for t in self.oracle.get_best_trials(1) if t.score is not None]
        except Exception:  # noqa: BLE001  (a progress line must not end the search)
            best = []
        best_text = f"; best {best[0].score:.4f} (trial {best[0].trial_id})" if best else ""
        print(f"  -> {outcome}, {record.get('epochs_run', 0)} epochs, "
              f"{record.get('seconds', 0.0):.1f} s{best_text}", flush=True)


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


@contextlib.contextmanager
def frozen_gc():
    """Leave the objects alive before the search out of every trial's `gc.collect`.

    KerasTuner collects garbage before each trial (models are cyclic); with
    TensorFlow loaded a full collection walks ~400k long-lived objects (about
    0.5 s a trial here).  `gc.freeze` moves them to a permanent generation for
    the search, and `gc.unfreeze` returns them afterwards.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def make_tuner(prepared, *, verbose=1, callbacks=None, tensorboard=True, worker=False,
               one_trial=False):
    """The `ZooTuner` of a `tuning.searcher.PreparedSearch` (reloads KerasTuner's state)."""
    from zoo.distribute import get_strategy

    config = prepared.config
    objective = config["objective"]
    oracle = make_oracle(
        config["tuner"], objective=kt.Objective(objective["name"], objective["direction"]),
        max_trials=config["max_trials"], max_epochs=config["max_epochs"],
        seed=config["seed"] + 1, hyperparameters=prepared.fixed,
        max_consecutive_failed_trials=config["max_consecutive_failed_trials"],
        hyperband_factor=config["hyperband_factor"])
    oracle.verbose = 0
    clock = prepared.clock or budget.Clock(prepared.directory, config.get("time_budget"),
                                           retrain=bool(config.get("retrain_best")))
    oracle.zoo_clock = clock
    if not TABLE[config["tuner"]].oracle_sets_epochs:
        oracle.zoo_min_epochs = config["max_epochs"]
    settings = TunerSettings(clock=clock, 
        tuner=config["tuner"], seed=config["seed"], max_epochs=config["max_epochs"],
        max_params=config["max_params"], max_trials=config["budget"]["trials"],
        early_stopping=config["early_stopping"], keep_checkpoints=config["keep_checkpoints"],
        verbose=verbose, callbacks=list(callbacks or []), tensorboard=tensorboard,
        worker=worker, one_trial=one_trial)
    strategy = prepared.plan.strategy
    with contextlib.redirect_stdout(io.StringIO()):  # KerasTuner's "Reloading Tuner from ..."
        return ZooTuner(oracle, prepared.hypermodel, settings=settings,
                        directory=prepared.directory, project_name=results.PROJECT,
                        overwrite=False, executions_per_trial=config["executions_per_trial"],
                        distribution_strategy=get_strategy(strategy) if strategy else None)


@contextlib.contextmanager
def without_trial_tracebacks():
    """KerasTuner's DEBUG flag off for a block.

    KerasTuner prints every failed trial's traceback while that flag is on (its
    default); the traceback is still recorded (the trial's `message` in
    trial.json, and the zoo's zoo_trial.json), and the zoo reports a search's
    outcome in one line (`searcher.no_result_message`).
    """
    from keras_tuner.src import config as kt_config

    debug, kt_config.DEBUG = kt_config.DEBUG, False
    try:
        yield
    finally:
        kt_config.DEBUG = debug


def run_trials(tuner):
    """`tuner.search` with the heap frozen; a one-trial worker's end is not an error."""
    try:
        with frozen_gc(), without_trial_tracebacks():
            tuner.search(verbose=0)
    except OneTrialDone:
        pass
