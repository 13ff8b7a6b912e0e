"""`search`: a KerasTuner search over a registered model; `retrain_best`; `load_search`.

    import tuning
    result = tuning.search("mlp", data="digits", tuner="random", max_trials=10, max_epochs=10)
    result.best_hyperparameters, result.rows[:3]
    run = tuning.retrain_best(result.directory)     # an ordinary run directory

Arguments are checked before TensorFlow loads where possible, and every bad
input (tuner, objective, limits, space overrides, grid over a continuous
range, an existing search with another configuration) is refused before
anything is written.  Running the same call again resumes the search in its
directory; see `tuning.tuners` for what resuming guarantees.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import time
import warnings
from typing import Optional

from tuning import budget as budget_module
from tuning import distributed, results
from tuning import space as space_module
from tuning.errors import SearchError, SearchFailed
from tuning.oracles import TABLE, TUNERS
from zoo import io as zio
from zoo import runs

EARLY_STOPPING = ("auto", "median", None)
# search() keywords that go to `zoo.training.plan` unchanged.
PLAN_OPTIONS = ("model_kwargs", "data_options", "classes", "strategy", "deterministic",
                "jit_compile", "mixed_precision", "loss", "validation_split", "test_split")
# Recipe fields a caller may fix for the whole search (they leave the space).
FIXED_RECIPE_OPTIONS = ("batch_size", "optimizer", "learning_rate", "schedule", "weight_decay",
                        "augment")
# What must be equal for a run of `search` to resume a directory's search.
IDENTITY_KEYS = ("model", "data", "data_fingerprint", "tuner", "objective", "max_epochs",
                 "executions_per_trial", "seed", "max_params", "space", "early_stopping",
                 "hyperband_factor", "options")
RUNTIME_OPTIONS = ("strategy", "jit_compile", "mixed_precision", "deterministic")
# `prepare` keywords search.json's "call" records as they are (see `prepare_from_directory`).
REPLAYED = ("max_trials", "max_epochs", "executions_per_trial", "seed", "max_params",
            "early_stopping", "max_consecutive_failed_trials", "keep_checkpoints",
            "hyperband_factor", "time_budget", "retrain_best")
VERSION = 1

__all__ = ["SearchError", "SearchFailed", "SearchResult", "search", "prepare",
           "prepare_from_directory", "load_search", "load_best_model", "retrain_best", "report"]


@dataclasses.dataclass
class SearchResult:
    """What `search` returns (and `load_search` reads back from a directory).

    Attributes:
        directory: the search directory.
        objective / direction: what was optimised.
        rows: the leaderboard, one dict per trial in trial order (see
            `tuning.results.collect`).
        best_trial_id / best_score: the best completed trial, or None.
        best_hyperparameters: its hyperparameter values.
        best_model_kwargs / best_recipe: what it trained (builder kwargs, recipe dict).
        resumed: the search continued an earlier one.
        stop_message: why the search stopped early, or None.
    """

    directory: str
    objective: str
    direction: str
    rows: list
    best_trial_id: Optional[str]
    best_score: Optional[float]
    best_hyperparameters: dict
    best_model_kwargs: dict
    best_recipe: dict
    resumed: bool = False
    stop_message: Optional[str] = None
    tuner: object = None

    @property
    def best_model(self):
        """The best trial's trained model (its best epoch's weights); loaded on first use."""
        if not hasattr(self, "_best_model"):
            self._best_model = load_best_model(self.directory,
                                               hypermodel=getattr(self, "_hypermodel", None))
        return self._best_model

    def retrain(self, **kwargs):
        """`retrain_best(self.directory, **kwargs)`."""
        return retrain_best(self.directory, **kwargs)

    def table(self, n=10):
        return results.top_table(self.directory, n)


# ------------------------------------------------------------------ checks (no TensorFlow)


def _default_directory(name):
    return os.path.join("runs", "tuning", name)


def infer_direction(name):
    """"max" for accuracy-like metric names, "min" otherwise (losses, errors)."""
    lowered = name.lower()
    if any(k in lowered for k in ("acc", "auc", "precision", "recall", "elbo", "f1", "iou")):
        return "max"
    return "min"


def parse_objective(objective):
    """(name, direction or None) from "val_mae", "val_auc:max", ("name", "max")."""
    if objective is None:
        return None
    if isinstance(objective, (tuple, list)) and len(objective) == 2:
        name, direction = objective
    elif isinstance(objective, str):
        name, _, direction = objective.partition(":")
        direction = direction or None
    else:
        name, direction = getattr(objective, "name", None), getattr(objective, "direction", None)
    if not isinstance(name, str) or not name:
        raise SearchError(f"objective must be a metric name such as 'val_accuracy' (optionally "
                          f"'name:max' or 'name:min'). Received: objective={objective!r}")
    if direction not in (None, "min", "max"):
        raise SearchError(f"objective direction must be 'min' or 'max'. Received: "
                          f"objective={objective!r}")
    return name, direction


def _data_identity(data):
    """(printable name, fingerprint) of a data argument."""
    if isinstance(data, str):
        return data, data
    import numpy as np
    digest = hashlib.sha1()
    parts = data if isinstance(data, (tuple, list)) else [data]
    for part in parts:
        array = np.ascontiguousarray(np.asarray(part))
        digest.update(str((array.shape, array.dtype.str)).encode())
        digest.update(array.tobytes())
    return "<arrays>", "arrays:" + digest.hexdigest()


def _check_directory(directory, overwrite, data=None):
    """'new', 'resume' or 'overwrite' for `directory`; refuses what may not be used.

    Overwriting follows the package's one rule (`zoo.runs.check_replaceable`):
    only a search directory holding nothing but what tuning wrote, never a
    training run, a user's folder, or a folder holding the data.
    """
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise SearchError(f"The search directory exists and is not a directory: {directory}")
    if os.path.abspath(directory) in (os.path.abspath(os.getcwd()), os.path.expanduser("~"),
                                      "/"):
        raise SearchError(f"The search directory may not be the working, home or root "
                          f"directory (overwrite would delete it): {directory}")
    if not os.path.isdir(directory) or runs.kind_of(directory)[0] == "empty":
        return "new"
    if overwrite:
        _check_replaceable(directory, data)
        return "overwrite"
    if not os.path.exists(os.path.join(directory, results.SEARCH_FILE)):
        raise SearchError(f"The search directory is not empty and holds no search (no "
                          f"{results.SEARCH_FILE}); pass overwrite=True (--overwrite) to replace "
                          f"it, or choose another directory: {directory}")
    return "resume"


def _check_replaceable(directory, data):
    source = runs.data_path(data)
    try:
        runs.check_replaceable(directory, ("search",), argument="directory",
                               keep=[(source, "the data")] if source else ())
    except runs.RunError as err:
        raise SearchError(str(err)) from None


def _canonical(value):
    return json.dumps(zio.json_safe(value), sort_keys=True, default=str)


def fingerprint(config):
    text = _canonical({k: config.get(k) for k in IDENTITY_KEYS})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _compare(previous, config, directory):
    changed = [k for k in IDENTITY_KEYS
               if _canonical(previous.get(k)) != _canonical(config.get(k))]
    if changed:
        details = "; ".join(f"{k}: {_short(previous.get(k))} -> {_short(config.get(k))}"
                            for k in changed[:4])
        raise SearchError(f"The search directory holds a search with another configuration "
                          f"({', '.join(changed)} differ: {details}). Run the same command to "
                          f"resume it, choose another directory, or pass overwrite=True "
                          f"(--overwrite) to replace it: {directory}")


def _short(value, limit=80):
    text = _canonical(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ------------------------------------------------------------------ budget


def hyperband_rounds(max_epochs, factor=3):
    """[(trials, epochs per trial, initial epoch)] of one Hyperband iteration, in run order.

    Read off KerasTuner's own `HyperbandOracle` (its brackets, rounds, sizes
    and epochs), so the budget follows upstream's schedule.
    """
    import keras_tuner as kt

    oracle = kt.oracles.HyperbandOracle(max_epochs=max_epochs, factor=factor)
    return [(oracle._get_size(bracket, round_num), oracle._get_epochs(bracket, round_num),
             oracle._get_epochs(bracket, round_num - 1) if round_num else 0)
            for bracket in reversed(range(oracle._get_num_brackets()))
            for round_num in range(oracle._get_num_rounds(bracket))]


def budget(tuner, *, max_trials, max_epochs, executions=1, factor=3, grid_points=None):
    """(trials, total epochs, text) a search will spend at most."""
    if TABLE[tuner].oracle_sets_epochs:
        trials = total = 0
        for size, ep, initial in hyperband_rounds(max_epochs, factor):
            if max_trials:
                size = min(size, max_trials - trials)
            if size <= 0:
                break
            trials += size
            total += size * (ep - initial) * executions
        text = (f"{tuner} over max_epochs={max_epochs} (factor {factor}): at most {trials} "
                f"trials, {total} epochs in total (promoted trials continue from their "
                f"checkpoint)")
        return trials, total, text
    trials = max_trials
    if grid_points is not None:
        trials = min(trials, grid_points) if trials else grid_points
    total = trials * max_epochs * executions
    extra = f" (the grid has {grid_points} points)" if grid_points else ""
    return trials, total, (f"{tuner}: at most {trials} trials x {max_epochs} epochs = {total} "
                           f"epochs{extra}")


# ------------------------------------------------------------------ search


def model_names(model):
    """The registered names a `model` argument names, in order, without repeats.

    A name, a comma-separated list of names and globs ("lenet5,resnet2*"), or
    a list of them; a glob must match at least one model.  No TensorFlow.
    """
    from zoo.registry import get_spec, list_models

    items = model if isinstance(model, (list, tuple)) else [model]
    if not items or not all(isinstance(m, str) for m in items):
        raise SearchError(f"search needs registered model names (a keras.Model has no search "
                          f"space): a name, 'name1,name2', a glob such as 'resnet*', or a list; "
                          f"see `zoo list`. Received: model={model!r}")
    names = []
    for item in items:
        for part in (p.strip() for p in item.split(",")):
            if not part:
                raise SearchError(f"model names an empty entry. Received: model={model!r}")
            if any(c in part for c in "*?["):
                matched = list_models(part)
                if not matched:
                    raise SearchError(f"No registered model matches {part!r}; see `zoo list`.")
                found = [n for n in matched if get_spec(n).trainable]
            else:
                found = [get_spec(part).name]
            names += [n for n in found if n not in names]
    return names


def _normalize(model, data, *, tuner, objective, max_trials, max_epochs, executions_per_trial,
               seed, max_params, workers, early_stopping, max_consecutive_failed_trials,
               keep_checkpoints, hyperband_factor, space, options, time_budget=None,
               retrain_best=False):
    """Checked arguments as a JSON-ready call (search.json's "call"), before TensorFlow."""
    from zoo import checks
    from zoo.registry import get_spec

    names = model_names(model)
    specs = [get_spec(n) for n in names]
    spec = specs[0]
    for each in specs:
        if not each.trainable:
            raise SearchError(f"Model '{each.name}' is not trainable, so it cannot be tuned.")
    tasks = sorted({each.task for each in specs})
    if len(tasks) > 1:
        raise SearchError(f"The models of one search must share a task (one objective); "
                          f"{names} have tasks {tasks}.")
    if time_budget is not None:
        time_budget = budget_module.parse_duration(time_budget)
    if not isinstance(retrain_best, bool):
        raise SearchError(f"retrain_best must be True or False. Received: "
                          f"retrain_best={retrain_best!r}")
    if tuner not in TUNERS:
        raise SearchError(f"tuner must be one of {', '.join(TUNERS)}. Received: tuner={tuner!r}")
    max_trials, max_epochs, max_params, max_consecutive_failed_trials = (
        checks.positive_int(name, value, allow_none=True) for name, value in (
            ("max_trials", max_trials), ("max_epochs", max_epochs), ("max_params", max_params),
            ("max_consecutive_failed_trials", max_consecutive_failed_trials)))
    executions_per_trial = checks.positive_int("executions_per_trial", executions_per_trial)
    checks.non_negative_int("seed", seed)
    checks.non_negative_int("workers", workers)
    hyperband_factor = checks.positive_int("hyperband_factor", hyperband_factor)
    if hyperband_factor < 2:
        raise SearchError(f"hyperband_factor must be at least 2. Received: {hyperband_factor}")
    if keep_checkpoints is not None:
        checks.non_negative_int("keep_checkpoints", keep_checkpoints)
    if early_stopping is False:
        early_stopping = None
    if early_stopping not in EARLY_STOPPING:
        raise SearchError(f"early_stopping must be 'auto', 'median' or None. Received: "
                          f"early_stopping={early_stopping!r}")
    if early_stopping == "auto":
        early_stopping = "median" if TABLE[tuner].median_stopping else None
    parsed_objective = parse_objective(objective)
    unknown = sorted(set(options) - set(PLAN_OPTIONS) - set(FIXED_RECIPE_OPTIONS))
    if "epochs" in options:
        raise SearchError("search takes max_epochs, not epochs: every tuner (Hyperband too) "
                          "trains a trial for at most max_epochs.")
    if unknown:
        raise SearchError(f"Unknown search option(s) {unknown}. Allowed: "
                          f"{sorted((*PLAN_OPTIONS, *FIXED_RECIPE_OPTIONS))}")
    overrides = space_module.check_overrides(space)
    # Several models: the shortest recipe (a search over WRN-28-10's 200 epochs and
    # LeNet-5's 10 should say how long a trial is with max_epochs).
    max_epochs = max_epochs or min(each.recipe.epochs for each in specs)
    if max_trials is None and not TABLE[tuner].oracle_sets_epochs:
        max_trials = 10
    data_name, data_fingerprint = _data_identity(data)
    options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()
               if v is not None}
    return spec, {
        "model": names[0] if len(names) == 1 else names, "data": data_name,
        "data_fingerprint": data_fingerprint, "time_budget": time_budget,
        "retrain_best": retrain_best,
        "tuner": tuner, "objective": parsed_objective, "max_trials": max_trials,
        "max_epochs": max_epochs, "executions_per_trial": executions_per_trial, "seed": seed,
        "max_params": max_params, "early_stopping": early_stopping,
        "max_consecutive_failed_trials": max_consecutive_failed_trials,
        "keep_checkpoints": keep_checkpoints, "hyperband_factor": hyperband_factor,
        "space_overrides": overrides, "options": options,
    }


