"""The results table (zoo/results.csv, shown by `zoo list --details`): each small model on
Fashion-MNIST with its default recipe, beside a plain-Keras baseline of the same architecture.

    python benchmarks/results_table.py --epochs 1 --models mlp lenet5   # a quick check
    python benchmarks/results_table.py --out zoo/results.csv            # the whole table

Every image and vector classifier of the registry gets a row with its
parameter count and GMACs (multiply-accumulates per image at its default input
shape, `zoo.flops.count_macs`; 1 MAC = 2 FLOPs).  Those with at most
`--max-params` parameters (default 2M) are trained:

* zoo: `zoo train NAME --data fashion_mnist --seed 0` in a fresh process: the
  model's own recipe (optimizer, schedule, batch size, augmentation, early
  stopping) and compute dtype (bfloat16 for the batch-normalized convnets on
  a CPU with AMX, `zoo train --mixed-precision auto`; rows measured before
  2026-12-05 19:00 are float32), its epochs capped by `--epochs`; the row records the command,
  the epochs run, the test accuracy (metrics.json) and the wall time of the
  whole process (start-up, data, training, evaluation);
* plain Keras: the same architecture (`zoo.build`: keras.layers, and for
  the batch-normalized convnets the zoo's `BatchNormalization`, Keras's layer
  with a fused training step, so the baseline trains at least as fast as with
  Keras's own; float32, the default policy) in a fresh process with the
  20-line script a Keras user writes: the
  images scaled to [0, 1] and resized to the input the zoo run used, Adam
  1e-3, batch 128, `fit(validation_split=0.1)`, then `evaluate` on the test
  set; it trains for as many epochs as fit in the zoo run's wall time (equal
  wall clock: the issue's comparison), at most 1000.

Resumable: each finished measurement is kept in RUNS/NAME/table.json and is
not repeated; a zoo run killed half-way is resumed by the same `zoo train`
command (its wall time then adds the time of the killed attempts that were
recorded, and the row says `resumed`).  Short runs are far from the papers'
schedules: the figures show what each recipe reaches in that time.
"""

import argparse
import csv
import fnmatch
import json
import os
import shlex
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
COLUMNS = ("name", "family", "input_shape", "params", "gmacs", "dataset", "epochs",
           "test_accuracy", "train_seconds", "baseline_epochs", "baseline_test_accuracy",
           "baseline_seconds", "resumed", "date", "command")
MAX_BASELINE_EPOCHS = 1000

# The plain-Keras baseline, run as `python -c BASELINE NAME H W C SECONDS OUT`.
BASELINE = r"""
import json, sys, time
start = time.perf_counter()
import numpy as np, keras, tensorflow as tf
import zoo
from zoo import data as zdata
from zoo import io as zio

name, height, width, channels, seconds, out = sys.argv[1:]
shape = (int(height), int(width), int(channels))
(x, y), (x_test, y_test), _ = zdata.read_source("fashion_mnist")

def prepare(images):
    images = tf.image.resize(images.astype("float32") / 255.0, shape[:2]).numpy()
    return np.repeat(images, shape[2], axis=-1) if shape[2] != images.shape[-1] else images

x, x_test = prepare(x), prepare(x_test)
spec = zoo.get_spec(name)
model = zoo.build(name, input_shape=shape if spec.input_kind == "image" else x.shape[1:],
                  num_classes=10)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])

class EqualWallClock(keras.callbacks.Callback):
    # Stop after the epoch that leaves less than an epoch of the zoo run's wall time
    # (the evaluation below takes about one more epoch's worth of inference).
    def on_epoch_begin(self, epoch, logs=None):
        self.t = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        took = time.perf_counter() - self.t
        if time.perf_counter() - start + 1.2 * took > float(seconds):
            self.model.stop_training = True

history = model.fit(x, y, batch_size=128, epochs=MAX_EPOCHS, validation_split=0.1, verbose=2,
                    callbacks=[EqualWallClock()])
_, accuracy = model.evaluate(x_test, y_test, batch_size=512, verbose=0)
zio.write_json(out, {"epochs": len(history.history["loss"]), "test_accuracy": float(accuracy),
                     "seconds": round(time.perf_counter() - start, 1)})
""".replace("MAX_EPOCHS", str(MAX_BASELINE_EPOCHS))


def train_command(name, epochs, runs):
    command = ["python", "-m", "zoo.cli", "train", name, "--data", "fashion_mnist", "--seed",
               "0", "--out", os.path.join(runs, name), "--no-export", "--verbose", "2"]
    return command + (["--epochs", str(epochs)] if epochs else [])


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}


