"""A search's wall clock: `--time-budget 1h` and the time each trial is expected to take.

    budget.parse_duration("90m")  # 5400.0
    clock = budget.Clock(search_dir, budget_s=3600, retrain=True)
    clock.spent(), clock.remaining()

The clock counts the seconds the search has run, over every process that ran
it: clock.json holds the time of earlier sessions (written at every trial
start and at the end), so a search resumed after a kill -9 has the rest of its
budget, less at most the time since the last trial started.

A trial's duration is estimated from the finished trials of the same model
(seconds per epoch, the largest seen, times the trial's epochs).  The search
starts no trial when the cheapest model's estimate no longer fits in what is
left, less the time the retrain of the best trial will take (`retrain`), and
a running trial stops at the end of an epoch when the next one would not fit.
KerasTuner has no time budget of its own (its `max_trials` and Hyperband's
brackets count trials), hence this module.

Imports no TensorFlow.
"""

import os
import re
import time

from zoo import io as zio

CLOCK_FILE = "clock.json"
# Reasons of trials that did not train because of the budget (status "skipped").
SKIP_REASON = "time_budget"
# The search stops after this many skips in a row: the oracle keeps proposing
# trials that no longer fit (say Hyperband's long rounds).
MAX_SKIPS = 3
# Seconds a retrain spends besides its epochs: reading the data again, test
# evaluation, model.keras and the SavedModel export (measured here: lenet5 on
# Fashion-MNIST, 2 epochs, on the shared 2-core CPU: about 38 s besides its 44 s
# of epochs).
RETRAIN_OVERHEAD_S = 40.0
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)")
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}


def parse_duration(value, *, name="time_budget"):
    """Seconds of a duration: a number of seconds, or "3600s", "90m", "1.5h", "1h30m".

    Raises:
        ValueError: naming `name`, for anything else or a duration that is not positive.
    """
    if isinstance(value, bool) or value is None:
        seconds = None
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds, rest = 0.0, value.strip().lower()
        parts = _PART.findall(rest)
        if not parts or _PART.sub("", rest).strip():
            seconds = None
        else:
            for number, unit in parts:
                if unit not in ("", *_UNITS):
                    seconds = None
                    break
                seconds += float(number) * _UNITS.get(unit, 1)
    else:
        seconds = None
    if seconds is None or not seconds > 0 or seconds != seconds:
        raise ValueError(f"{name} must be a positive duration: seconds, or a number with a "
                         f"unit s, m, h or d (3600, '3600s', '90m', '1h', '1h30m'). "
                         f"Received: {name}={value!r}")
    return seconds


def trial_seconds_per_epoch(records, model):
    """The largest seconds per epoch of `model`'s finished trials in `records`, or None."""
    rates = [float(r["seconds"]) / r["epochs_run"] for r in records.values()
             if r.get("model") == model and r.get("status") in ("completed", "stopped_early")
             and r.get("epochs_run") and r.get("seconds")]
    return max(rates) if rates else None


