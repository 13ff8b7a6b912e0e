"""Registry behaviour: listing, lookup errors, registration rules, no TensorFlow at list time."""

import json
import subprocess
import sys

import pytest

import zoo
from zoo import registry


def test_list_is_sorted_and_filtered():
    names = zoo.list_models()
    assert names == sorted(names)
    assert {"perceptron", "mlp", "lenet5"} <= set(names)
    assert zoo.list_models("lenet*") == ["lenet5"]
    assert zoo.list_models(family="mlp") == ["mlp", "mlp_regressor", "perceptron"]
    assert "mlp_regressor" in zoo.list_models(task="regression")
    assert "lenet5" not in zoo.list_models(task="regression")


def test_list_rejects_unknown_filters():
    with pytest.raises(ValueError, match="task must be one of .* Received: task='vision'"):
        zoo.list_models(task="vision")
    with pytest.raises(ValueError, match="family must be one of .* Received: family='nope'"):
        zoo.list_models(family="nope")


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"Received: name='lenet'\. Did you mean: lenet5"):
        zoo.get_spec("lenet")
    with pytest.raises(ValueError, match="Unknown model name"):
        zoo.build("no_such_model_xyz")
    with pytest.raises(TypeError, match="must be a string"):
        zoo.get_spec(5)


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        @registry.register(family="mlp", task="classification", test_input_shape=(4,))
        def mlp(*, input_shape=(4,)):
            """Duplicate."""


def test_builders_must_be_keyword_only():
    with pytest.raises(TypeError, match="keyword-only"):
        @registry.register(family="x", task="classification", test_input_shape=(4,),
                           name="positional_builder_for_test")
        def builder(input_shape):
            """Positional."""
    assert "positional_builder_for_test" not in zoo.list_models()


def test_register_validates_task():
    with pytest.raises(ValueError, match="task must be one of"):
        registry.register(family="x", task="vision", test_input_shape=(4,))


def test_unknown_builder_argument_names_allowed_ones():
    with pytest.raises(ValueError, match=r"Unknown argument\(s\) \['hidden'\] .*Allowed:"):
        zoo.build("mlp", hidden=3)


def test_builder_argument_errors_are_value_errors():
    with pytest.raises(ValueError, match="num_classes must be a positive integer. "
                                         "Received: num_classes=0"):
        zoo.build("mlp", num_classes=0)
    with pytest.raises(ValueError, match="activation must be one of"):
        zoo.build("mlp", activation="swishy")
    with pytest.raises(ValueError, match=r"too small .* minimum is \(32, 32, None\)"):
        zoo.build("lenet5", input_shape=(28, 28, 1))
    with pytest.raises(ValueError, match="rank 3"):
        zoo.build("lenet5", input_shape=(32, 32))


def test_spec_metadata_and_recipe():
    spec = zoo.get_spec("lenet5")
    assert spec.input_shape == (32, 32, 1)
    assert spec.num_params == 61_706
    assert "LeCun" in spec.paper
    d = spec.to_dict()
    json.dumps(d)
    assert d["recipe"]["optimizer"] == "adam"
    assert d["arguments"]["num_classes"] == 10
    with pytest.raises(ValueError, match="learning_rate must be a positive"):
        spec.recipe.replace(learning_rate=-1.0)
    with pytest.raises(ValueError, match="Unknown recipe fields"):
        spec.recipe.replace(lr=0.1)


def _family(*, depth, width=8, name):
    """A family builder for the variant tests: returns its arguments."""
    return {"depth": depth, "width": width, "name": name}


def test_variant_is_its_base_with_model_args_fixed():
    import inspect

    variant = registry.Variant("tiny3", _family, model_args={"depth": 3},
                               defaults={"name": "tiny3"}, doc="Tiny-3.\n\nArgs: as `_family`.")
    assert str(inspect.signature(variant)) == "(*, width=8, name='tiny3')"
    assert variant(width=2) == {"depth": 3, "width": 2, "name": "tiny3"}
    assert variant.__doc__.startswith("Tiny-3.") and variant.__name__ == "tiny3"
    with pytest.raises(TypeError):
        variant(depth=4)  # fixed by the variant, no argument of it