def run_zoo(name, epochs, runs, state, save):
    """`zoo train` in a fresh process, or its recorded result; fills state["zoo"]."""
    from zoo import io as zio
    if state.get("zoo"):
        return state["zoo"]
    command = train_command(name, epochs, runs)
    run_dir = os.path.join(runs, name)
    metrics_path = os.path.join(run_dir, "metrics.json")
    before = float(state.get("zoo_partial_seconds", 0.0))
    resumed = before > 0 or os.path.isdir(run_dir)
    if not os.path.exists(metrics_path):
        print("$ " + shlex.join(command), flush=True)
        start = time.perf_counter()
        try:
            subprocess.run([sys.executable, *command[1:]], check=True, env=_env())
        finally:
            # A failed or interrupted attempt's time still counts once it is resumed.
            state["zoo_partial_seconds"] = round(before + time.perf_counter() - start, 1)
            save(state)
    metrics = zio.read_json(metrics_path)
    config = zio.read_json(os.path.join(run_dir, "config.json"))
    state["zoo"] = {"epochs": int(metrics["epochs_run"]),
                    "test_accuracy": float(metrics["test_accuracy"]),
                    "seconds": state.get("zoo_partial_seconds"),
                    "input_shape": config["input_shape"], "resumed": bool(resumed),
                    "command": shlex.join(command)}
    save(state)
    return state["zoo"]


def run_baseline(name, zoo_result, runs, state, save):
    """The plain-Keras script for the zoo run's wall time, or its recorded result."""
    from zoo import io as zio
    if state.get("baseline"):
        return state["baseline"]
    if not zoo_result.get("seconds"):
        print(f"{name}: the zoo run's wall time is unknown (trained outside this script); "
              f"no baseline", flush=True)
        return None
    shape = list(zoo_result["input_shape"]) + [1] * (3 - len(zoo_result["input_shape"]))
    out = os.path.join(runs, name, "baseline.json")
    print(f"$ plain Keras {name}, {zoo_result['seconds']:.0f} s", flush=True)
    subprocess.run([sys.executable, "-c", BASELINE, name, *map(str, shape[:3]),
                    str(zoo_result["seconds"]), out], check=True, env=_env())
    state["baseline"] = zio.read_json(out)
    save(state)
    return state["baseline"]


def _selected(names, patterns, max_params):
    import zoo
    if patterns:
        return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    return [n for n in names if (zoo.get_spec(n).num_params or 0) <= max_params]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", metavar="PATTERN",
                        help="train only these models (names or globs; default: every model "
                             "up to --max-params)")
    parser.add_argument("--max-params", type=int, default=2_000_000,
                        help="train models with at most this many parameters (default 2M)")
    parser.add_argument("--epochs", type=int,
                        help="cap every recipe's epochs at this many (default: the recipe's)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain-Keras runs")
    parser.add_argument("--runs", default="runs/results_table",
                        help="run directories and finished measurements (kept: a second "
                             "call resumes)")
    # The shipped table (zoo/results.csv, read by `zoo list --details`) is
    # rewritten only when asked, so running the benchmark keeps the checkout clean.
    parser.add_argument("--out", default="results_table.csv",
                        help="where to write the table (default ./results_table.csv; pass "
                             "zoo/results.csv to update the shipped table)")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be a positive integer. Received: {args.epochs}")

    import zoo
    from zoo import io as zio
    from zoo.flops import count_macs

    names = [n for n in zoo.list_models(task="classification")
             if zoo.get_spec(n).input_kind in ("image", "vector")]
    to_train = _selected(names, args.models, args.max_params)
    if args.models and not to_train:
        parser.error(f"--models {args.models} match no image or vector classifier")
    old = {}
    if os.path.exists(args.out):
        with open(args.out, newline="") as f:
            old = {r["name"]: r for r in csv.DictReader(f)}
    rows = []
    for name in names:
        spec = zoo.get_spec(name)
        model = zoo.build(name)
        row = {"name": name, "family": spec.family,
               "input_shape": "x".join(map(str, spec.input_shape)),
               "params": model.count_params(), "gmacs": f"{count_macs(model) / 1e9:.4g}"}
        del model
        if name in to_train:
            path = os.path.join(args.runs, name, "table.json")
            state = zio.read_json(path, default=None) or {}

            def save(value, path=path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                zio.write_json(path, value)

            result = run_zoo(name, args.epochs, args.runs, state, save)
            row.update(dataset="fashion_mnist", epochs=result["epochs"],
                       test_accuracy=f"{result['test_accuracy']:.4f}",
                       train_seconds=result["seconds"] or "", command=result["command"],
                       resumed="yes" if result["resumed"] else "",
                       date=time.strftime("%Y-%m-%d"))
            baseline = None if args.no_baseline else run_baseline(name, result, args.runs,
                                                                  state, save)
            if baseline:
                row.update(baseline_epochs=baseline["epochs"],
                           baseline_test_accuracy=f"{baseline['test_accuracy']:.4f}",
                           baseline_seconds=baseline["seconds"])
        elif old.get(name, {}).get("test_accuracy"):
            # Not trained this time: keep what an earlier table measured.
            row.update({k: v for k, v in old[name].items() if k in COLUMNS[5:]})
        rows.append(row)
        print(", ".join(f"{k}={row.get(k, '')}" for k in COLUMNS[:-1] if row.get(k, "") != ""),
              flush=True)
    import io
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    zio.write_text(args.out, table.getvalue(), newline="")
    print(f"wrote {args.out} ({len(rows)} models, {len(to_train)} trained)", file=sys.stderr)


if __name__ == "__main__":
    main()
