"""kill -9 at every point of a run, then the same command: the run finishes intact.

Each case trains `mlp` on digits in a subprocess that SIGKILLs itself at one
point (a callback or a patched step, test-side only), then runs the same
call again.  Every rerun must finish, and since every kill lands at or after
an epoch boundary or before the first backup, its final weights must equal
the uninterrupted run's (same seed, deterministic ops, the data order
restored per epoch).  One last process reloads, evaluates and exports every
run (and verifies the export that was killed half-way).  Plus: two processes
on one run directory -- the second is refused and the first finishes intact.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

TRAIN = textwrap.dedent("""
    import os, signal, sys
    import keras, numpy as np
    import zoo
    from zoo import export, runs, training

    kill_at, run_dirs = sys.argv[1], sys.argv[2:]

    def die(*_, **__):
        os.kill(os.getpid(), signal.SIGKILL)

    class Killer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if kill_at == "during_epoch_1" and batch == 2:
                die()
        def on_epoch_end(self, epoch, logs=None):
            if kill_at == "epoch_boundary" and epoch == 1:
                die()

    if kill_at == "after_fit":
        training.evaluate_model = die
    if kill_at == "before_marker":
        write_json = runs.write_json
        runs.write_json = lambda path, obj: die() if path.endswith("metrics.json") else \\
            write_json(path, obj)
    if kill_at == "during_export":
        export.export_saved_model = die
    if kill_at.startswith("writing_"):  # the temporary file is whole, the rename never comes
        from zoo import io as zio
        replace, target = zio.replace, kill_at[len("writing_"):].replace("_", ".")
        zio.replace = lambda temporary, path: die() if path.endswith(target) else \
            replace(temporary, path)
    for run_dir in run_dirs:  # one after another, as if the command were typed again
        result = zoo.train("mlp", data="digits", epochs=4, seed=1, deterministic=True,
                           batch_size=32, run_dir=run_dir, verbose=0,
                           export=kill_at == "during_export",
                           callbacks=[Killer()], model_kwargs={"hidden_units": (16,)})
        np.savez(run_dir + ".weights.npz", *result.model.get_weights())
""")

POINTS = ("during_epoch_1", "epoch_boundary", "after_fit", "before_marker", "during_export",
          "writing_model_keras", "writing_metrics_json")


def _spawn(kill_at, *run_dirs):
    return subprocess.Popen([sys.executable, "-c", TRAIN, kill_at, *run_dirs],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(proc):
    out, err = proc.communicate(timeout=600)
    return proc.returncode, err


@pytest.mark.heavy
def test_a_kill_at_any_point_then_the_same_command_finishes_with_the_same_weights(tmp_path):
    import numpy as np

    reference = str(tmp_path / "reference")
    runs_ = {point: str(tmp_path / point) for point in POINTS}
    # All at once: processes, not epochs, are the cost here.
    procs = [_spawn(p, d) for p, d in runs_.items()]
    for proc, point in zip(procs, POINTS):
        code, err = _wait(proc)
        assert code == -9, (point, err[-2000:])
        assert not os.path.exists(os.path.join(runs_[point], "metrics.json")), point
        if point.startswith("writing_"):  # the killed write's temporary file is there
            assert [n for n in os.listdir(runs_[point]) if ".partial" in n], point
    # The uninterrupted run, then the same call again on each killed run: each
    # resumes (or restarts, before any backup) and finishes.  One process
    # runs them in turn: a TensorFlow start-up per rerun checks nothing more.
    code, err = _wait(_spawn("never", reference, *runs_.values()))
    assert code == 0, err[-3000:]
    with np.load(reference + ".weights.npz") as f:
        expected = [f[k] for k in f.files]
    for point, run_dir in runs_.items():
        assert os.path.exists(os.path.join(run_dir, "metrics.json")), point
        assert not os.path.exists(os.path.join(run_dir, "backup")), point
        with np.load(run_dir + ".weights.npz") as f:
            got = [f[k] for k in f.files]
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b, err_msg=point)
        history = open(os.path.join(run_dir, "history.csv")).read().splitlines()
        assert len(history) == 1 + 4, (point, history)  # header + one row per epoch, no repeats
    # Every rerun evaluates and exports in a fresh process; the export killed
    # half-way is exported again over what its rerun wrote and verified in yet
    # another process (a verification per run would only repeat it: the
    # weights are already equal).
    check = textwrap.dedent("""
        import json, os, sys
        import zoo
        from zoo.export import export_run
        out = {}
        for run_dir in sys.argv[1:]:
            verify = run_dir.endswith("during_export")
            exports = export_run(run_dir, overwrite=True, verify=verify)
            assert os.path.exists(os.path.join(exports["saved_model"]["path"], "saved_model.pb"))
            out[run_dir] = [zoo.evaluate(run_dir)["test_accuracy"],
                            exports["saved_model"]["max_abs_diff"] if verify else 0.0]
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", check, *runs_.values()], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for run_dir, (accuracy, diff) in json.loads(proc.stdout.splitlines()[-1]).items():
        assert accuracy > 0.5 and diff <= 1e-5, run_dir
    for run_dir in runs_.values():  # what the killed writes left went with the rerun
        leftovers = [os.path.join(top, n) for top, dirs, files in os.walk(run_dir)
                     for n in dirs + files if ".partial" in n or ".old-" in n or n == ".lock"]
        assert not leftovers, (run_dir, leftovers)