def _check_model(hypermodel, hp, *, seed):
    """Build the default point as trial 0 will, and list what its fit logs will hold.

    Returns:
        (metric names of train and validation logs, the compiled model).
    """
    import keras

    from tuning.trial import trial_seed
    from zoo.distribute import get_strategy

    keras.backend.clear_session()
    keras.utils.set_random_seed(trial_seed(seed, "0"))
    strategy = hypermodel.plan.strategy
    with (get_strategy(strategy).scope() if strategy else contextlib.nullcontext()):
        model = hypermodel.build(hp)
    bundle = hypermodel.bundle(hypermodel.point(hp).recipe)
    logs = model.evaluate(bundle.validation.take(1), verbose=0, return_dict=True)
    return set(logs) | {f"val_{k}" for k in logs}, model


@dataclasses.dataclass
class PreparedSearch:
    """A checked search, ready to run; nothing written yet (`prepare` returns it).

    Attributes:
        spec: the registered model's `ModelSpec`.
        plan: the `zoo.training.Plan` (data loaded and validated once).
        hypermodel: the `tuning.hypermodel.ZooHyperModel`.
        fixed: the hyperparameters the overrides fix or narrow (the oracle's).
        space: the whole space, overrides applied.
        config: what search.json records (identity, budget, the call to replay).
        directory: the search directory (absolute).
        state: "new", "resume" or "overwrite".
        previous: the directory's search.json when resuming, else None.
    """

    spec: object
    plan: object
    hypermodel: object
    fixed: object
    space: object
    config: dict
    directory: str
    state: str
    previous: Optional[dict]
    clock: object = None

    def write_search_file(self, *, status):
        """search.json with `status` ("running", "finished", ...); keeps its creation time."""
        record = dict(self.config)
        previous = self.previous or zio.read_json(
            os.path.join(self.directory, results.SEARCH_FILE), default=None) or {}
        record["created"] = previous.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S")
        record["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        record["status"] = status
        os.makedirs(self.directory, exist_ok=True)
        zio.write_json(os.path.join(self.directory, results.SEARCH_FILE), record)


def prepare(model, data="digits", *, tuner="hyperband", objective=None, max_trials=None,
            max_epochs=None, executions_per_trial=1, seed=0, directory=None, overwrite=False,
            max_params=None, workers=0, space=None, early_stopping="auto",
            max_consecutive_failed_trials=5, keep_checkpoints=3, hyperband_factor=3,
            time_budget=None, retrain_best=False, check_objective=True, **options):
    """Check everything and build the hypermodel; writes nothing. Returns a `PreparedSearch`."""
    spec, call = _normalize(
        model, data, tuner=tuner, objective=objective, max_trials=max_trials,
        max_epochs=max_epochs, executions_per_trial=executions_per_trial, seed=seed,
        max_params=max_params, workers=workers, early_stopping=early_stopping,
        max_consecutive_failed_trials=max_consecutive_failed_trials,
        keep_checkpoints=keep_checkpoints, hyperband_factor=hyperband_factor, space=space,
        options=options, time_budget=time_budget, retrain_best=retrain_best)
    names = model_names(call["model"])
    directory = os.path.abspath(directory or _default_directory("+".join(names)))
    state = _check_directory(directory, overwrite, data)
    previous = zio.read_json(os.path.join(directory, results.SEARCH_FILE), default=None) \
        if state == "resume" else None
    if state == "resume" and not isinstance(previous, dict):
        raise SearchError(f"{results.SEARCH_FILE} in the search directory is damaged; pass "
                          f"overwrite=True (--overwrite) to start again: {directory}")

    # ---- TensorFlow from here on
    import keras_tuner as kt

    from tuning.hypermodel import MultiHyperModel, ZooHyperModel
    from zoo import training

    checked_options = call["options"]
    fixed_recipe = {k: checked_options[k] for k in FIXED_RECIPE_OPTIONS if k in checked_options}
    plan_kwargs = {k: checked_options[k] for k in PLAN_OPTIONS if k in checked_options}
    if "classes" in plan_kwargs:
        plan_kwargs["classes"] = tuple(plan_kwargs["classes"])
    if "model_kwargs" in plan_kwargs:
        plan_kwargs["model_kwargs"] = _builder_kwargs(plan_kwargs["model_kwargs"])
    members = {}
    for name in names:
        # One plan per model: each validates the data for its own input shape.
        plan = training.plan(name, data, epochs=call["max_epochs"], seed=call["seed"],
                             **{k: v for k, v in fixed_recipe.items() if k != "augment"},
                             augment=fixed_recipe.get("augment"), **plan_kwargs)
        members[name] = ZooHyperModel(plan, grid=TABLE[call["tuner"]].discrete,
                                      max_epochs=call["max_epochs"])
    hypermodel = members[names[0]] if len(names) == 1 else MultiHyperModel(members)
    plan = hypermodel.plan
    fixed, full = _space(hypermodel, fixed_recipe, call)
    name, direction = _objective(plan, spec, call["objective"])
    call["objective"] = {"name": name, "direction": direction}
    if check_objective and state != "resume":
        for other in names[1:]:
            # Every model of a multi-model search builds for this data (head, input)
            # and reports the objective before anything is written; the first model
            # last, since trial 0 trains the model its check built.
            reported, _ = _check_model(members[other], kt.HyperParameters(), seed=call["seed"])
            if name not in reported:
                raise SearchError(f"objective '{name}' is not reported by model '{other}'; it "
                                  f"reports: {', '.join(sorted(reported))}")
        probe = kt.HyperParameters()
        probe.merge(full.space)
        reported, first_model = _check_model(hypermodel, probe, seed=call["seed"])
        hypermodel.first_model = (dict(probe.values), first_model)
        if name not in reported:
            raise SearchError(f"objective '{name}' is not reported by model '{spec.name}' "
                              f"({spec.task}); it reports: {', '.join(sorted(reported))}")
    config = _search_config(call, full, hypermodel)
    if previous is not None:
        _compare(previous, config, directory)
    return PreparedSearch(spec=spec, plan=plan, hypermodel=hypermodel, fixed=fixed, space=full,
                          config=config, directory=directory, state=state, previous=previous)


def _space(hypermodel, fixed_recipe, call):
    """(the oracle's fixed hyperparameters, the whole space) with the overrides applied."""
    import keras_tuner as kt

    declared = kt.HyperParameters()
    hypermodel.declare_hyperparameters(declared)
    names = {hp.name for hp in declared.space}
    # Recipe fields fixed by the caller leave the space (hp.Fixed at their value).
    overrides = {}
    for key, value in fixed_recipe.items():
        if key == "augment":
            # The caller's list settles both switches of `tuning.space._augment`:
            # the recipe's other augmentations and random erasing.
            value = tuple(value or ())
            if "augment" in names:
                overrides["augment"] = any(n != "erasing" for n in value)
            if "erasing" in names:
                overrides["erasing"] = "erasing" in value
        elif key in names:
            overrides[key] = value
    clash = sorted(set(overrides) & set(call["space_overrides"]))
    if clash:
        raise SearchError(f"{clash} are both fixed by an option and given in space=; give each "
                          f"once.")
    overrides.update(call["space_overrides"])
    fixed = space_module.apply_overrides(
        declared, overrides, source=getattr(call["space_overrides"], "source", None))
    full = space_module.merged_space(declared, fixed)
    if TABLE[call["tuner"]].discrete:
        continuous = space_module.continuous(full)
        if continuous:
            raise SearchError(f"{call['tuner']} search needs discrete values, but {continuous} "
                              f"{'is a' if len(continuous) == 1 else 'are'} continuous "
                              f"range{'s' if len(continuous) > 1 else ''}; give a step or a "
                              f"list of values in space= (--space), or use another tuner.")
    return fixed, full


def _objective(plan, spec, requested):
    """(name, direction): the task's default, or the requested one with its direction."""
    default_name, default_direction = plan.hooks.objective(spec)
    if requested is None:
        return default_name, default_direction
    name, direction = requested
    return name, direction or (default_direction if name == default_name
                               else infer_direction(name))


def _search_config(call, full, hypermodel):
    """search.json's content: the checked call, the space, the budget and the replayable call."""
    config = {
        "version": VERSION, **call,
        "space": space_module.describe_space(full),
        "pinned_defaults": {k: [zio.json_safe(a), zio.json_safe(b)]
                            for k, (a, b) in hypermodel.pinned.items()},
        "options": {k: v for k, v in call["options"].items() if k not in RUNTIME_OPTIONS},
        "runtime_options": {k: v for k, v in call["options"].items() if k in RUNTIME_OPTIONS},
    }
    config["fingerprint"] = fingerprint(config)
    grid_points = space_module.grid_size(full) if TABLE[call["tuner"]].discrete else None
    trials, epochs, text = budget(call["tuner"], max_trials=call["max_trials"],
                                  max_epochs=call["max_epochs"],
                                  executions=call["executions_per_trial"],
                                  factor=call["hyperband_factor"], grid_points=grid_points)
    config["budget"] = {"trials": trials, "epochs": epochs, "text": text}
    # `prepare`'s keywords, replayed by `prepare_from_directory` (workers, best model).
    objective = call["objective"]
    config["call"] = {
        "model": call["model"], "data": call["data"], "tuner": call["tuner"],
        "objective": [objective["name"], objective["direction"]],
        **{k: call[k] for k in REPLAYED}, "space": call["space_overrides"] or None,
        **call["options"]}
    return config


def prepare_from_directory(directory, data=None, **overrides):
    """`prepare` called again with the keywords an existing search recorded.

    Args:
        directory: a search directory.
        data: the data, when the search ran on in-memory arrays. Defaults to None.
        **overrides: `prepare` keywords to change (e.g. check_objective=False).
    """
    config = zio.read_json(os.path.join(directory, results.SEARCH_FILE), default=None)
    if not isinstance(config, dict) or not isinstance(config.get("call"), dict):
        raise SearchError(f"Not a search directory (no readable {results.SEARCH_FILE} with the "
                          f"search's call): {directory}")
    recorded = dict(config["call"])
    if recorded["data"] == "<arrays>" and data is None:
        raise SearchError("This search ran on in-memory arrays; pass the same arrays (data=).")
    if data is not None:
        recorded["data"] = data
    return prepare(**{**recorded, "directory": directory, **overrides})


def search(model=None, data="digits", *, models=None, tuner="hyperband", objective=None,
           max_trials=None, max_epochs=None, executions_per_trial=1, seed=0, directory=None,
           overwrite=False, max_params=None, workers=0, space=None, early_stopping="auto",
           max_consecutive_failed_trials=5, keep_checkpoints=3, hyperband_factor=3,
           time_budget=None, retrain_best=False, verbose=1, callbacks=None, tensorboard=True,
           report=True, oracle=None, role=None, isolate=False, **options):
    """Search a registered model's hyperparameters with KerasTuner.

    Args:
        model: registered model name (see `zoo list`); several ("lenet5,resnet20",
            a glob such as "resnet2*", or a list) make the model a hyperparameter
            ("model"), each model's space conditional on it and named
            "NAME/hyperparameter"; the first trials are each model's registered
            default, in order.
        models: the same as `model` (give one of the two).
        data: data source (see `zoo.data`), or (x, y) arrays. Loaded and
            validated once per search. Defaults to "digits".
        tuner: a name in `tuning.TUNERS` (KerasTuner's own oracles; the table is
            `tuning.oracles.TABLE`). Defaults to "hyperband".
        objective: metric to optimise, e.g. "val_accuracy" or "val_mae:min";
            defaults to the task's (`val_accuracy` for classifiers, `val_loss`
            otherwise), and is checked against what the model reports before
            any trial runs.
        max_trials: at most this many trials (default 10; Hyperband: its
            brackets decide, capped by this when given).
        max_epochs: epochs per trial (Hyperband's maximum). Defaults to the recipe's
            (several models: the shortest of their recipes').
        executions_per_trial: trainings per configuration, averaged. Defaults to 1.
        seed: search seed; every trial's seed derives from it and the trial id.
            Defaults to 0.
        directory: search directory; defaults to runs/tuning/<model>. The same
            call on an existing directory resumes the search there.
        overwrite: replace an existing search directory. Defaults to False.
        max_params: trials whose model has more parameters are recorded as
            `skipped` without training. Defaults to None.
        workers: run K local worker processes and this process as the chief
            (KerasTuner's chief/worker protocol on 127.0.0.1). Defaults to 0.
        space: overrides of the search space: {name: value} fixes a value,
            {name: [values]} restricts the choices, {name: {"min":..,
            "max":..}} narrows a range; or the path of a JSON file of them.
        early_stopping: "median" (median-stopping rule), None, or "auto"
            (median for random and Bayesian search). Defaults to "auto".
        max_consecutive_failed_trials: stop after this many failures in a row
            (None: never). Defaults to 5.
        keep_checkpoints: keep the weights of this many best trials. Defaults to 3.
        hyperband_factor: Hyperband's reduction factor. Defaults to 3.
        time_budget: wall-clock budget of the whole search (resumed sessions
            add up): seconds or "90m", "1h", "3600s". No trial starts that the
            rest cannot finish (estimated from the finished trials of the same
            model), and a trial stops after the epoch that leaves too little
            time; the search then ends normally. Defaults to None (no limit).
        retrain_best: keep time inside `time_budget` for `retrain_best`, which
            then trains the best trial for its own epochs and ends with the
            budget. Defaults to False.
        verbose: 0 silent, 1 a line per trial. Defaults to 1.
        callbacks: extra Keras callbacks for every trial (deep-copied). Defaults to None.
        tensorboard: TensorBoard logs per trial. Defaults to True.
        report: write report.html at the end. Defaults to True.
        oracle: "HOST:PORT" of the chief for `workers` / `role` (default
            127.0.0.1 and a free port). Defaults to None.
        role: None (this process runs the search), "chief" (serve the oracle
            at `oracle` for remote workers) or "worker" (run trials for the
            chief at `oracle`; returns None). Defaults to None.
        isolate: run every trial in a fresh process (memory that a long
            search would otherwise accumulate is returned to the system).
            Defaults to False.
        **options: `zoo.training.plan` options (model_kwargs, data_options,
            classes, loss, strategy, jit_compile, mixed_precision,
            deterministic, validation_split, test_split) and recipe fields
            fixed for the whole search (batch_size, optimizer, learning_rate,
            schedule, weight_decay, augment).

    Returns:
        A `SearchResult`.

    Raises:
        SearchError (a ValueError): bad input, before anything is written.
        SearchFailed: the search stopped after max_consecutive_failed_trials.
    """
    started = time.time()  # the budget counts the set-up (data, plans) too
    if (model is None) == (models is None):
        raise SearchError(f"search takes the model(s) as model= or models=, one of the two. "
                          f"Received: model={model!r}, models={models!r}")
    prepared = prepare(
        model if models is None else models, data, tuner=tuner, objective=objective,
        max_trials=max_trials, max_epochs=max_epochs,
        executions_per_trial=executions_per_trial, seed=seed,
        directory=directory, overwrite=overwrite, max_params=max_params, workers=workers,
        space=space, early_stopping=early_stopping, keep_checkpoints=keep_checkpoints,
        max_consecutive_failed_trials=max_consecutive_failed_trials,
        hyperband_factor=hyperband_factor, time_budget=time_budget, retrain_best=retrain_best,
        **options)
    _check_processes(prepared, role=role, workers=workers, isolate=isolate, oracle=oracle,
                     callbacks=callbacks)
    if role == "worker":
        distributed.run_worker(prepared, oracle=oracle, verbose=verbose)
        return None
    return _run(prepared, verbose=verbose, callbacks=callbacks, tensorboard=tensorboard,
                report=report, workers=workers, oracle=oracle, isolate=isolate,
                chief=role == "chief", started=started)


def _check_processes(prepared, *, role, workers, isolate, oracle, callbacks):
    """Refuse a process layout (role, workers, isolate, oracle) that cannot run."""
    if role not in (None, "chief", "worker"):
        raise SearchError(f"role must be None, 'chief' or 'worker'. Received: role={role!r}")
    if role is not None and oracle is None:
        raise SearchError(f"role={role!r} needs the chief's address: oracle='HOST:PORT'.")
    if role is not None and workers:
        raise SearchError("workers= starts local workers for a local chief; with role= run one "
                          "process per machine instead.")
    if not (workers or isolate or role):
        return
    if prepared.config["data"] == "<arrays>":
        raise SearchError("workers and isolate need a named data source (each process loads "
                          "it); in-memory arrays can only be searched in one process.")
    if callbacks:
        raise SearchError("callbacks= cannot travel to worker processes; use them without "
                          "workers/isolate.")
    address = distributed.parse_address(oracle)
    if role != "worker":
        distributed.check_port(*address)
    if role == "worker" and prepared.state == "overwrite":
        raise SearchError("A worker never deletes a search directory; drop overwrite.")


def _say(verbose, text):
    if verbose:
        print(text, flush=True)


def _run(prepared, **kwargs):
    """Run the search holding the search directory's lock (a second search there is refused)."""
    try:
        created = runs.lock_run_dir(prepared.directory, argument="directory")
    except runs.RunError as err:
        raise SearchError(str(err)) from None
    try:
        if prepared.state == "overwrite":
            # Checked again under the lock: the folder may have changed since prepare().
            _check_replaceable(prepared.directory, prepared.config.get("data"))
            runs.empty_folder(prepared.directory)
        return _run_locked(prepared, **kwargs)
    finally:
        runs.unlock_run_dir(prepared.directory, remove_if_empty=created)


def _run_locked(prepared, *, verbose, callbacks, tensorboard, report, workers=0, oracle=None,
                isolate=False, chief=False, started=None):
    resumed = os.path.exists(os.path.join(prepared.directory, results.PROJECT, "oracle.json"))
    prepared.write_search_file(status="running")
    prepared.clock = budget_module.Clock(prepared.directory, prepared.config["time_budget"],
                                         retrain=prepared.config["retrain_best"],
                                         started=started)
    prepared.clock.save()
    _announce(prepared, verbose)
    tuner = None
    try:
        if workers or isolate or chief:
            prepared.hypermodel.first_model = None  # trials run in other processes
            stop_message = distributed.run_chief(prepared, workers=workers, oracle=oracle,
                                                 verbose=verbose, isolate=isolate)
        else:
            from tuning import tuners
            tuner = tuners.make_tuner(prepared, verbose=verbose, callbacks=callbacks,
                                      tensorboard=tensorboard)
            if resumed:
                done = sum(t.status != "RUNNING" for t in tuner.oracle.trials.values())
                _say(verbose, f"resuming: {done} trials finished, "
                              f"{len(tuner.oracle.trials) - done} to continue")
            tuners.run_trials(tuner)
            stop_message = tuner.oracle.zoo_stop_message
            if tuner.oracle.zoo_budget_message:
                _say(verbose, f"search ended: {tuner.oracle.zoo_budget_message}")
            tuners.cleanup_checkpoints(tuner.project_dir, tuner.oracle,
                                       keep=prepared.config["keep_checkpoints"])
    except KeyboardInterrupt:
        prepared.clock.save()
        results.write_results(prepared.directory)
        prepared.write_search_file(status="interrupted")
        raise
    prepared.clock.save()
    results.write_results(prepared.directory)
    if report:
        results.write_report(prepared.directory)
    prepared.write_search_file(status="stopped" if stop_message else "finished")
    result = load_search(prepared.directory)
    result.resumed = resumed
    result.stop_message = stop_message
    result.tuner = tuner
    result._hypermodel = prepared.hypermodel
    if verbose:
        print(results.top_table(prepared.directory, 5), flush=True)
    if stop_message:
        raise SearchFailed(stop_message)
    return result


def _announce(prepared, verbose):
    config = prepared.config
    names = model_names(config["model"])
    _say(verbose, f"search: {', '.join(names)} on {config['data']}, objective "
                  f"{config['objective']['name']} ({config['objective']['direction']}), "
                  f"directory {prepared.directory}")
    _say(verbose, f"budget: {config['budget']['text']}")
    if config["time_budget"]:
        spent = prepared.clock.spent() if prepared.clock else 0.0
        _say(verbose, f"time budget: {config['time_budget']:.0f} s ({spent:.0f} s spent)"
                      f"{', keeping time for the retrain' if config['retrain_best'] else ''}")
    for key, (space_default, registered) in prepared.hypermodel.pinned.items():
        owner, short = (key.split("/", 1) if len(names) > 1 else (prepared.spec.name, key))
        _say(verbose, f"note: the search space of '{owner}' defaults {short} to "
                      f"{results.format_value(space_default)} but the registered model uses "
                      f"{results.format_value(registered)}; its first trial trains the "
                      f"registered model")


# ------------------------------------------------------------------ reading a search back


def load_search(directory):
    """The `SearchResult` of a search directory (finished or running); no TensorFlow."""
    directory = os.path.abspath(directory)
    if not os.path.exists(os.path.join(directory, results.SEARCH_FILE)):
        raise SearchError(f"Not a search directory (no {results.SEARCH_FILE}): {directory}")
    try:  # damaged, not "no completed trial"
        zio.read_json(os.path.join(directory, results.SEARCH_FILE))
    except ValueError as err:
        raise SearchError(f"The search directory cannot be read: {err}") from None
    rows, search_config = results.collect(directory)
    objective = search_config.get("objective") or {}
    direction = objective.get("direction", "max")
    best = results.best_row(rows, direction)
    if best is not None:
        _check_trial_record(best, directory)
    return SearchResult(
        directory=directory, objective=objective.get("name"), direction=direction, rows=rows,
        best_trial_id=best["trial_id"] if best else None,
        best_score=best["objective"] if best else None,
        best_hyperparameters={k: v for k, v in best["hp"].items() if not k.startswith("tuner/")}
        if best else {},
        best_model_kwargs=dict(best["model_kwargs"] or {}) if best else {},
        best_recipe=dict(best["recipe"] or {}) if best else {},
        stop_message=None)


def no_result_message(result):
    """Why a search ended without a completed trial, in one line (None: it has a best trial).

    The search's own outcome in place of KerasTuner's per-trial tracebacks:
    "every configuration exceeds max_params=1", "trial 0 diverged ...".
    """
    if result.best_trial_id is not None:
        return None
    rows = result.rows
    where = f"see {os.path.join(result.directory, 'trials.csv')}"
    if not rows:
        return f"the search ended without running a trial ({result.stop_message or where})"
    reasons = [row.get("reason") for row in rows]
    if all(reason == "max_params" for reason in reasons):
        params = [row["params"] for row in rows if isinstance(row.get("params"), int)]
        limit = rows[0].get("message", "").rpartition("max_params=")[2] or "?"
        smallest = f" (the smallest has {min(params):,} parameters)" if params else ""
        return (f"every configuration exceeds max_params={limit}{smallest}: no trial was "
                f"trained; raise --max-params (max_params=) or narrow the space")
    if all(reason == "time_budget" for reason in reasons):
        return f"no trial fitted in the time budget; give a longer one ({where})"
    first = next((row for row in rows if row.get("status") == "failed"), None)
    if first is None:
        return f"no trial completed ({where})"
    message = " ".join(str(first.get("message") or "").split())[:300]
    what = "diverged" if first.get("reason") == "nan" else f"failed ({first.get('reason')})"
    others = sum(1 for row in rows if row is not first)
    return (f"no trial completed: trial {first['trial_id']} {what}: {message}"
            f"{f'; {others} other trial(s) did not complete either' if others else ''} "
            f"({where})")


def report(directory, n=10):
    """The top-n table of a search as text (finished or running)."""
    if not os.path.exists(os.path.join(directory, results.SEARCH_FILE)):
        raise SearchError(f"Not a search directory (no {results.SEARCH_FILE}): "
                          f"{os.path.abspath(directory)}")
    return results.top_table(directory, n)


def _recipe_from(d):
    from zoo.registry import Recipe
    fields = {f.name for f in dataclasses.fields(Recipe)}
    d = {k: v for k, v in d.items() if k in fields}
    if "augment" in d:
        d["augment"] = tuple(d["augment"] or ())
    return Recipe(**d)


def _check_trial_record(row, directory):
    """A trial's record as retrain_best reads it, or a SearchError naming the damaged file.

    The record is a file a user can edit; what it holds is checked again by
    the builder and `zoo.train` (sizes beyond memory included), but its shape
    is checked here so that a list where an object belongs is named, not met
    as a Python error.
    """
    where = os.path.join(results.project_dir(directory), f"trial_{row['trial_id']}",
                         results.RECORD_FILE)
    for key in ("model_kwargs", "recipe"):
        if row.get(key) is not None and not isinstance(row[key], dict):
            raise SearchError(f"The search directory's trial record is damaged: {key} must be "
                              f"a JSON object (argument names to values). Received: "
                              f"{key}={row[key]!r} in {where}")
    for key in (row.get("model_kwargs") or {}):
        if not isinstance(key, str) or not key.isidentifier():
            raise SearchError(f"The search directory's trial record is damaged: {key!r} is not "
                              f"an argument name in model_kwargs of {where}")


def _builder_kwargs(d):
    return {k: tuple(v) if isinstance(v, list) else v for k, v in (d or {}).items()}


def load_best_model(directory, *, data=None, hypermodel=None):
    """The best trial's model with its best epoch's weights (built through the seam).

    Args:
        directory: a search directory.
        data: the data, when the search ran on in-memory arrays. Defaults to None.
        hypermodel: the search's `ZooHyperModel` (skips re-planning). Defaults to None.
    """
    import keras
    import keras_tuner as kt

    directory = os.path.abspath(directory)
    result = load_search(directory)
    if result.best_trial_id is None:
        raise SearchError(f"The search has no completed trial yet: {directory}")
    path = os.path.join(directory, results.PROJECT, f"trial_{result.best_trial_id}",
                        "checkpoint.weights.h5")
    if not os.path.exists(path):
        raise SearchError(f"The best trial's weights are missing ({path}); retrain it with "
                          f"tuning.retrain_best.")
    if hypermodel is None:
        hypermodel = prepare_from_directory(directory, check_objective=False,
                                            data=data).hypermodel
    trial = zio.read_json(os.path.join(directory, results.PROJECT,
                                           f"trial_{result.best_trial_id}", "trial.json"))
    hp = kt.HyperParameters.from_config(trial["hyperparameters"])
    keras.backend.clear_session()
    model = hypermodel.build(hp)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)  # the checkpoint holds its state too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a GAN's two optimizers are not restored
        model.load_weights(path)
    return model


