"""Time-series forecasting data: numeric CSV -> chronological windowed splits.

`SeriesHooks` (the hooks of the forecasters) reads `csv:PATH`, splits the
rows CHRONOLOGICALLY into train / validation / test parts (the last rows are
the test period), and cuts each part separately into (lookback, horizon)
windows, so no window crosses a boundary and nothing from the future leaks
into training.  Normalisation statistics come from the training part only;
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

import csv
import math
import os

import numpy as np

from zoo import checks
from zoo.tasks import TaskHooks


def _parse_float(text):
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_csv_columns(path):
    """Header and the cells of each column (strings), from a CSV with a header row."""
    if not os.path.isfile(path):
        raise ValueError(f"File does not exist. Received: data='csv:{path}'")
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise ValueError(f"CSV file has no data rows. Received: data='csv:{path}'")
    header = [h.strip() for h in rows[0]]
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"{path} line {line} has {len(row)} fields but the header has "
                             f"{len(header)}.")
    return header, {h: [r[i].strip() for r in rows[1:]] for i, h in enumerate(header)}


def _split_names(value):
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def numeric_table(path, *, target=None, features=None):
    """(values (rows, columns) float32, column names, target names) from a CSV.

    A column counts as numeric when most of its cells parse as numbers; a
    missing or non-numeric cell in a column that is used raises, naming the
    column and line (silently dropping a row would shift the time axis).
    """
    header, columns = read_csv_columns(path)
    parsed = {h: [_parse_float(c) for c in cells] for h, cells in columns.items()}
    numeric = [h for h in header if sum(v is not None for v in parsed[h]) > len(parsed[h]) / 2]
    targets = _split_names(target)
    if targets is None:
        if len(numeric) != 1:
            raise ValueError(f"target is required when the CSV does not have exactly one "
                             f"numeric column; numeric columns: {numeric}. Received: target=None")
        targets = numeric
    for name in targets:
        if name not in header:
            raise ValueError(f"target column not found in the CSV header {header}. "
                             f"Received: target={name!r}")
    chosen = _split_names(features)
    if chosen is None:
        chosen = list(numeric)
    for name in chosen:
        if name not in header:
            raise ValueError(f"features column not found in the CSV header {header}. "
                             f"Received: features={name!r}")
    # Targets are always inputs too: a forecaster needs the series' own history.
    used = [h for h in header if h in chosen or h in targets]
    for name in used:
        argument = "target" if name in targets else "features"
        for line, (cell, value) in enumerate(zip(columns[name], parsed[name]), start=2):
            if value is None:
                what = "missing" if not cell else f"non-numeric ({cell!r})"
                raise ValueError(f"Column {name!r} has a {what} value at {path} line {line}; "
                                 f"time-series columns must be numeric and complete. "
                                 f"Received: {argument} column {name!r}")
    values = np.array([parsed[h] for h in used], dtype="float32").T
    return values, used, targets


def windows(values, target_index, lookback, horizon):
    """All (lookback, horizon) windows of `values` (rows, columns), in time order.

    Returns x (n, lookback, columns) and y (n, horizon, len(target_index)).
    """
    from numpy.lib.stride_tricks import sliding_window_view

    total = lookback + horizon
    if len(values) < total:
        return (np.zeros((0, lookback, values.shape[1]), "float32"),
                np.zeros((0, horizon, len(target_index)), "float32"))
    # sliding_window_view: (n, columns, total) views without copying.
    w = sliding_window_view(values, total, axis=0).transpose(0, 2, 1)
    x = w[:, :lookback, :]
    y = w[:, lookback:, :][:, :, target_index]
    return np.ascontiguousarray(x, "float32"), np.ascontiguousarray(y, "float32")


def estimate_season(series, max_lag):
    """The lag in [2, max_lag] with the highest autocorrelation, or None if none is positive."""
    series = np.asarray(series, "float64")
    series = series - series.mean()
    denom = float((series ** 2).sum())
    if denom == 0 or max_lag < 2:
        return None
    acf = [float((series[lag:] * series[:-lag]).sum()) / denom
           for lag in range(2, min(max_lag, len(series) - 1) + 1)]
    if not acf or max(acf) <= 0:
        return None
    return int(np.argmax(acf)) + 2


def series_splits(values, *, columns, targets, lookback, horizon, validation_split=0.1,
                  test_split=0.2, season=None, source="arrays"):
    """Chronological, windowed `ArraySplits` of a (rows, columns) series.

    Args:
        values: float array (rows, columns) in time order.
        columns: the column names.
        targets: names of the target columns (a subset of `columns`).
        lookback: input window length.
        horizon: steps to forecast.
        validation_split: fraction of rows (after train) for validation. Defaults to 0.1.
        test_split: fraction of the last rows for test. Defaults to 0.2.
        season: seasonal-naive period, or None to estimate it. Defaults to None.
        source: name used in messages. Defaults to "arrays".
    """
    from zoo.data import ArraySplits

    lookback = checks.positive_int("lookback", lookback)
    horizon = checks.positive_int("horizon", horizon)
    checks.fraction("validation_split", validation_split, low=0.0)
    checks.fraction("test_split", test_split, low=0.0)
    if validation_split <= 0 or test_split <= 0 or validation_split + test_split >= 1:
        raise ValueError("validation_split and test_split must be > 0 and sum to < 1. Received: "
                         f"validation_split={validation_split}, test_split={test_split}")
    values = np.asarray(values, "float32")
    if values.ndim == 1:
        values = values[:, None]
    if not np.isfinite(values).all():
        row, col = np.argwhere(~np.isfinite(values))[0]
        raise ValueError(f"Column {columns[col]!r} has a non-finite value at row {row}.")
    target_index = [columns.index(t) for t in targets]
    n = len(values)
    n_test = int(round(n * test_split))
    n_val = int(round(n * validation_split))
    n_train = n - n_val - n_test
    need = lookback + horizon
    parts = {"train": values[:n_train], "validation": values[n_train:n_train + n_val],
             "test": values[n_train + n_val:]}
    for part, rows in parts.items():
        if len(rows) < need:
            raise ValueError(
                f"The series in {source} is too short: its {part} part has {len(rows)} rows "
                f"but one window needs lookback + horizon = {need} rows ({n} rows in all, "
                f"split chronologically {1 - validation_split - test_split:.2f}/"
                f"{validation_split}/{test_split}). Use a longer series or smaller "
                f"lookback/horizon. Received: lookback={lookback}, horizon={horizon}")
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (
        windows(parts[p], target_index, lookback, horizon)
        for p in ("train", "validation", "test"))
    if len(targets) == 1:
        y_tr, y_va, y_te = y_tr[..., 0], y_va[..., 0], y_te[..., 0]
    train = parts["train"].astype("float64")
    std = train.std(axis=0)
    # A constant training column would divide by zero; 1 leaves it centred.
    std = np.where(std > 0, std, 1.0)
    if season is None:
        season = estimate_season(train[:, target_index[0]], lookback)
    elif season is not False:
        season = checks.positive_int("season", season)
        if season > lookback:
            raise ValueError(f"season must be at most lookback={lookback} (the baseline reads "
                             f"it from the window). Received: season={season}")
    extras = {
        "columns": list(columns), "targets": list(targets), "target_index": target_index,
        "lookback": lookback, "horizon": horizon, "season": season or None,
        "feature_mean": train.mean(axis=0).tolist(), "feature_var": (std ** 2).tolist(),
        "target_mean": train.mean(axis=0)[target_index].tolist(),
        "target_std": std[target_index].tolist(),
        "rows": {"train": n_train, "validation": n_val, "test": n - n_train - n_val},
        # zoo.training builds the forecaster for what the data asks.
        "builder_kwargs": {"horizon": horizon, "num_targets": len(targets)},
    }
    return ArraySplits(x_tr, y_tr, x_va, y_va, x_te, y_te, extras=extras)


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

    def compile(self, model, *, optimizer, loss, metrics, recipe, jit_compile=False):
        import keras

        from zoo.models.layers.sequence import Denormalization, StandardizedError

        denormalization = [layer for layer in model.layers
                           if isinstance(layer, Denormalization)]
        kinds = {keras.losses.MeanSquaredError: "mse", keras.losses.MeanAbsoluteError: "mae"}
        if denormalization and type(loss) in kinds:
            # Same minimiser, O(1) gradients: metrics (MAE/RMSE) stay in original units.
            loss = StandardizedError(denormalization[-1].std, kind=kinds[type(loss)])
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile)

    def evaluate(self, model, bundle):
        if "target_index" not in bundle.extras:
            return {}
        return forecast_metrics(model, bundle.arrays.x_test, bundle.arrays.y_test,
                                bundle.extras)
