"""The `zoo` command: train, evaluate and export end to end, and its errors."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from zoo import cli, startup

ZOO = [sys.executable, "-m", "zoo.cli"]
ENV = {**os.environ, "ZOO_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.mark.heavy
def test_train_export_and_serve_with_plain_tensorflow(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run([*ZOO, "train", "mlp", "--data", "digits", "--epochs", "1",
                           "--out", str(run_dir), "--verbose", "0"],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_no_startup_noise(proc.stderr)
    assert "test accuracy:" in proc.stdout
    assert f"SavedModel: {run_dir / 'saved_model'}" in proc.stdout

    proc = subprocess.run([*ZOO, "export", str(run_dir), "--format", "saved_model", "--out",
                           str(tmp_path / "served")], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_no_startup_noise(proc.stderr)
    assert "max abs diff vs Keras" in proc.stdout

    # saved_model_cli, shipped with TensorFlow, runs the signature too.
    x = np.load(run_dir / "export_inputs.npz")["inputs"][:2]
    np.save(tmp_path / "x.npy", x)
    cli_path = shutil.which("saved_model_cli") or os.path.join(os.path.dirname(sys.executable),
                                                               "saved_model_cli")
    proc = subprocess.run([cli_path, "run", "--dir", str(tmp_path / "served"), "--tag_set",
                           "serve", "--signature_def", "serving_default", "--inputs",
                           f"inputs={tmp_path / 'x.npy'}", "--outdir", str(tmp_path / "out")],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = np.load(tmp_path / "out" / "predictions.npy")

    # Plain Keras loads the model for inference; compiling it again needs the zoo's
    # custom objects (mlp's recipe has a OneCycle rate and a smoothed loss):
    # zoo.runs.load_model registers them.
    import keras
    model = keras.saving.load_model(run_dir / "model.keras", compile=False)
    np.testing.assert_allclose(served, model.predict(x, verbose=0), atol=1e-5)

    assert cli.main(["evaluate", str(run_dir)]) == 0


def _assert_no_startup_noise(stderr):
    for line in stderr.splitlines():
        assert not startup.is_noise(line), line
        assert "InitializeLog" not in line and "oneDNN" not in line, line


# A stand-in `tensorflow` package that prints as the real one does while it
# loads (two known start-up lines), then a real error and a Python line.
_FAKE_TENSORFLOW = """
import os, sys
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written "
            b"to STDERR\\n"
            b"I0000 00:00:1796412360.927007    5260 port.cc:153] oneDNN custom operations are "
            b"on. You may see slightly different numerical results\\n"
            b"E0000 00:00:1796412360.927007    5260 real.cc:1] a real failure\\n")
