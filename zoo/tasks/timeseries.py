"""Hooks of the forecasters: numeric CSV -> chronological windows, normalisation, baselines.

`SeriesHooks.load_source` reads `csv:PATH` (`zoo.readers.numeric_table`);
`zoo.splits.series_splits` splits the rows CHRONOLOGICALLY into train /
validation / test parts (the last rows are the test period) and cuts each
part separately into (lookback, horizon) windows, so no window crosses a
boundary and nothing from the future leaks into training.  Normalisation statistics come from the training part only;
`wrap_model` puts a `keras.layers.Normalization` in front of the forecaster
and a `Denormalization` behind it, so the saved and exported model takes a
raw window and returns forecasts in original units:

    zoo train gru_forecaster --data csv:series.csv --target load --lookback 48 --horizon 12

Options: target (a column, or several separated by commas), lookback,
horizon, features (default: every numeric column; targets are always
inputs too), season (seasonal-naive period; default: estimated from the
training part's autocorrelation).  `evaluate` reports MAE/RMSE in original
units next to the naive last-value and seasonal-naive baselines.
"""

import numpy as np

from zoo import checks
from zoo.readers import numeric_table
from zoo.splits import series_splits
from zoo.tasks import TaskHooks


def with_normalization(model, extras):
    """`model` between a Normalization (inputs) and a Denormalization (outputs) layer."""
    import keras

    from zoo.models.layers.sequence import Denormalization

    if any(isinstance(layer, Denormalization) for layer in model.layers):
        return model  # already wrapped (a resumed run)
    lookback, features = model.inputs[0].shape[1:]
    if features != len(extras["columns"]):
        raise ValueError(f"Model {model.name!r} takes {features} features but the data has "
                         f"{len(extras['columns'])}: {extras['columns']}.")
    horizon, targets = extras["horizon"], len(extras["targets"])
    expected = (horizon,) if targets == 1 else (horizon, targets)
    if tuple(model.outputs[0].shape[1:]) != expected:
        raise ValueError(
            f"Model {model.name!r} outputs {tuple(model.outputs[0].shape[1:])} per window but "
            f"the data asks for horizon={horizon} steps of {targets} target(s) {expected}. "
            f"Build it with horizon={horizon}, num_targets={targets}.")
    inputs = keras.Input(shape=(lookback, features), name="window")
    # float32 even under a mixed_float16 policy: raw values above 65504 would
    # overflow float16, and forecasts in original units need its precision.
    x = keras.layers.Normalization(axis=-1, mean=extras["feature_mean"],
                                   variance=extras["feature_var"], dtype="float32",
                                   name="normalization")(inputs)
    outputs = Denormalization(extras["target_mean"], extras["target_std"], dtype="float32",
                              name="predictions")(model(x))
    return keras.Model(inputs, outputs, name=f"{model.name}_normalized")


def baseline_forecasts(x, target_index, horizon, season=None):
    """Naive last-value and seasonal-naive forecasts of windows x (n, lookback, columns).

    Returns {"naive": (n, horizon, targets), "seasonal_naive": ... or absent}.
    """
    history = x[:, :, target_index]
    last = history[:, -1:, :]
    out = {"naive": np.repeat(last, horizon, axis=1)}
    lookback = x.shape[1]
    if season and season <= lookback:
        # y[t + h] = y[t + h - k*season] with the smallest k that lands in the window.
        steps = [lookback - season + (h % season) for h in range(horizon)]
        out["seasonal_naive"] = history[:, steps, :]
    return out


def forecast_metrics(model, x, y, extras, batch_size=256):
    """MAE/RMSE in original units for the model and the naive baselines."""
    pred = np.asarray(model.predict(x, batch_size=batch_size, verbose=0), "float64")
    y = np.asarray(y, "float64")
    if y.ndim == 2:
        y, pred = y[..., None], pred.reshape(y.shape)[..., None]

    def scores(p):
        err = p - y
        return float(np.abs(err).mean()), float(np.sqrt((err ** 2).mean()))

    metrics = {}
    metrics["test_mae"], metrics["test_rmse"] = scores(pred)
    for name, p in baseline_forecasts(x, extras["target_index"], y.shape[1],
                                      extras.get("season")).items():
        metrics[f"{name}_mae"], metrics[f"{name}_rmse"] = scores(p)
    metrics["mae_vs_naive"] = metrics["test_mae"] / max(metrics["naive_mae"], 1e-12)
    metrics["season"] = extras.get("season")
    return metrics


class SeriesHooks(TaskHooks):
    """Numeric CSV windows, train-only normalisation and baseline metrics for forecasters."""

    # load_source also receives seed, validation_split, test_split and classes.
    data_options = {
        "target": "column(s) to forecast, comma-separated (default: every column)",
        "lookback": "input window in steps",
        "horizon": "steps to forecast",
        "features": "input columns, comma-separated (default: every numeric column)",
        "season": "seasonal period of the naive baseline (default: estimated)",
    }


    def load_source(self, spec, source, options):
        if not (isinstance(source, str) and source.startswith("csv:")):
            return None
        options = dict(options or {})
        path = source.partition(":")[2]
        lookback = options.get("lookback")
        lookback = spec.input_shape[0] if lookback is None else lookback
        horizon = options.get("horizon")
        horizon = spec.arguments.get("horizon", 1) if horizon is None else horizon
        lookback = checks.positive_int("lookback", lookback)
        horizon = checks.positive_int("horizon", horizon)
        values, columns, targets = numeric_table(path, target=options.get("target"),
                                                 features=options.get("features"))
        return series_splits(values, columns=columns, targets=targets, lookback=lookback,
                             horizon=horizon,
                             validation_split=options.get("validation_split", 0.1),
                             test_split=options.get("test_split", 0.2),
                             season=options.get("season"), source=source)

    def wrap_model(self, model, bundle):
        if "feature_mean" not in bundle.extras:
            return model  # arrays from Python: trained as given
        return with_normalization(model, bundle.extras)

    def loss_and_metrics(self, loss, model, *, recipe):
        import keras

        from zoo.models.layers.sequence import Denormalization, StandardizedError

        loss, metrics = super().loss_and_metrics(loss, model, recipe=recipe)
        denormalization = [layer for layer in model.layers
                           if isinstance(layer, Denormalization)]
        kinds = {keras.losses.MeanSquaredError: "mse", keras.losses.MeanAbsoluteError: "mae"}
        if denormalization and type(loss) in kinds:
            # Same minimiser, O(1) gradients: metrics (MAE/RMSE) stay in original units.
            loss = StandardizedError(denormalization[-1].std, kind=kinds[type(loss)])
        return loss, metrics

    def evaluate(self, model, bundle):
        if "target_index" not in bundle.extras:
            return {}
        return forecast_metrics(model, bundle.arrays.x_test, bundle.arrays.y_test,
                                bundle.extras)
