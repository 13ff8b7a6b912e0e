"""Time-series data: windows, chronological splits, train-only normalisation, baselines,
raw-window export in original units, bad input."""

import csv

import numpy as np
import pytest

import zoo
import zoo.training
from zoo.readers import numeric_table
from zoo.splits import estimate_season, series_splits, windows
from zoo.tasks.timeseries import baseline_forecasts


def write_series(path, n=400, *, period=24, level=1000.0, seed=0):
    """A CSV with a timestamp column (non-numeric, ignored) and two numeric columns."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    load = level + 200 * np.sin(2 * np.pi * t / period) + rng.normal(0, 20, n)
    temp = 10 + 5 * np.sin(2 * np.pi * (t - 3) / period) + rng.normal(0, 1, n)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["timestamp", "temp", "load"])
        for i in range(n):
            writer.writerow([f"2024-01-{1 + i // 24:02d}T{i % 24:02d}:00", f"{temp[i]:.3f}",
                             f"{load[i]:.3f}"])
    return path


def test_windows_pair_each_lookback_with_the_next_horizon():
    values = np.arange(20, dtype="float32")[:, None] * np.array([[1.0, 10.0]], "float32")
    x, y = windows(values, [1], lookback=5, horizon=3)
    assert x.shape == (13, 5, 2) and y.shape == (13, 3, 1)
    np.testing.assert_array_equal(x[4, :, 0], [4, 5, 6, 7, 8])
    np.testing.assert_array_equal(y[4, :, 0], [90, 100, 110])


def test_chronological_split_never_crosses_a_boundary():
    n, lookback, horizon = 300, 10, 4
    time_index = np.arange(n, dtype="float32")
    values = np.stack([time_index, np.sin(time_index)], 1)
    s = series_splits(values, columns=["t", "v"], targets=["t"], lookback=lookback,
                      horizon=horizon, validation_split=0.1, test_split=0.2)
    rows = s.extras["rows"]
    assert rows == {"train": 210, "validation": 30, "test": 60}
    bounds = {"train": (0, 210), "val": (210, 240), "test": (240, 300)}
    for part, (x, y) in {"train": (s.x_train, s.y_train), "val": (s.x_val, s.y_val),
                         "test": (s.x_test, s.y_test)}.items():
        low, high = bounds[part]
        steps = np.concatenate([x[:, :, 0], y], axis=1)  # the time index of every value
        assert steps.min() >= low and steps.max() < high, part
        # Each window is lookback + horizon consecutive rows, in order (never shuffled).
        assert (np.diff(steps, axis=1) == 1).all()
        assert len(x) == high - low - lookback - horizon + 1
        assert (np.diff(x[:, 0, 0]) == 1).all()


def test_normalisation_statistics_come_from_the_training_part_only():
    trend = np.arange(500, dtype="float32")  # later parts have larger values
    s = series_splits(trend[:, None], columns=["y"], targets=["y"], lookback=8, horizon=2)
    train_rows = trend[:s.extras["rows"]["train"]]
    assert s.extras["feature_mean"] == pytest.approx([train_rows.mean()])
    assert s.extras["target_std"] == pytest.approx([train_rows.std()])
    assert s.extras["feature_mean"][0] < trend.mean()


def test_baselines_and_season_estimate():
    period = 6
    t = np.arange(240)
    series = np.sin(2 * np.pi * t / period).astype("float32")
    assert estimate_season(series, 24) in (6, 12, 18, 24)
    assert estimate_season(series[:100], 10) == 6
    s = series_splits(series[:, None], columns=["y"], targets=["y"], lookback=12, horizon=4)
    assert s.extras["season"] == 6
    forecasts = baseline_forecasts(s.x_test, [0], 4, season=6)
    y = s.y_test[..., None]
    # A perfectly periodic series: the seasonal-naive forecast is exact, the naive one is not.
    np.testing.assert_allclose(forecasts["seasonal_naive"], y, atol=1e-5)
    assert np.abs(forecasts["naive"] - y).mean() > 0.3
    np.testing.assert_allclose(forecasts["naive"][:, :, 0], s.x_test[:, -1:, 0].repeat(4, 1))


def test_csv_source_selects_numeric_columns_and_targets(tmp_path):
    path = write_series(tmp_path / "series.csv")
    values, columns, targets = numeric_table(str(path), target="load")
    assert columns == ["temp", "load"] and targets == ["load"]  # timestamp is not numeric
    values, columns, targets = numeric_table(str(path), target="load", features="load")
    assert columns == ["load"] and values.shape == (400, 1)
    bundle = zoo.training.load_data("gru_forecaster", f"csv:{path}",
                        options={"target": "load", "lookback": 24, "horizon": 6})
    assert bundle.input_shape == (24, 2)
    assert bundle.arrays.y_train.shape[1:] == (6,)
    assert bundle.extras["builder_kwargs"] == {"horizon": 6, "num_targets": 1}
    both = zoo.training.load_data("lstm_forecaster", f"csv:{path}",
                      options={"target": "load,temp", "lookback": 24, "horizon": 6})
    assert both.arrays.y_train.shape[1:] == (6, 2)


def test_multi_target_forecaster_returns_original_units(tmp_path):
    from zoo.tasks.timeseries import with_normalization

    path = write_series(tmp_path / "series.csv")
    bundle = zoo.training.load_data("lstm_forecaster", f"csv:{path}",
                        options={"target": "load,temp", "lookback": 24, "horizon": 6})
    model = zoo.build("lstm_forecaster", input_shape=(24, 2), horizon=6, num_targets=2, units=4)
    wrapped = with_normalization(model, bundle.extras)
    out = np.asarray(wrapped(bundle.arrays.x_test[:5], training=False))
    assert out.shape == (5, 6, 2)
    # Untrained, the normalised output is near 0, i.e. near each target's training mean.
    assert np.all(np.abs(out[..., 0] - 1000) < 400) and np.all(np.abs(out[..., 1] - 10) < 10)
    with pytest.raises(ValueError, match="horizon=6"):
        with_normalization(zoo.build("lstm_forecaster", input_shape=(24, 2), horizon=3),
                           bundle.extras)


def test_train_forecaster_end_to_end_and_serve_raw_windows(tmp_path):
    """`zoo train gru_forecaster --data csv:... --target load` in miniature, plus serving."""
    from zoo import cli
    from zoo.runs import read_json

    path = write_series(tmp_path / "series.csv", n=600)
    run_dir = tmp_path / "run"
    code = cli.main(["train", "gru_forecaster", "--data", f"csv:{path}", "--target", "load",
                     "--lookback", "24", "--horizon", "6", "--epochs", "6", "--arg",
                     "units=16", "--lr", "0.005", "--out", str(run_dir),
                     "--verbose", "0"])
    assert code == 0
    metrics = read_json(str(run_dir / "metrics.json"))
    print({k: round(v, 3) for k, v in metrics.items() if isinstance(v, float)})
    for key in ("test_mae", "test_rmse", "naive_mae", "naive_rmse", "seasonal_naive_mae"):
        assert key in metrics
    assert metrics["season"] == 24
    assert metrics["test_mae"] < metrics["naive_mae"]
    # The exported model takes a raw window and answers in original units;
    # export_run already compared it with Keras in a fresh TensorFlow-only process.
    import keras
    import tensorflow as tf

    card = read_json(str(run_dir / "model_card.json"))
    assert card["exports"]["saved_model"]["max_abs_diff"] <= 1e-4
    model = keras.saving.load_model(run_dir / "model.keras")
    window = np.load(run_dir / "export_inputs.npz")["inputs"][:3]
    assert window.shape == (3, 24, 2) and window[..., 1].mean() > 500  # raw, not normalised
    serve = tf.saved_model.load(str(run_dir / "saved_model")).signatures["serving_default"]
    (served,) = [v.numpy() for v in serve(window=tf.constant(window)).values()]
    np.testing.assert_allclose(served, np.asarray(model(window, training=False)), atol=1e-3)
    assert served.shape == (3, 6) and 500 < served.mean() < 1500


@pytest.mark.parametrize("cells,options,message", [
    (None, {"target": "power"}, "target not found in the CSV header.*'power'"),
    (None, {}, "target is required"),
    (None, {"target": "load", "features": "humidity"}, "features not found.*'humidity'"),
    ({("load", 50): "n/a"}, {"target": "load"}, "Column 'load'.*non-numeric.*line 52"),
    ({("temp", 10): ""}, {"target": "load"}, "Column 'temp'.*missing.*line 12"),
    (None, {"target": "load", "lookback": 200, "horizon": 12}, "too short.*lookback"),
    (None, {"target": "load", "lookback": 12, "season": 48}, "season"),
    (None, {"target": "load", "lookback": 0}, "lookback"),
])
def test_bad_series_input_names_the_column_or_argument(tmp_path, cells, options, message):
    from zoo.tasks import get_hooks

    path = write_series(tmp_path / "series.csv", n=300)
    if cells:
        rows = list(csv.reader(open(path)))
        for (column, row), value in cells.items():
            rows[row + 1][rows[0].index(column)] = value
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows(rows)
    spec = zoo.get_spec("lstm_forecaster")
    with pytest.raises(ValueError, match=message):
        get_hooks(spec).load_source(spec, f"csv:{path}", options)


def test_short_series_is_refused():
    with pytest.raises(ValueError, match="lookback \\+ horizon = 15"):
        series_splits(np.arange(40, dtype="float32"), columns=["y"], targets=["y"],
                      lookback=12, horizon=3)


def test_standardized_loss_and_float32_ends_under_mixed_precision(tmp_path):
    """Forecasters train on loss in std units; raw-unit ends stay float32 under mixed_float16."""
    import keras

    from zoo.models.layers.sequence import StandardizedError
    from zoo.tasks.timeseries import with_normalization

    loss = StandardizedError([2.0, 10.0])
    y_true = np.zeros((1, 3, 2), "float32")
    y_pred = np.tile(np.array([2.0, 10.0], "float32"), (1, 3, 1))
    assert float(loss(y_true, y_pred)) == pytest.approx(1.0)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert again.std == [2.0, 10.0] and again.kind == "mse"
    assert float(StandardizedError([4.0], kind="mae")(np.zeros((2, 3)), np.full((2, 3), 2.0))) \
        == pytest.approx(0.5)

    values = 1e5 + 1e4 * np.sin(np.arange(300) / 4.0)  # overflows float16 (max 65504)
    s = series_splits(values[:, None], columns=["y"], targets=["y"], lookback=8, horizon=2)
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = with_normalization(zoo.build("gru_forecaster", input_shape=(8, 1), horizon=2,
                                             units=4), s.extras)
    finally:
        keras.config.set_dtype_policy(previous)
    out = np.asarray(model(s.x_test[:4], training=False))
    assert out.dtype == np.float32 and np.isfinite(out).all() and out.min() > 5e4