print("a line of the user's own", file=sys.stderr)
"""


@pytest.mark.parametrize("debug", [False, True])
def test_start_up_lines_are_filtered_real_errors_kept(tmp_path, debug):
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text(_FAKE_TENSORFLOW)
    env = {**ENV, "PYTHONPATH": str(tmp_path), "ZOO_DEBUG": "1" if debug else "0"}
    code = ("from zoo import startup\n"
            "startup.quiet_tensorflow(startup.debug_requested())\n"
            "import tensorflow\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert "E0000 00:00:1796412360.927007    5260 real.cc:1] a real failure" in lines
    assert "a line of the user's own" in lines
    assert any("oneDNN" in line for line in lines) == debug
    assert any("InitializeLog" in line for line in lines) == debug


def test_missing_tensorflow_is_one_line_naming_the_extras(tmp_path):
    code = ("import sys\n"
            "sys.modules['tensorflow'] = None  # as if not installed\n"
            "from zoo import cli\n"
            f"sys.exit(cli.main(['train', 'mlp', '--out', {str(tmp_path / 'run')!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "TensorFlow is not installed" in proc.stderr
    assert "zoo-keras[cpu]" in proc.stderr and "zoo-keras[gpu]" in proc.stderr


def _run(argv, capsys):
    code = cli.main(argv)
    return code, capsys.readouterr()


def test_list_and_info(capsys):
    code, out = _run(["list", "lenet*"], capsys)
    assert code == 0 and out.out.startswith("lenet5")
    code, out = _run(["list", "--family", "mlp", "--json"], capsys)
    assert [m["name"] for m in json.loads(out.out)] == ["mlp", "mlp_regressor", "perceptron"]
    code, out = _run(["info", "lenet5"], capsys)
    assert "61706" in out.out and "LeCun" in out.out


@pytest.mark.parametrize("argv, message", [
    (["train", "lenet"], "Did you mean: lenet5"),
    (["info", "resnet5000"], "Unknown model name"),
    (["train", "mlp", "--data", "imagenet"], "Unknown dataset"),
    (["train", "mlp", "--arg", "depth=3"], "Unknown model argument"),
    (["export", "/nonexistent/run"], "no finished run"),
])
def test_errors_are_one_line_with_exit_code_2(argv, message, capsys, tmp_path):
    code, out = _run(argv + (["--out", str(tmp_path / "r")] if argv[0] == "train" else []),
                     capsys)
    assert code == 2
    assert message in out.err and "Traceback" not in out.err


@pytest.mark.parametrize("argv, flag", [
    (["train", "mlp", "--epochs", "0"], "--epochs"),
    (["train", "mlp", "--batch-size", "-1"], "--batch-size"),
    (["train", "mlp", "--lr", "0"], "--lr"),
    (["train", "mlp", "--lr", "inf"], "--lr"),
    (["train", "mlp", "--optimizer", "sgdx"], "--optimizer"),
    (["train", "mlp", "--schedule", "linear"], "--schedule"),
    (["train", "mlp", "--seed", "-3"], "--seed"),
    (["train", "mlp", "--arg", "hidden_units=[64,"], "--arg"),
    (["train", "mlp", "--arg", "batch_norm=no"], "--arg"),
    (["train", "mlp", "--classes", "3,x"], "--classes"),
    (["evaluate", "runs/x", "--batch-size", "0"], "--batch-size"),
    (["train", "mlp", "--label-smoothing", "1"], "--label-smoothing"),
    (["train", "mlp", "--ema", "0"], "--ema"),
])
def test_argument_types_are_checked(argv, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "Traceback" not in err


def test_bad_run_directories_are_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{not json")
    (run_dir / "model.keras").write_bytes(b"")
    for argv in (["evaluate", str(run_dir)], ["export", str(run_dir)]):
        code, out = _run(argv, capsys)
        assert code == 2 and "Traceback" not in out.err
        assert len(out.err.strip().splitlines()) == 1
        assert str(run_dir / "config.json") in out.err
    # A folder that is not a run is refused, never deleted, even with --overwrite.
    (tmp_path / "data.csv").write_text("1,2,0\n")
    code, out = _run(["train", "mlp", "--out", str(tmp_path), "--overwrite"], capsys)
    assert code == 2 and "holds no run" in out.err
    assert (tmp_path / "data.csv").exists()


@pytest.mark.heavy
def test_generative_run_trains_exports_and_evaluates_in_separate_processes(tmp_path):
    """zoo train -> zoo export -> zoo evaluate, each a fresh process (custom VAE class)."""
    run_dir = tmp_path / "vae"
    steps = [["train", "dense_vae", "--data", "digits", "--epochs", "1", "--arg", "latent_dim=2",
              "--arg", "hidden_units=[16]", "--out", str(run_dir), "--verbose", "0",
              "--no-export"],
             ["export", str(run_dir), "--format", "saved_model", "keras"],
             ["evaluate", str(run_dir)]]
    outputs = []
    for argv in steps:
        proc = subprocess.run([*ZOO, *argv], capture_output=True, text=True, env=ENV)
        assert proc.returncode == 0, (argv[0], proc.stderr[-3000:])
        outputs.append(proc.stdout)
    assert "saved_model:" in outputs[1] and "keras:" in outputs[1]
    metrics = json.loads(outputs[2])
    assert np.isfinite(metrics["test_loss"]) and "test_elbo" in metrics, metrics
    card = json.loads((run_dir / "model_card.json").read_text())
    assert card["registered"] is True and card["base_model"] == "dense_vae"


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "usage: zoo" in capsys.readouterr().out


def test_label_smoothing_zero_turns_a_recipes_smoothing_off():
    args = cli.build_parser().parse_args(["train", "mlp", "--label-smoothing", "0"])
    assert cli.recipe_option_changes(args)["label_smoothing"] == 0.0


def test_a_diverging_run_ends_failed_not_finished(tmp_path, capsys):
    """--lr 1e30: one line, exit 2, metrics.json valid JSON marking the run failed."""
    run_dir = tmp_path / "nan"
    code, out = _run(["train", "mlp", "--lr", "1e30", "--epochs", "3", "--out", str(run_dir),
                      "--verbose", "0"], capsys)
    assert code == 2 and "Training diverged" in out.err and "Traceback" not in out.err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "nan" in metrics["reason"]
    # The epoch that blew up, counted once (the backup of that epoch is not added again).
    assert metrics["epochs_run"] <= 3 and f"in epoch {metrics['epochs_run']}" in out.err
    assert not (run_dir / "model.keras").exists() and not (run_dir / "backup").exists()
    code, out = _run(["evaluate", str(run_dir)], capsys)
    assert code == 2 and "failed run" in out.err
    code, out = _run(["train", "mlp", "--lr", "1e30", "--epochs", "3", "--out", str(run_dir)],
                     capsys)
    assert code == 2 and "failed run" in out.err