class Clock:
    """The search's clock and budget (see the module docstring).

    Args:
        directory: the search directory (holds clock.json).
        budget_s: the budget in seconds, or None (the clock only counts).
        retrain: keep time for retraining the best trial inside the budget.
            Defaults to False.
        retrain_epochs: epochs of that retrain, or None for the best trial's own.
            Defaults to None.
        started: `time.time()` when this session began (the search's set-up
            counts too). Defaults to now.
    """

    def __init__(self, directory, budget_s=None, *, retrain=False, retrain_epochs=None,
                 started=None):
        self.directory = directory
        self.budget_s = budget_s
        self.retrain = retrain
        self.retrain_epochs = retrain_epochs
        previous = zio.read_json(os.path.join(directory, CLOCK_FILE), default=None) or {}
        self._before = float(previous.get("spent_s", 0.0))
        self._start = time.time() if started is None else started

    def spent(self):
        """Seconds the search has run, earlier processes included."""
        return self._before + time.time() - self._start

    def save(self):
        os.makedirs(self.directory, exist_ok=True)
        zio.write_json(os.path.join(self.directory, CLOCK_FILE),
                       {"spent_s": round(self.spent(), 3), "budget_s": self.budget_s,
                        "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def remaining(self):
        """Seconds of the budget left (None without a budget)."""
        if self.budget_s is None:
            return None
        return self.budget_s - self.spent()

    def reserve(self, records):
        """Seconds kept for retraining the best finished trial (0 without `retrain`).

        A tenth more than its seconds per epoch times its epochs, plus
        RETRAIN_OVERHEAD_S for evaluation and export.
        """
        if not self.retrain:
            return 0.0
        done = [r for r in records.values() if r.get("status") in ("completed", "stopped_early")
                and r.get("score") is not None and r.get("epochs_run") and r.get("seconds")]
        if not done:
            return 0.0
        reverse = done[0].get("direction", "max") == "max"
        best = sorted(done, key=lambda r: r["score"], reverse=reverse)[0]
        # retrain_best trains the trial's recipe epochs (Hyperband: max_epochs, not its round's).
        epochs = (self.retrain_epochs or (best.get("recipe") or {}).get("epochs")
                  or best.get("epochs") or best["epochs_run"])
        return 1.1 * float(best["seconds"]) / best["epochs_run"] * epochs + RETRAIN_OVERHEAD_S

    def epochs_for_retrain(self, trial, *, most):
        """Epochs for retraining `trial` in what is left of the budget.

        As many as fit (its seconds per epoch plus a tenth, and
        RETRAIN_OVERHEAD_S, as `reserve` counts them), at most `most` (the
        registered recipe's, which a retrain without a budget trains) and never
        fewer than the trial's own, which `reserve` kept time for: a search that
        ended early leaves its unused time to the retrain, and a schedule (one-cycle,
        cosine) then spans the epochs that actually run instead of being cut off.
        """
        epochs = int((trial.get("recipe") or {}).get("epochs") or trial.get("epochs")
                     or trial["epochs_run"])
        remaining = self.remaining()
        if remaining is None or not trial.get("epochs_run") or not trial.get("seconds"):
            return epochs
        rate = 1.1 * float(trial["seconds"]) / trial["epochs_run"]
        fit = int((remaining - RETRAIN_OVERHEAD_S) // rate)
        return max(epochs, min(fit, int(most)))

    def left_for_trials(self, records):
        """Seconds a new trial may use: what is left less the retrain's reserve (None: no budget)."""
        remaining = self.remaining()
        if remaining is None:
            return None
        return remaining - self.reserve(records)

    def stop_reason(self, records, models, min_epochs=1):
        """Why no further trial may start, or None.

        Args:
            records: {trial_id: zoo_trial.json} of the search.
            models: the model names the search may still propose.
            min_epochs: the fewest epochs a new trial can have. Defaults to 1.
        """
        left = self.left_for_trials(records)
        if left is None:
            return None
        reserve = self.reserve(records)
        kept = f" (keeping {reserve:.0f} s for the retrain)" if reserve else ""
        if left <= 0:
            return f"time budget of {self.budget_s:.0f} s spent{kept}"
        rates = [trial_seconds_per_epoch(records, m) for m in models]
        if all(r is not None for r in rates) and min(rates) * min_epochs > left:
            return (f"time budget: {left:.0f} s left{kept}, and the quickest model needs "
                    f"{min(rates) * min_epochs:.0f} s for a trial")
        from tuning.results import _sort_key
        ordered = [records[t] for t in sorted(records, key=_sort_key)]
        tail = [r for r in ordered if r.get("status") in ("completed", "stopped_early", "failed",
                                                          "skipped")][-MAX_SKIPS:]
        if len(tail) == MAX_SKIPS and all(r.get("reason") == SKIP_REASON for r in tail):
            return f"time budget: the last {MAX_SKIPS} trials proposed would not fit in {left:.0f} s"
        return None

    def skip_reason(self, records, model, epochs):
        """Why a trial of `model` for `epochs` may not start, or None."""
        left = self.left_for_trials(records)
        if left is None:
            return None
        rate = trial_seconds_per_epoch(records, model)
        if left <= 0 or (rate is not None and rate * epochs > left):
            need = f"~{rate * epochs:.0f} s" if rate is not None else "time"
            return f"needs {need} ({epochs} epochs of {model}); {max(left, 0):.0f} s left"
        return None


def deadline_callback(clock, reserve_s=0.0):
    """A Keras callback: stop after the epoch that leaves less than one epoch's time.

    Args:
        clock: a `Clock` with a budget.
        reserve_s: seconds to keep after the fit (the retrain's). Defaults to 0.
    """
    import keras

    class BudgetDeadline(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.stopped_epoch = None

        def on_train_begin(self, logs=None):
            self.stopped_epoch = None
            self._t = time.time()

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.time()

        def on_epoch_end(self, epoch, logs=None):
            took = time.time() - self._t
            if clock.remaining() - reserve_s < took:
                self.stopped_epoch = epoch
                self.model.stop_training = True

    return BudgetDeadline()
