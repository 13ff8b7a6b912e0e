"""kill -9 at the points of a fine-tuning run, then the same call: it ends as if never killed.

A two-phase fine-tuning (head for 2 epochs, then the top stage for 2) of a
ResNet-20 on 8x8 digits is SIGKILLed (by itself, test-side) in phase 1, between
the two phases (phase 1 recorded, phase 2 not started), in phase 2, and while
the finished run is saved; the same call then runs again.  Every rerun must
end with weights bit-identical to the uninterrupted run's, a history.csv of
epochs 0-3 once each, and a finished run (metrics.json, no backup/).

Before: phase 1's kill repeated an epoch in history.csv (0,1,1,2,3: Keras's
BackupAndRestore leaves model._initial_epoch set, so phase 2 restarted at
epoch 1), a kill between the phases emptied history.csv, every kill ended with
other weights (max difference 0.0013-0.0035: each Keras fit draws one training
order more than its epochs, so phase 2 of a resumed run saw other orders), and a
kill while saving lost the run ("You must call compile()", then "a trained model
but no metrics.json").  The head's dropout (0.2, the default) is on: its random
state, which Keras's weights files leave out, is kept in the backup and with each
recorded phase (zoo.callbacks.seed_states), so resumed runs draw the same masks.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

FINETUNE = textwrap.dedent("""
    import os, signal, sys
    import keras, numpy as np
    import transfer
    from transfer import finetuning
    from zoo import runs, training

    point, data, run_dirs = sys.argv[1], sys.argv[2], sys.argv[3:]

    def die(*_, **__):
        os.kill(os.getpid(), signal.SIGKILL)

    class Killer(keras.callbacks.Callback):
        steps_per_execution_aware = True  # so it changes nothing the run computes
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
        def on_train_batch_end(self, batch, logs=None):
            if (point, self.epoch) in (("in_phase_1", 1), ("in_phase_2", 3)):
                die()

    if point == "between_phases":
        record = finetuning._Session._record_phase
        def record_then_die(self, index):
            record(self, index)
            if index == 0:
                die()
        finetuning._Session._record_phase = record_then_die
    if point == "saving":
        write_json = runs.write_json
        runs.write_json = lambda path, obj: die() if path.endswith("metrics.json") else \\
            write_json(path, obj)
    for run_dir in run_dirs:  # one after another, as if the command were typed again
        result = transfer.finetune(
            "resnet20", "npz:" + data, method="two_phase", head_epochs=2, epochs=2, unfreeze=1,
            input_size=8, head_init="random", dropout=0.2, seed=1, deterministic=True,
            batch_size=32, run_dir=run_dir, verbose=0, export=False, callbacks=[Killer()])
        np.savez(run_dir + ".weights.npz", *result.model.get_weights())
""")

POINTS = ("in_phase_1", "between_phases", "in_phase_2", "saving")


def _spawn(point, data, *run_dirs):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-c", FINETUNE, point, data, *run_dirs],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.heavy
def test_a_killed_finetune_resumes_to_the_uninterrupted_weights(tmp_path):
    from zoo import data as zdata
    (x, y), _, _ = zdata.read_source("digits")
    keep = np.concatenate([np.flatnonzero(y == c)[:15] for c in range(10)])
    data = str(tmp_path / "digits.npz")
    np.savez(data, x=x[keep], y=y[keep])

    run_dirs = {point: str(tmp_path / point) for point in POINTS}
    procs = [_spawn(point, data, run_dir) for point, run_dir in run_dirs.items()]
    for proc, point in zip(procs, POINTS):
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == -9, (point, err[-3000:])
        assert not os.path.exists(os.path.join(run_dirs[point], "metrics.json")), point
    # The uninterrupted run, then the same call on each killed run, in one process.
    reference = str(tmp_path / "reference")
    proc = _spawn("never", data, reference, *run_dirs.values())
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    with np.load(reference + ".weights.npz") as f:
        expected = [f[k] for k in f.files]
    for point, run_dir in run_dirs.items():
        with np.load(run_dir + ".weights.npz") as f:
            got = [f[k] for k in f.files]
        assert len(got) == len(expected), point
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b, err_msg=point)
        rows = open(os.path.join(run_dir, "history.csv")).read().splitlines()[1:]
        assert [row.split(",")[0] for row in rows] == ["0", "1", "2", "3"], (point, rows)
        assert os.path.exists(os.path.join(run_dir, "metrics.json")), point
        assert not os.path.exists(os.path.join(run_dir, "backup")), point
        leftovers = [n for top, dirs, files in os.walk(run_dir) for n in dirs + files
                     if ".partial" in n or ".old-" in n or n == ".lock"]
        assert not leftovers, (point, leftovers)