def test_variant_declaration_errors():
    with pytest.raises(TypeError, match=r"takes no argument\(s\) \['blocks'\]"):
        registry.register_variant("bad_variant_for_test", _family, model_args={"blocks": 2},
                                  defaults={"name": "x"}, doc="Bad.", family="x",
                                  task="classification", test_input_shape=(4,))
    with pytest.raises(TypeError, match=r"give \['depth'\] a value"):
        registry.register_variant("bad_variant_for_test", _family, defaults={"name": "x"},
                                  doc="Bad.", family="x", task="classification",
                                  test_input_shape=(4,))
    assert "bad_variant_for_test" not in zoo.list_models()


@pytest.mark.parametrize("name,base", [("resnet50", "imagenet_resnet"),
                                       ("resnet20", "cifar_resnet"), ("vgg16_bn", "vgg"),
                                       ("bilstm_classifier", "sequence_classifier"),
                                       ("gru_forecaster", "sequence_forecaster")])
def test_registered_variants_report_their_own_arguments(name, base):
    import inspect

    spec = zoo.get_spec(name)
    family = inspect.signature(getattr(inspect.getmodule(spec.builder), base)).parameters
    fixed = set(spec.builder.model_args)
    assert set(spec.arguments) == set(family) - fixed
    assert spec.arguments["name"] == name
    assert spec.description == spec.builder.__doc__.splitlines()[0]
    assert f"`{base}`" in spec.builder.__doc__
    with pytest.raises(ValueError, match=r"Unknown argument\(s\)"):
        zoo.build(name, **{sorted(fixed)[0]: None})


def test_listing_and_help_do_not_import_tensorflow():
    code = ("import sys, io, contextlib, zoo.cli\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    zoo.cli.main(['list']); zoo.cli.main(['info', 'lenet5'])\n"
            "    zoo.cli.main(['list', '--json'])\n"
            "    try:\n        zoo.cli.main(['--help'])\n    except SystemExit:\n        pass\n"
            "assert 'lenet5' in out.getvalue()\n"
            "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_list_details_shows_the_shipped_results_table(capsys, monkeypatch):
    # zoo/results.csv is written by benchmarks/results_table.py: every measured row is
    # shown as it is, beside its plain-Keras baseline; the rest say "not measured".
    import csv
    import os

    from zoo import cli
    with open(os.path.join(os.path.dirname(zoo.__file__), "results.csv"), newline="") as f:
        table = {row["name"]: row for row in csv.DictReader(f)}
    assert cli.main(["list", "--details"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(lines) == set(zoo.list_models())
    measured = [n for n, row in table.items() if row["test_accuracy"]]
    assert measured, "zoo/results.csv holds no measured model"
    for name, line in lines.items():
        row = table.get(name, {})
        if row.get("test_accuracy"):
            assert f"{float(row['test_accuracy']):.4f} on {row['dataset']}" in line, line
            assert ("plain Keras not measured" in line) == (not row["baseline_test_accuracy"])
        else:
            assert line.endswith("not measured"), line
    assert cli.main(["list", "lenet5", "--details", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["results"] == table.get("lenet5")

    monkeypatch.setattr(cli, "_results_table", lambda: {"mlp": {
        "gmacs": "1.7e-05", "dataset": "fashion_mnist", "epochs": "3", "test_accuracy": "0.85",
        "train_seconds": "40.4", "date": "2026-12-04", "baseline_epochs": "5",
        "baseline_test_accuracy": "0.8612", "baseline_seconds": "39.6"},
        "lenet5": {"gmacs": "0.0004", "dataset": "fashion_mnist", "epochs": "1",
                   "test_accuracy": "0.8", "baseline_epochs": "1",
                   "baseline_test_accuracy": "0.79"}})
    assert cli.main(["list", "mlp", "--details"]) == 0
    assert capsys.readouterr().out.split("GMACs  ")[1].strip() == (
        "0.8500 on fashion_mnist after 3 epochs in 40 s (2026-12-04); plain Keras 0.8612 "
        "(5 epochs in 40 s)")
    assert cli.main(["list", "lenet5", "--details"]) == 0
    assert capsys.readouterr().out.split("GMACs  ")[1].strip() == (
        "0.8000 on fashion_mnist after 1 epoch; plain Keras 0.7900 (1 epoch)")
    assert cli._epochs("about 3") == "about 3 epochs"  # a hand-edited cell, as written