def _interrupted_retrain_epochs(run_dir, directory, chosen, overwrite):
    """The epochs of an interrupted retrain of `chosen` in `run_dir`, or None.

    The budget's epochs depend on the time left, which an interrupted retrain
    has partly spent: resuming it must keep the epochs it started with (a run
    resumes only with the same recipe).
    """
    if overwrite:
        return None
    # Missing or damaged: None (zoo.train reports a damaged one).
    previous = zio.read_json(os.path.join(run_dir, runs.CONFIG_FILE), default=None)
    if not isinstance(previous, dict):
        return None
    tuning_key = previous.get("tuning") or {}
    if (not isinstance(tuning_key, dict) or tuning_key.get("trial_id") != chosen["trial_id"]
            or tuning_key.get("search_dir") != directory):
        return None
    epochs = (previous.get("recipe") or {}).get("epochs")
    return epochs if isinstance(epochs, int) and epochs > 0 else None


def retrain_best(directory, *, run_dir=None, overwrite=False, data=None, epochs=None,
                 export=True, verbose="auto", trial_id=None):
    """Train the best configuration through `zoo.train` into an ordinary run directory.

    The recipe is the trial's with the registered recipe's full epochs (and its
    early stopping), so `zoo export` / `zoo evaluate` work on the run unchanged;
    its config.json names the search and trial (`tuning` key).  A search run
    with a `time_budget` and `retrain_best=True` (which kept time for the
    trial's own epochs) retrains for as many epochs as the rest of the budget
    holds: at least the trial's, at most the registered recipe's
    (`budget.Clock.epochs_for_retrain`); it stops after the epoch that leaves less
    than an epoch's time of the budget.

    Args:
        directory: a search directory.
        run_dir: the run directory. Defaults to <directory>/best_run.
        overwrite: replace an existing run directory. Defaults to False.
        data: the data (required when the search ran on in-memory arrays).
        epochs: epochs instead of the recipe's full count. Defaults to None.
        export: export a SavedModel. Defaults to True.
        verbose: Keras verbosity. Defaults to "auto".
        trial_id: retrain this trial instead of the best. Defaults to None.

    Returns:
        `zoo.training.TrainResult`.
    """
    from zoo.registry import get_spec
    from zoo.training import train

    directory = os.path.abspath(directory)
    result = load_search(directory)
    config = zio.read_json(os.path.join(directory, results.SEARCH_FILE))
    rows = {r["trial_id"]: r for r in result.rows}
    chosen = rows.get(trial_id) if trial_id is not None else (
        rows.get(result.best_trial_id) if result.best_trial_id else None)
    if trial_id is not None and chosen is None:
        raise SearchError(f"No trial {trial_id!r} in the search: {directory}")
    if chosen is None or chosen["recipe"] is None:
        raise SearchError(f"The search has no completed trial to retrain yet: {directory}")
    _check_trial_record(chosen, directory)
    if config["data"] == "<arrays>" and data is None:
        raise SearchError("This search ran on in-memory arrays: pass the same data= to "
                          "retrain_best.")
    spec = get_spec(chosen.get("model") or model_names(config["model"])[0])
    run_dir = run_dir or os.path.join(directory, "best_run")
    clock, extra_callbacks = None, []
    if config.get("time_budget") and config.get("retrain_best"):
        clock = budget_module.Clock(directory, config["time_budget"])
        epochs = (epochs or _interrupted_retrain_epochs(run_dir, directory, chosen, overwrite)
                  or clock.epochs_for_retrain(chosen, most=spec.recipe.epochs))
        extra_callbacks.append(budget_module.deadline_callback(clock))
    recipe = _recipe_from(chosen["recipe"]).replace(epochs=epochs or spec.recipe.epochs)
    options = {**config.get("options", {}), **config.get("runtime_options", {})}
    # The recipe carries the loss and the trial's builder kwargs are the model's.
    plan_options = {k: options[k] for k in PLAN_OPTIONS
                    if k in options and k not in ("model_kwargs", "loss")}
    if "classes" in plan_options:
        plan_options["classes"] = tuple(plan_options["classes"])
    provenance = {"search_dir": directory, "trial_id": chosen["trial_id"],
                  "objective": config["objective"]["name"], "score": chosen["objective"],
                  "hyperparameters": {k: v for k, v in chosen["hp"].items()
                                      if not k.startswith("tuner/")},
                  "fingerprint": config.get("fingerprint")}
    # The search directory's lock too: a `zoo tune --overwrite` of it would delete best_run.
    lock = contextlib.ExitStack()
    try:
        lock.enter_context(runs.held(directory, argument="directory"))
    except runs.RunError as err:
        raise SearchError(str(err)) from None
    try:
        return train(spec.name, data if data is not None else config["data"],
                     run_dir=run_dir, overwrite=overwrite,
                     model_kwargs=_builder_kwargs(chosen["model_kwargs"]), recipe=recipe,
                     seed=config["seed"], export=export, verbose=verbose,
                     callbacks=extra_callbacks or None,
                     config_extra={"tuning": zio.json_safe(provenance)}, **plan_options)
    finally:
        if clock is not None:
            clock.save()  # the retrain's time counts in the search's clock
        lock.close()
