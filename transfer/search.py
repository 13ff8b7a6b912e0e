"""Tuning a fine-tuning: KerasTuner searches `unfreeze`, the phase-2 rate and layer decay.

    result = transfer.tune_finetune("runs/resnet20_fashion04", "npz:target.npz",
                                    max_trials=6, head_epochs=2, epochs=4)
    result.best["run_dir"]   # an ordinary run directory: zoo evaluate / zoo export

Each trial is one `transfer.finetune` call (its phases, callbacks, resume and
run directory) with the keyword arguments `finetune_space` draws from the
trial's hyperparameters; the search itself is KerasTuner's: its oracles
(the zoo's `tuning.tuners.make_oracle`, whose grid oracle keeps its position
across a restart) and its `BaseTuner` loop, whose `run_trial`
(`FinetuneTuner`) we implement.  KerasTuner's `Tuner` builds and fits one
Keras model per trial, which a multi-phase fine-tuning is not, so the trial
is ours while the search, its state file and resume are KerasTuner's.
Tuners whose oracle sets each trial's epochs (Hyperband) are refused: a
phase plan fixes them.

Resume: the same call on the same directory reloads the oracle; a trial
that was running when the process died gets the same trial id and
hyperparameters from KerasTuner, so its `finetune` resumes in the phase it
was in, and a trial that had finished its run is read back, not retrained.
"""

import dataclasses
import math
import os
from typing import Optional

import keras_tuner as kt

from tuning.oracles import FIXED_EPOCH_TUNERS
from zoo import checks, runs

# Every tuner whose trials train a fixed number of epochs (not Hyperband).
TUNERS = FIXED_EPOCH_TUNERS
RESULTS_FILE = "finetune_trials.json"
# `finetune` arguments the search sets for each trial.
PER_TRIAL = ("run_dir", "overwrite", "export", "verbose", "seed")


@dataclasses.dataclass
class FinetuneSearchResult:
    """What `tune_finetune` returns: one row per trial, best first, and the best row."""

    directory: str
    trials: list
    best: Optional[dict]


def _objective(objective):
    # The same parsing and default direction as `tuning.search`.
    from tuning.searcher import infer_direction, parse_objective
    name, direction = parse_objective(objective or "val_accuracy")
    return name, direction or infer_direction(name)


def _best(history, name, direction):
    values = [v for v in history.get(name, []) if v is not None and math.isfinite(v)]
    if not values:
        return None
    return min(values) if direction == "min" else max(values)


def _run_dir(project_dir, trial_id):
    # Inside KerasTuner's own trial folder (it writes trial.json there).
    return os.path.join(project_dir, f"trial_{trial_id}", "run")


class _BadInput(kt.errors.FatalError):
    """Carries a user error out of KerasTuner's loop (a FatalError ends the search)."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


class FinetuneTuner(kt.engine.base_tuner.BaseTuner):
    """KerasTuner's search loop with one `transfer.finetune` run per trial.

    Args:
        oracle: from `tuning.tuners.make_oracle`, over `finetune_space`.
        backbone: as for `transfer.finetune`.
        data: data source.
        stages: the backbone's stage count (the space of `unfreeze`).
        seed: every trial's training seed.
        verbose: Keras verbosity of each trial.
        finetune_kwargs: fixed `finetune` arguments.
        **kwargs: `BaseTuner` arguments (directory, project_name, overwrite).
    """

    def __init__(self, oracle, *, backbone, data, stages, seed, verbose, finetune_kwargs,
                 **kwargs):
        super().__init__(oracle, **kwargs)
        self.backbone, self.data, self.stages = backbone, data, stages
        self.seed, self.verbose, self.finetune_kwargs = seed, verbose, finetune_kwargs

    def run_trial(self, trial, *args, **kwargs):
        from transfer.finetuning import finetune, finetune_space

        name, direction = self.oracle.objective.name, self.oracle.objective.direction
        chosen = finetune_space(trial.hyperparameters, stages=self.stages)
        run_dir = _run_dir(self.project_dir, trial.trial_id)
        if runs.is_finished(run_dir):  # finished, then killed before the oracle heard
            history = runs.read_history(os.path.join(run_dir, runs.HISTORY_FILE))
        else:
            try:
                history = finetune(self.backbone, self.data, run_dir=run_dir, export=False,
                                   verbose=self.verbose, seed=self.seed,
                                   **self.finetune_kwargs, **chosen).history
            except (ValueError, TypeError) as err:
                # Bad input (a missing data file, ...) fails every trial alike:
                # end the search with the error instead of N invalid trials.
                raise _BadInput(err) from err
        value = _best(history, name, direction)
        if value is None:
            raise kt.errors.FailedTrialError(
                f"the fine-tuning's history has no finite {name!r} (has {sorted(history)})")
        return {name: value}

    def save_model(self, trial_id, model, step=0):
        """Nothing to save: each trial's run directory holds its model."""

    def load_model(self, trial):
        return runs.load_run(_run_dir(self.project_dir, trial.trial_id))[1]

    def rows(self):
        """One row per trial: best first (equal scores in trial order), unscored last."""
        from transfer.finetuning import finetune_space

        rows = []
        for trial in self.oracle.trials.values():
            run_dir = _run_dir(self.project_dir, trial.trial_id)
            row = {"trial": trial.trial_id, "status": trial.status, "score": trial.score,
                   **finetune_space(trial.hyperparameters, stages=self.stages),
                   "run_dir": run_dir}
            if runs.is_finished(run_dir):
                row.update({k: v for k, v in runs.read_json(
                    os.path.join(run_dir, runs.METRICS_FILE)).items() if k.startswith("test_")})
            rows.append(row)
        scored = [r for r in rows if r["score"] is not None]
        # Equal scores in trial order, so a reloaded search prints the same table.
        maximize = self.oracle.objective.direction == "max"
        scored.sort(key=lambda r: (-r["score"] if maximize else r["score"], r["trial"]))
        return scored + [r for r in rows if r["score"] is None]