def test_two_processes_on_one_run_directory(tmp_path):
    """The second is refused at once naming the first's process; the first finishes intact."""
    run_dir = str(tmp_path / "run")
    slow = textwrap.dedent("""
        import sys, time, keras, zoo
        class Slow(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 0:
                    open(sys.argv[1] + ".started", "w").close()
                    time.sleep(4)
        zoo.train("mlp", data="digits", epochs=2, run_dir=sys.argv[1], verbose=0,
                  export=False, callbacks=[Slow()])
    """)
    first = subprocess.Popen([sys.executable, "-c", slow, run_dir], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    import time
    deadline = time.time() + 300
    while not os.path.exists(run_dir + ".started") and first.poll() is None \
            and time.time() < deadline:
        time.sleep(0.2)
    from zoo import cli
    proc = subprocess.run([sys.executable, "-m", "zoo.cli", "train", "mlp", "--epochs", "1",
                           "--out", run_dir, "--overwrite"], capture_output=True, text=True)
    code, err = _wait(first)
    assert code == 0, err[-3000:]
    assert proc.returncode == cli.EXIT_USAGE
    assert "in use by process" in proc.stderr and "Traceback" not in proc.stderr
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert metrics["epochs_run"] == 2


# zoo tune ... --retrain-best, killed during the retrain: the search is done, the retrain
# has a backup; the same command finishes it.  The kill comes from inside (a callback
# appended to the retrain's `zoo.train` call), so it always lands mid-retrain.
TUNE = textwrap.dedent("""
    import os, signal, sys
    import keras
    from zoo import cli, training

    if sys.argv[1] == "kill":
        class Killer(keras.callbacks.Callback):
            # Aware: a batch hook would force one step per execution, so the killed run
            # would not compute what the uninterrupted run (no such hook) computes.
            steps_per_execution_aware = True
            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch
            def on_train_batch_end(self, batch, logs=None):
                if self.epoch == 2:  # inside epoch 2, after two epochs' backups
                    os.kill(os.getpid(), signal.SIGKILL)
        train = training.train
        training.train = lambda *a, callbacks=None, **k: train(
            *a, callbacks=[*(callbacks or []), Killer()], **k)
    sys.exit(cli.main(sys.argv[2:]))
""")


@pytest.mark.heavy
def test_a_killed_retrain_best_is_finished_by_the_same_command(tmp_path, capsys):
    import numpy as np
    import keras
    from zoo import cli

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "small.npz", x=rng.normal(size=(60, 5)).astype("float32"),
             y=np.arange(60) % 3)
    # No dropout: its random state is not in the backup (see the dropout test below).
    (tmp_path / "space.json").write_text('{"dropout": [0.0]}')
    search = tmp_path / "search"
    argv = ["tune", "mlp", "--data", f"npz:{tmp_path / 'small.npz'}", "--out", str(search),
            "--tuner", "random", "--max-trials", "2", "--max-epochs", "1", "--arg",
            "hidden_units=[8]", "--space", str(tmp_path / "space.json"), "--deterministic",
            "--retrain-best", "--verbose", "0"]
    proc = subprocess.run([sys.executable, "-c", TUNE, "kill", *argv], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-3000:]
    best_run = search / "best_run"
    assert (search / "trials.csv").exists() and (best_run / "backup").exists()
    assert not (best_run / "metrics.json").exists()

    assert cli.main(argv) == 0  # the same command: the search is done, the retrain resumes
    assert "run: " + str(best_run) in capsys.readouterr().out
    assert cli.main(argv) == 0  # and once more: done, nothing changed
    assert "done: run_dir already holds a finished run" in capsys.readouterr().out
    # The same trial retrained without a kill ends with the same weights and history.
    straight = tmp_path / "straight"
    assert cli.main(["tune", str(search), "--retrain-best", "--run-dir", str(straight),
                     "--verbose", "0"]) == 0
    resumed, expected = (keras.saving.load_model(d / "model.keras", compile=False)
                         for d in (best_run, straight))
    for a, b in zip(resumed.get_weights(), expected.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    epochs = [(d / "history.csv").read_text().splitlines() for d in (best_run, straight)]
    assert [r.split(",")[0] for r in epochs[0]] == [r.split(",")[0] for r in epochs[1]]
    assert not (best_run / "backup").exists() and (best_run / "saved_model").exists()
    leftovers = [n for top, dirs, files in os.walk(search) for n in dirs + files
                 if ".partial" in n or ".old-" in n or n == ".lock"]
    assert not leftovers, leftovers


def test_a_resumed_run_with_dropout_ends_with_the_uninterrupted_weights(tmp_path):
    """Stopped after epoch 2 of 4 and resumed: the dropout masks of epochs 3-4 must be the
    uninterrupted run's (measured: max weight difference 0.0044 with dropout=0.3)."""
    import keras
    import numpy as np
    import zoo

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt("stopped after epoch 2")

    rng = np.random.default_rng(0)
    data = (rng.normal(size=(60, 5)).astype("float32"), np.arange(60) % 3)
    kwargs = dict(epochs=4, seed=1, deterministic=True, verbose=0, export=False,
                  model_kwargs={"hidden_units": (8,), "dropout": 0.3})
    straight = zoo.train("mlp", data, run_dir=str(tmp_path / "a"), **kwargs).model
    with pytest.raises(KeyboardInterrupt):
        zoo.train("mlp", data, run_dir=str(tmp_path / "b"), callbacks=[Stop()], **kwargs)
    resumed = zoo.train("mlp", data, run_dir=str(tmp_path / "b"), **kwargs).model
    for a, b in zip(resumed.get_weights(), straight.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
