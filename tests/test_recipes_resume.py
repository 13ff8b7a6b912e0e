"""A run interrupted before `Recipe` gained fields still resumes (the fields read as defaults)."""

import json

import keras
import pytest

import zoo
from zoo import training


class Interrupted(Exception):
    pass


class InterruptInSecondEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch == 2:
            raise Interrupted("simulated crash in epoch 2")


# Fields added to the recipe after runs were already on disk (issue 20).
NEW_FIELDS = ("steps_per_execution", "ema_momentum", "tta")


def _edit_recipe(run_dir, edit):
    path = run_dir / "config.json"
    config = json.loads(path.read_text())
    edit(config["recipe"])
    path.write_text(json.dumps(config))


def test_a_recipe_recorded_without_the_new_fields_resumes_and_a_changed_one_is_refused(tmp_path):
    kwargs = dict(run_dir=str(tmp_path / "mlp"), epochs=2, export=False, verbose=0,
                  model_kwargs={"hidden_units": (8,)})
    with pytest.raises(Interrupted):
        training.train("mlp", callbacks=[InterruptInSecondEpoch()], **kwargs)
    run_dir = tmp_path / "mlp"

    def drop_new_fields(recipe):
        for name in NEW_FIELDS:
            del recipe[name]

    # An older run: the recipe as written before these fields existed.
    _edit_recipe(run_dir, drop_new_fields)
    # A recorded value that differs from the call is still a different configuration,
    # whether the call or the record holds the non-default value.
    with pytest.raises(ValueError, match=r"different configuration \(recipe differ"):
        training.train("mlp", recipe=zoo.get_spec("mlp").recipe.replace(ema_momentum=0.99),
                       **kwargs)
    _edit_recipe(run_dir, lambda recipe: recipe.update(tta=True))
    with pytest.raises(ValueError, match=r"different configuration \(recipe differ"):
        training.train("mlp", **kwargs)
    _edit_recipe(run_dir, lambda recipe: recipe.pop("tta"))

    result = training.train("mlp", **kwargs)
    assert result.resumed
    assert result.history["epoch"] == [0.0, 1.0]
