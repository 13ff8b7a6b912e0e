"""Every layer class of the exportable models reloads, evaluates and exports in a fresh process.

One process builds every exportable model at its tiny test shape and writes
a run directory (compiled through the training seam; no training needed for
this contract) for each model that brings a layer class no smaller model
brought -- so every class, custom or Keras's, is covered, and a new model
with a new class is covered the moment it is registered; ONE other process, which has imported nothing but `zoo` -- no
family module, no task module -- loads each run with `zoo.runs.load_run`,
re-evaluates it with `zoo.evaluate`, exports it with `zoo.export.export_run`,
and checks every SavedModel against its Keras model in one TensorFlow-only
process.  A custom object that is registered only as a side effect of some
other import fails here (issue 9: `Could not locate class 'VAE'`).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import zoo

EXPORTABLE = [n for n in zoo.list_models() if zoo.get_spec(n).exportable
              and zoo.get_spec(n).trainable]

WRITE = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    sys.path.insert(0, os.environ["ZOO_TESTS_DIR"])
    import zoo
    from zoo import runs, training
    from model_checks import example_batch

    out, names = sys.argv[1], sys.argv[2].split(",")
    rng = np.random.default_rng(0)
    written, covered, built = {}, set(), {}

    def classes(layer):
        found = {type(layer).__name__}
        for sub in getattr(layer, "layers", None) or []:
            found |= classes(sub)
        return found

    for name in names:
        spec = zoo.get_spec(name)
        kwargs = {**spec.test_kwargs, "input_shape": spec.test_input_shape}
        built[name] = (spec, kwargs, spec.build(**kwargs))
    # A run is written for each model that brings a layer class (custom or
    # not) that no smaller model brought: every class is saved here and
    # loaded, evaluated and exported in the fresh process; a deeper stack of
    # the same classes (resnet152 after resnet50) would add minutes, nothing
    # else (each model's own save/load/SavedModel is checked in test_models).
    for name in sorted(names, key=lambda n: built[n][2].count_params()):
        spec, kwargs, probe = built[name]
        if classes(probe) <= covered:
            continue
        covered |= classes(probe)
        x, y = example_batch(spec, probe, 40, rng)
        run_dir = os.path.join(out, name)
        data = None
        if spec.task == "classification" and y is not None and y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0].astype("int32")  # binary labels as class ids
        if (spec.task in ("classification", "regression") and spec.input_kind in ("image", "vector")
                and isinstance(x, np.ndarray) and x.dtype.kind == "f"):
            data = f"npz:{run_dir}.npz"
            np.savez(data[4:], x=x, y=y)
        if data is None:
            # Sources of their own (text, series, seq2seq, generative): the
            # run is written from the model alone; evaluation is skipped.
            config = runs.RunConfig(model=name, task=spec.task, input_kind=spec.input_kind,
                                    input_shape=list(spec.test_input_shape),
                                    model_kwargs=kwargs, recipe=spec.recipe.to_dict())
            model = training.compile_model(probe, spec, epochs=1)
        else:
            p = training.plan(name, data, model_kwargs=kwargs, epochs=1, batch_size=8,
                              test_split=0.25, validation_split=0.2, run_dir=run_dir)
            model = training.build_model(p)
            config = p.config
        runs.claim_run_dir(run_dir, resumed=False)
        runs.write_config(run_dir, config)
        runs.save_model(model, os.path.join(run_dir, runs.MODEL_FILE))
        np.savez(os.path.join(run_dir, "export_inputs.npz"),
                 inputs=x if not isinstance(x, (list, tuple)) else x[0])
        runs.write_json(os.path.join(run_dir, runs.METRICS_FILE), {})
        written[name] = {"run_dir": run_dir, "evaluate": data is not None,
                         "single_input": not isinstance(x, (list, tuple)),
                         "classes": sorted(classes(probe))}
    print(json.dumps({"written": written, "classes": sorted(covered)}))
""")

