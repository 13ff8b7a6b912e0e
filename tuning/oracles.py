"""The table of tuners: which KerasTuner oracle each `tuner=` name runs (no TensorFlow).

Every list of tuners (`tuning.TUNERS`, `zoo tune --tuner`, `tune_finetune`'s)
and every tuner-dependent choice of a search (default early stopping, a
discrete space, the trial budget, whose weights are kept) is read from
`TABLE`.  Adding a KerasTuner oracle is one row; a row's `fixes` names a
mixin class in `tuning.tuners` when the zoo must correct that oracle.
"""

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class TunerKind:
    """One row of the table.

    Attributes:
        oracle: the class name in `keras_tuner.oracles`.
        fixes: a mixin class in `tuning.tuners` correcting that oracle, or None.
        oracle_sets_epochs: the oracle chooses each trial's epochs (Hyperband:
            it takes max_epochs and a factor instead of max_trials, its later
            rounds continue earlier trials' weights).
        discrete: every hyperparameter needs discrete values (grid search).
        median_stopping: early_stopping="auto" stops bad trials by the median rule.
    """

    oracle: str
    fixes: Optional[str] = None
    oracle_sets_epochs: bool = False
    discrete: bool = False
    median_stopping: bool = False


TABLE = {
    "random": TunerKind("RandomSearchOracle", median_stopping=True),
    "grid": TunerKind("GridSearchOracle", fixes="ResumableGrid", discrete=True),
    "bayesian": TunerKind("BayesianOptimizationOracle", median_stopping=True),
    "hyperband": TunerKind("HyperbandOracle", fixes="HyperbandCheckpoints",
                           oracle_sets_epochs=True),
}
TUNERS = tuple(TABLE)
# Tuners whose trials train a fixed number of epochs (a fine-tuning's phase plan needs that).
FIXED_EPOCH_TUNERS = tuple(name for name, kind in TABLE.items() if not kind.oracle_sets_epochs)
