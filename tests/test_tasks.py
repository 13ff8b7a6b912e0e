"""The task extension point: a model registered with its own `TaskHooks` subclass.

What `zoo.tasks` promises a new task: its data options reach its reader
(and the CLI's flags), its default loss compiles the model, its monitor and
objective are what training and tuning watch, and its evaluate metrics land
in metrics.json, at training time and again when the run is re-evaluated.
"""

import json
import os

import numpy as np
import pytest

import zoo
import zoo.training
from zoo.registry import _REGISTRY, Recipe, register
from zoo.splits import make_splits
from zoo.tasks import TaskHooks, get_hooks

NAME = "tasks_test_sum_regressor"


class SumHooks(TaskHooks):
    """Regress a scaled row sum; mean absolute error; report the gain over predicting the mean."""

    data_options = {"target_scale": "multiply the targets by this number (default 1)"}
    monitor = "val_rmse"  # a metric of the "mae" loss below, not the loss itself

    def load_source(self, spec, source, options):
        x, y = source
        scale = float(options.get("target_scale", 1.0))
        return make_splits((x, np.asarray(y) * scale), None, task="regression",
                           seed=options["seed"], validation_split=options["validation_split"],
                           test_split=options["test_split"])

    def default_loss(self, spec, output_width):
        return "mae"

    def objective(self, spec):
        return "val_rmse", "min"

    def evaluate(self, model, bundle):
        x, y = bundle.arrays.x_test, bundle.arrays.y_test
        error = np.abs(np.asarray(model.predict(x, verbose=0)).reshape(-1) - y).mean()
        baseline = np.abs(bundle.arrays.y_train.mean() - y).mean()
        return {"mae_vs_mean": float(error / baseline)}


@pytest.fixture
def registered():
    """A linear model registered with `SumHooks`, removed from the registry afterwards."""
    def sum_regressor(*, input_shape=(4,), name=NAME):
        """A linear unit over the features.

        Args:
            input_shape: (features,). Defaults to (4,).
            name: model name. Defaults to "tasks_test_sum_regressor".
        """
        import keras

        inputs = keras.Input(shape=input_shape, name="inputs")
        return keras.Model(inputs, keras.layers.Dense(1, name="predictions")(inputs), name=name)

    register(family="tasks_test", task="regression", input_kind="vector", input_policy="data",
             test_input_shape=(4,), paper="none (a test model)", name=NAME,
             hooks=f"{__name__}:SumHooks",
             recipe=Recipe(optimizer="adam", learning_rate=0.1, epochs=8, batch_size=32,
                           early_stopping_patience=None))(sum_regressor)
    try:
        yield zoo.get_spec(NAME)
    finally:
        _REGISTRY.pop(NAME, None)


def _data(n=240):
    x = np.random.default_rng(0).random((n, 4)).astype("float32")
    return x, x.sum(axis=1)


def test_a_registered_task_trains_evaluates_and_reloads(registered, tmp_path):
    import keras

    spec = registered
    assert isinstance(get_hooks(spec), SumHooks)
    data = _data()
    with pytest.raises(ValueError, match=r"Unknown data option\(s\) \['scale'\].*target_scale"):
        zoo.train(NAME, data=data, data_options={"scale": 2.0}, epochs=1, verbose=0)

    p = zoo.training.plan(NAME, data=data, data_options={"target_scale": 2.0})
    assert isinstance(p.hooks, SumHooks) and p.hooks.objective(p.spec) == ("val_rmse", "min")

    result = zoo.train(NAME, data=data, data_options={"target_scale": 2.0}, verbose=0,
                       run_dir=str(tmp_path / "run"), export=False)
    arrays = result.bundle.arrays
    # The task's own reader ran with the task's own option.
    np.testing.assert_allclose(arrays.y_train, 2.0 * arrays.x_train.sum(axis=1), rtol=1e-5)
    assert isinstance(result.model.loss, keras.losses.MeanAbsoluteError)
    assert "val_rmse" in result.history and len(result.history["val_rmse"]) == 8
    # The task's metric is in metrics.json, and the model learned the sum.
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["mae_vs_mean"] == pytest.approx(result.metrics["mae_vs_mean"])
    assert result.metrics["mae_vs_mean"] < 0.3, result.metrics
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data_options"] == {"target_scale": 2.0}
    # Re-evaluating the run resolves the same hooks again from the registry.
    again = zoo.training.evaluate(result.run_dir, data=data)
    assert again["mae_vs_mean"] == pytest.approx(result.metrics["mae_vs_mean"], rel=1e-5)
    assert again["test_loss"] == pytest.approx(result.metrics["test_loss"], rel=1e-5)
    assert os.path.isfile(os.path.join(result.run_dir, "model.keras"))


def test_the_cli_offers_a_registered_task_data_option(registered, capsys):
    from zoo import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--help"])
    assert exit_.value.code == 0
    assert "--target-scale" in capsys.readouterr().out