CHECK = textwrap.dedent("""
    import json, sys
    import zoo
    from zoo import runs
    from zoo.export import export_run, verify_saved_models
    assert "zoo.models.layers" not in sys.modules and "zoo.tasks.generative" not in sys.modules
    written = json.loads(sys.argv[1])
    report, to_verify = {}, []
    for name, entry in written.items():
        config, model = runs.load_run(entry["run_dir"])
        row = {"class": type(model).__name__, "registered": config.registered}
        if entry["evaluate"]:
            row["metrics"] = zoo.evaluate(entry["run_dir"])
        report[name] = row
        exports = export_run(entry["run_dir"], verify=False)
        row["signatures"] = exports["saved_model"]["signatures"]
        if entry["single_input"] and row["signatures"] == ["serving_default"]:
            import numpy as np
            with np.load(entry["run_dir"] + "/export_inputs.npz") as f:
                to_verify.append((name, exports["saved_model"]["path"], model, f["inputs"][:4]))
    diffs = verify_saved_models([(path, model, x) for _, path, model, x in to_verify])
    for (name, *_), diff in zip(to_verify, diffs):
        report[name]["max_abs_diff"] = diff
    print(json.dumps(report))
""")


def _run(script, *args, timeout=900):
    env = {**os.environ, "ZOO_TESTS_DIR": os.path.dirname(__file__)}
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.heavy
def test_every_exportable_run_reloads_evaluates_and_exports_in_a_fresh_process(tmp_path):
    out = _run(WRITE, str(tmp_path), ",".join(EXPORTABLE))
    written = out["written"]
    # Every layer class of every exportable model is in some written run.
    assert set().union(*(set(e["classes"]) for e in written.values())) == set(out["classes"])
    assert {"conv_vae", "dcgan", "conditional_dcgan"} <= set(written), sorted(written)
    report = _run(CHECK, json.dumps(written))
    assert sorted(report) == sorted(written)
    for name, row in report.items():
        assert row["registered"] is True
        assert "serving_default" in row["signatures"], name
        if written[name]["evaluate"]:
            assert row["metrics"], name
            assert all(isinstance(v, float) for v in row["metrics"].values()), (name, row)
        if "max_abs_diff" in row:
            assert row["max_abs_diff"] <= 1e-5, (name, row["max_abs_diff"])
    # The families whose custom classes used to be found only by side effect.
    for name, cls in (("conv_vae", "VAE"), ("dense_vae", "VAE"), ("dcgan", "GAN"),
                      ("conditional_dcgan", "ConditionalGAN")):
        if name in report:
            assert report[name]["class"] == cls
    assert sum("max_abs_diff" in row for row in report.values()) >= len(report) // 2
    assert sum(written[n]["evaluate"] for n in written) >= len(written) // 3


@pytest.mark.heavy
def test_a_run_of_a_users_own_model_evaluates_and_exports(tmp_path):
    """A run of an unregistered keras.Model records that it is not registered, and reloads."""
    script = textwrap.dedent("""
        import json, sys
        import numpy as np, keras
        import zoo
        rng = np.random.default_rng(0)
        x = rng.random((60, 5)).astype("float32"); y = (x.sum(1) > 2.5).astype("int32")
        np.savez(sys.argv[1] + ".npz", x=x, y=y)
        inputs = keras.Input((5,), name="inputs")
        outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(
            keras.layers.Dense(8, activation="relu")(inputs))
        model = keras.Model(inputs, outputs, name="my_model")
        zoo.train(model, data="npz:" + sys.argv[1] + ".npz", epochs=1, run_dir=sys.argv[1],
                  verbose=0)
    """)
    run_dir = str(tmp_path / "mine")
    proc = subprocess.run([sys.executable, "-c", script, run_dir], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check = textwrap.dedent("""
        import json, sys
        import zoo
        from zoo import runs
        from zoo.export import export_run
        config, _ = runs.load_run(sys.argv[1])
        metrics = zoo.evaluate(sys.argv[1])
        exports = export_run(sys.argv[1], formats=("saved_model",), out=sys.argv[1] + "_served")
        print(json.dumps({"registered": config.registered, "base": config.base_model,
                          "metrics": metrics, "diff": exports["saved_model"]["max_abs_diff"]}))
    """)
    out = _run(check, run_dir)
    assert out["registered"] is False and out["base"] is None
    assert set(out["metrics"]) == {"test_accuracy", "test_loss"}
    assert out["diff"] <= 1e-5


@pytest.mark.parametrize("bad, message", [
    ("missing", "no finished run"),
    ("truncated", "damaged"),
    ("bad_config", "not valid JSON"),
])
def test_damaged_runs_fail_with_the_file_named(tmp_path, bad, message):
    from zoo import runs
    run_dir = tmp_path / "run"
    if bad != "missing":
        run_dir.mkdir()
        (run_dir / "config.json").write_text('{"model": "mlp"}' if bad == "truncated" else "{")
        (run_dir / "model.keras").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(runs.RunError, match=message) as info:
        runs.load_run(str(run_dir))
    if bad != "missing":
        assert str(run_dir) in str(info.value)
