"""KerasTuner search over every registered model: `tuning.search` and `zoo tune`.

    import tuning
    result = tuning.search("mlp", data="digits", tuner="random", max_trials=10, max_epochs=10)
    result.best_hyperparameters          # the best trial's values
    result.rows                          # the leaderboard, one dict per trial
    run = tuning.retrain_best(result.directory)   # an ordinary, exportable run directory

    # The model as a hyperparameter, within a wall-clock budget (retrain included):
    result = tuning.search(models=["lenet5", "resnet20", "wrn16_4"], data="fashion_mnist",
                           tuner="random", max_trials=100, max_epochs=10, time_budget="1h",
                           retrain_best=True)
    run = result.retrain()

A trial trains exactly as `zoo train` does (`zoo.training.build_model` and
`fit`: same data pipeline, recipe compile and callbacks); the data is loaded
once per search.  The space is the spec's own `search_space` plus a shared
training space (learning rate, optimizer, schedule, weight decay, batch
size, augmentation on/off), every default equal to the registered model's,
and trial 0 is always the registered model with its recipe.  Searches
resume after a crash without losing or repeating trials; failed trials are
recorded and the search goes on.

Modules: `searcher` (the API), `oracles` (the table of tuners), `hypermodel`
(`ZooHyperModel`, `MultiHyperModel`), `space` (training space, overrides),
`budget` (the time budget's clock and trial estimates), `tuners` (KerasTuner
oracles and tuner with the fixes), `trial` (one trial's record, callbacks
and result), `results` (trials.csv, report.html; no TensorFlow),
`distributed` (chief and workers), `errors`, `cli` (`zoo tune`).

Importing `tuning` does not import TensorFlow or KerasTuner.
"""

from tuning.errors import SearchError, SearchFailed
from tuning.oracles import TUNERS

_LAZY = {
    "search": "tuning.searcher",
    "retrain_best": "tuning.searcher",
    "load_search": "tuning.searcher",
    "load_best_model": "tuning.searcher",
    "report": "tuning.searcher",
    "SearchResult": "tuning.searcher",
    "ZooHyperModel": "tuning.hypermodel",
}

__all__ = ["TUNERS", "SearchError", "SearchFailed", *_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'tuning' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(_LAZY[name]), name)
