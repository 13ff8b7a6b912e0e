"""`ZooHyperModel`: a KerasTuner `HyperModel` made from any registered `ModelSpec`.

    from zoo import training
    from tuning.hypermodel import ZooHyperModel

    plan = training.plan("mlp", data="digits")       # data loaded and validated once
    hypermodel = ZooHyperModel(plan)
    model = hypermodel.build(keras_tuner.HyperParameters())   # the registered model

A trial's builder kwargs come from the spec's `search_space` (via
`ModelSpec.space_point`), its recipe from the spec's space and the shared
training space (`tuning.space`).  Models are built by
`zoo.training.build_model` (build, head check, task wrapping, compile from
the recipe) and trained by `zoo.training.fit` (the standard callbacks), on
pipelines re-batched from the plan's validated arrays, so a trial trains
exactly as `zoo train` does.

With no values set, a `HyperParameters` gives the registered model with its
recipe.  Where a spec's space does not default to its own builder defaults
(a space bug: say `hidden_units` (128, 128) vs the builder's (128, 64)), the
default point is pinned to the builder's values, so trial 0 is still the
registered model; `pinned` lists them.
"""

import dataclasses

import keras_tuner as kt

from tuning import space as space_module


def _same(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return tuple(a) == tuple(b)
    return a == b


@dataclasses.dataclass
class TrialConfig:
    """What one point of the space trains: builder kwargs and a full recipe."""

    model_kwargs: dict
    recipe: object
    pinned: bool = False
    model: str = ""


class ZooHyperModel(kt.HyperModel):
    """HyperModel over a plan's spec: its own space plus the shared training space.

    Args:
        plan: a `zoo.training.Plan` (registered model; data already loaded).
        grid: declare discrete learning rates (grid search). Defaults to False.
        max_epochs: epochs a trial's LR schedule is sized for (Hyperband
            trials size it for their own rounds). Defaults to the recipe's.
    """

    def __init__(self, plan, *, grid=False, max_epochs=None):
        super().__init__(name=plan.spec.name)
        self.plan = plan
        self.spec = plan.spec
        self.grid = grid
        self.max_epochs = max_epochs or plan.recipe.epochs
        probe = kt.HyperParameters()
        kwargs, recipe = self.spec.space_point(probe)
        self.spec_names = [hp.name for hp in probe.space]
        self.spec_defaults = dict(probe.values)
        self.spec_recipe_fields = set(recipe)
        arguments = self.spec.arguments
        # The registered model's values where the space's default point differs.
        self.pinned_kwargs = {k: arguments[k] for k, v in kwargs.items()
                              if k in arguments and not _same(v, arguments[k])
                              and k not in plan.model_kwargs}
        self.pinned_recipe = {k: getattr(plan.recipe, k) for k, v in recipe.items()
                              if not _same(v, getattr(plan.recipe, k))}
        self._bundles = {}
        # (hp values, compiled model) of the default point, built by the objective
        # check before the search; trial 0 trains it instead of building it again.
        self.first_model = None

    @property
    def pinned(self):
        """{name: (space default, registered value)} where the default point is pinned."""
        probe = kt.HyperParameters()
        kwargs, recipe = self.spec.space_point(probe)
        out = {k: (kwargs[k], v) for k, v in self.pinned_kwargs.items()}
        out.update({f"recipe.{k}": (recipe[k], v) for k, v in self.pinned_recipe.items()})
        return out

    # ------------------------------------------------------------- the space

    def declare_hyperparameters(self, hp):
        self.point(hp)

    def _is_default_point(self, hp):
        # hp._get_name: the name under the current name scope (a multi-model search's).
        return all(_same(hp.values.get(hp._get_name(n)), self.spec_defaults[n])
                   for n in self.spec_names)

    def point(self, hp):
        """The `TrialConfig` at `hp`'s values (declaring the space on `hp` as it goes)."""
        kwargs, space_recipe = self.spec.space_point(hp)
        pinned = False
        if (self.pinned_kwargs or self.pinned_recipe) and self._is_default_point(hp):
            kwargs.update(self.pinned_kwargs)
            space_recipe.update(self.pinned_recipe)
            pinned = True
        training = space_module.declare_training_space(
            hp, self.plan.recipe, skip=set(self.spec_names) | self.spec_recipe_fields,
            grid=self.grid, monitor=self.plan.hooks.monitor, task=self.spec.task,
            input_kind=self.spec.input_kind)
        fields = {**space_recipe, **training}
        if "batch_size" in fields:
            fields["batch_size"] = int(fields["batch_size"])
        recipe = dataclasses.replace(self.plan.recipe, **fields)
        # The user's fixed builder arguments win over the space.
        model_kwargs = {**kwargs, **self.plan.model_kwargs}
        return TrialConfig(model_kwargs=model_kwargs, recipe=recipe, pinned=pinned,
                           model=self.spec.name)

    # ------------------------------------------------------------- data, build, fit

    def bundle(self, recipe, model=None):
        """The trial's data at `recipe`'s batch size and augmentation (`model`: unused here).

        Pipelines come from `Plan.data` over the plan's validated split (the
        data is indexed and validated once per search), always as fresh
        `tf.data` objects for each trial (`new_trial`): a reshuffling
        pipeline's order depends on how often that object was iterated
        before, so reusing one across trials would make a trial's result
        depend on the trials before it (and a resumed search differ from an
        uninterrupted one).
        """
        key = (int(recipe.batch_size), tuple(recipe.augment))
        if key not in self._bundles:
            self._bundles[key] = self.plan.data(batch_size=key[0], augment=key[1], fresh=True)
        return self._bundles[key]

    def new_trial(self):
        """Forget the previous trial's pipelines (see `bundle`)."""
        self._bundles = {}

    def schedule_epochs(self, hp):
        """Epochs the LR schedule spans: the trial's (Hyperband: its round's last epoch).

        A Hyperband continuation restores the earlier round's optimizer, whose
        step count goes on, so its schedule is sized from epoch 0 to tuner/epochs.
        """
        if "tuner/epochs" in hp.values:
            return int(hp.values["tuner/epochs"])
        return self.max_epochs

    def build(self, hp):
        from zoo import training
        config = self.point(hp)
        return training.build_model(self.plan, model_kwargs=config.model_kwargs,
                                    recipe=config.recipe, epochs=self.schedule_epochs(hp),
                                    bundle=self.bundle(config.recipe))

    def fit(self, hp, model, *args, epochs=None, callbacks=None, initial_epoch=0, verbose=0,
            **kwargs):
        from zoo import training
        config = self.point(hp)
        return training.fit(self.plan, model, epochs=epochs or self.max_epochs,
                            callbacks=callbacks, bundle=self.bundle(config.recipe),
                            recipe=config.recipe, initial_epoch=initial_epoch, verbose=verbose)


class MultiHyperModel(kt.HyperModel):
    """The model as a hyperparameter: `hp.Choice("model", names)`, each model's space under it.

    Each model's own space (its `ZooHyperModel`: spec space and training
    space) is declared in `hp.conditional_scope("model", [name])` and
    `hp.name_scope(name)`, so its hyperparameters are "NAME/learning_rate",
    ... and only the chosen model's are active in a trial.  With no values
    set, a `HyperParameters` gives the first model with its recipe;
    `tuning.tuners` makes the first trials the default point of each model
    in turn.

    Args:
        members: {name: ZooHyperModel}, in the order of the choice.
    """

    def __init__(self, members):
        super().__init__(name="models")
        self.members = dict(members)
        self.names = list(self.members)
        first = self.members[self.names[0]]
        # What the search reads off a single-model hypermodel: the first model's.
        self.plan = first.plan
        self.spec = first.spec
        self.max_epochs = first.max_epochs
        self.first_model = None

    @property
    def pinned(self):
        return {f"{name}/{key}": value for name, member in self.members.items()
                for key, value in member.pinned.items()}

    def declare_hyperparameters(self, hp):
        chosen = hp.Choice("model", self.names, default=self.names[0])
        for name in self.names:
            # Declare every model's space as if it were chosen (values are the
            # defaults), then drop the values of the inactive ones.
            hp.values["model"] = name
            with hp.conditional_scope("model", [name]), hp.name_scope(name):
                self.members[name].point(hp)
        hp.values["model"] = chosen
        for declared in hp.space:
            if not hp.is_active(declared):
                hp.values.pop(declared.name, None)

    def point(self, hp):
        """The chosen model's `TrialConfig` at `hp`'s values."""
        name = hp.Choice("model", self.names, default=self.names[0])
        with hp.conditional_scope("model", [name]), hp.name_scope(name):
            return self.members[name].point(hp)

    def bundle(self, recipe, model=None):
        return self.members[model or self.names[0]].bundle(recipe)

    def new_trial(self):
        for member in self.members.values():
            member.new_trial()

    def schedule_epochs(self, hp):
        return self.members[hp.values.get("model", self.names[0])].schedule_epochs(hp)

    def build(self, hp):
        from zoo import training
        config = self.point(hp)
        member = self.members[config.model]
        return training.build_model(member.plan, model_kwargs=config.model_kwargs,
                                    recipe=config.recipe, epochs=member.schedule_epochs(hp),
                                    bundle=member.bundle(config.recipe))

    def fit(self, hp, model, *args, epochs=None, callbacks=None, initial_epoch=0, verbose=0,
            **kwargs):
        from zoo import training
        config = self.point(hp)
        member = self.members[config.model]
        return training.fit(member.plan, model, epochs=epochs or self.max_epochs,
                            callbacks=callbacks, bundle=member.bundle(config.recipe),
                            recipe=config.recipe, initial_epoch=initial_epoch, verbose=verbose)
