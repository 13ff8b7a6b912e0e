"""Regenerate zoo/results.csv (shown by `zoo list --details`): parameters, MACs, accuracy.

    python benchmarks/results_table.py                        # train the small models too
    python benchmarks/results_table.py --train none           # counts only
    python benchmarks/results_table.py --reuse                # keep finished runs in --runs

Every image (and MLP) classifier of the registry gets a row with its
parameter count and GMACs (multiply-accumulates per image at its default input
shape, from `zoo.flops.count_macs`; 1 MAC = 2 FLOPs).  The models named by
`--train` are trained on Fashion-MNIST (local IDX files) with their own
recipes for a few epochs through the `zoo train` CLI; the row records the exact
command and the test accuracy from the run's metrics.json.  Short runs are far
from the papers' schedules: the numbers show that the recipes train, not what
the architectures can reach.
"""

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TRAIN = {"mlp": 10, "lenet5": 10, "resnet20": 3}
COLUMNS = ("name", "family", "input_shape", "params", "gmacs", "dataset", "epochs",
           "test_accuracy", "train_seconds", "command")


def train_command(name, epochs, runs):
    return ["python", "-m", "zoo.cli", "train", name, "--data", "fashion_mnist", "--epochs", str(epochs),
            "--seed", "0", "--out", os.path.join(runs, name), "--overwrite", "--no-export",
            "--verbose", "2"]


def run_training(name, epochs, runs, reuse):
    """Train through the CLI (or reuse a finished run); returns (accuracy, seconds, command)."""
    command = train_command(name, epochs, runs)
    metrics_path = os.path.join(runs, name, "metrics.json")
    seconds = None
    if not (reuse and os.path.exists(metrics_path)):
        print("$ " + shlex.join(command), flush=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, *command[1:]], check=True)
        seconds = round(time.perf_counter() - start)
    with open(metrics_path) as f:
        metrics = json.load(f)
    return metrics["test_accuracy"], seconds, shlex.join(command)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", nargs="+", default=[f"{k}={v}" for k, v in
                                                       DEFAULT_TRAIN.items()],
                        metavar="NAME=EPOCHS", help="models to train, or 'none'")
    parser.add_argument("--runs", default="runs/results_table", help="run directories")
    parser.add_argument("--reuse", action="store_true", help="keep runs that have metrics.json")
    # The shipped table (zoo/results.csv, read by `zoo list --details`) is
    # rewritten only when asked, so running the benchmark keeps the checkout clean.
    parser.add_argument("--out", default="results_table.csv",
                        help="where to write the table (default ./results_table.csv; pass "
                             "zoo/results.csv to update the shipped table)")
    args = parser.parse_args(argv)
    to_train = {}
    if args.train != ["none"]:
        for item in args.train:
            name, _, epochs = item.partition("=")
            to_train[name] = int(epochs or 3)

    import zoo
    from zoo.flops import count_macs

    names = [n for n in zoo.list_models(task="classification")
             if zoo.get_spec(n).input_kind in ("image", "vector")]
    unknown = sorted(set(to_train) - set(names))
    if unknown:
        parser.error(f"not image/vector classifiers: {unknown}")
    rows = []
    for name in names:
        spec = zoo.get_spec(name)
        model = zoo.build(name)
        row = {"name": name, "family": spec.family,
               "input_shape": "x".join(map(str, spec.input_shape)),
               "params": model.count_params(), "gmacs": f"{count_macs(model) / 1e9:.4g}"}
        del model
        if name in to_train:
            accuracy, seconds, command = run_training(name, to_train[name], args.runs,
                                                      args.reuse)
            row.update(dataset="fashion_mnist", epochs=to_train[name],
                       test_accuracy=f"{accuracy:.4f}", train_seconds=seconds or "",
                       command=command)
        rows.append(row)
        print(", ".join(f"{k}={row.get(k, '')}" for k in COLUMNS[:-1]), flush=True)
    if args.reuse and os.path.exists(args.out):
        # Keep timings recorded by the run that trained a reused model.
        with open(args.out) as f:
            old = {r["name"]: r for r in csv.DictReader(f)}
        for row in rows:
            if not row.get("train_seconds") and old.get(row["name"], {}).get("train_seconds"):
                if old[row["name"]].get("command") == row.get("command"):
                    row["train_seconds"] = old[row["name"]]["train_seconds"]
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out} ({len(rows)} models)", file=sys.stderr)


if __name__ == "__main__":
    main()