def tune_finetune(backbone, data="digits", *, tuner="random", max_trials=6, objective=None,
                  directory=None, overwrite=False, seed=0, verbose=0, **finetune_kwargs):
    """Search `finetune`'s unfreeze / lr_factor / layer_decay with a KerasTuner oracle.

    Args:
        backbone: as for `transfer.finetune`.
        data: data source. Defaults to "digits".
        tuner: a name in `TUNERS` (the tuners whose trials train fixed epochs).
            Defaults to "random".
        max_trials: trials to run. Defaults to 6.
        objective: a metric of the fine-tuning's history, "name" or
            "name:min|max"; the best epoch's value scores the trial.
            Defaults to "val_accuracy" (max).
        directory: search directory (trial runs inside it). Defaults to
            "runs/tuning/<backbone>_finetune".
        overwrite: start the search afresh. Defaults to False (resume).
        seed: search seed (also every trial's training seed). Defaults to 0.
        verbose: Keras verbosity of each trial. Defaults to 0.
        **finetune_kwargs: fixed `finetune` arguments (method, weights,
            head_epochs, epochs, batch_size, ...); the searched ones
            (unfreeze, lr_factor, layer_decay) are refused here.

    Returns:
        A `FinetuneSearchResult`.
    """
    from transfer import backbones
    from transfer.finetuning import SPACE, finetune_space
    from tuning.tuners import make_oracle, without_trial_tracebacks

    checks.choice("tuner", tuner, TUNERS)
    max_trials = checks.positive_int("max_trials", max_trials)
    name, direction = _objective(objective)
    searched = sorted(set(finetune_kwargs) & set(SPACE))
    if searched:
        raise ValueError(f"{searched} are searched by tune_finetune; leave them out. "
                         f"Received: {', '.join(f'{k}={finetune_kwargs[k]!r}' for k in searched)}")
    for fixed in PER_TRIAL:
        if fixed in finetune_kwargs:
            raise TypeError(f"tune_finetune sets {fixed} for each trial. "
                            f"Received: {fixed}={finetune_kwargs[fixed]!r}")
    source = backbones.resolve(backbone, weights=finetune_kwargs.get("weights"),
                               weights_sha256=finetune_kwargs.get("weights_sha256"),
                               preprocessing=finetune_kwargs.get("preprocessing"))
    short = os.path.basename(os.path.normpath(source.name)).replace("keras:", "").lower()
    directory = os.path.abspath(directory or os.path.join("runs", "tuning", f"{short}_finetune"))

    if overwrite:  # KerasTuner's overwrite deletes the folder: only a search of ours
        runs.check_replaceable(directory, ("search",), argument="directory")
    stages = len(source.stages)
    hp = kt.HyperParameters()
    finetune_space(hp, stages=stages)  # declares the space, so grid and bayesian know it
    oracle = make_oracle(tuner, objective=kt.Objective(name, direction), max_trials=max_trials,
                         max_epochs=None, seed=seed, hyperparameters=hp,
                         max_consecutive_failed_trials=3)
    search = FinetuneTuner(oracle, backbone=backbone, data=data, stages=stages, seed=seed,
                           verbose=verbose, finetune_kwargs=finetune_kwargs,
                           directory=os.path.dirname(directory),
                           project_name=os.path.basename(directory), overwrite=overwrite)
    try:
        with without_trial_tracebacks():
            search.search()
    except _BadInput as err:
        raise err.error from None
    rows = search.rows()
    runs.write_json(os.path.join(search.project_dir, RESULTS_FILE),
                    {"objective": f"{name}:{direction}", "trials": rows})
    scored = [r for r in rows if r["score"] is not None]
    return FinetuneSearchResult(directory=search.project_dir, trials=rows,
                                best=scored[0] if scored else None)
