"""Quantized TFLite exports side by side: size, test accuracy and batch-1 latency in LiteRT.

For each model: trains a short run (or reuses a finished one in --runs),
exports float32 TFLite and the `dynamic`, `float16` and `int8` quantized
models with `zoo.export.export_run` (each scored in LiteRT's interpreter on
the run's test split; accuracy drop vs float32 in points), then times
single-example calls of each flatbuffer in one LiteRT interpreter per mode
(one thread each), the modes alternating call by call, and prints medians.
Goals (issue 21): int8 <= 30% of float32's size, accuracy within 1 point,
latency <= float32's.

    python benchmarks/quantize.py --models lenet5 resnet20 --data fashion_mnist --epochs 1
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODES = ("float32", "dynamic", "float16", "int8")


def _export_all(run_dir):
    """{mode: card entry} of the float32 and each quantized TFLite export of `run_dir`."""
    from zoo import export
    entries = {}
    float_entry = export.export_run(run_dir, formats=("tflite",), overwrite=True)["tflite"]
    for mode in MODES[1:]:
        entries[mode] = export.export_run(run_dir, formats=("tflite",), quantize=mode,
                                          overwrite=True)[f"tflite_{mode}"]
    first = entries["dynamic"]
    entries["float32"] = {"path": float_entry["path"], "size_bytes": first["float_size_bytes"],
                          "test_accuracy": first.get("float_test_accuracy"),
                          "kernels": "float32"}
    return entries


def _latencies(entries, x, calls):
    """{mode: median ms} of batch-1 calls, the modes alternating call by call."""
    from ai_edge_litert.interpreter import Interpreter
    runners = {}
    for mode in MODES:
        runner = Interpreter(model_path=entries[mode]["path"], num_threads=1)
        runners[mode] = runner.get_signature_runner("serving_default")
    name = runners["float32"].get_input_details()
    name = next(iter(name))
    for mode in MODES:  # warm up (first call allocates)
        for _ in range(5):
            runners[mode](**{name: x[:1]})
    times = {mode: [] for mode in MODES}
    for index in range(calls):
        sample = x[index % len(x)][None]
        for mode in MODES:
            start = time.perf_counter()
            runners[mode](**{name: sample})
            times[mode].append(1e3 * (time.perf_counter() - start))
    return {mode: statistics.median(values) for mode, values in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lenet5"])
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--runs", default="runs/quantize",
                        help="run directories (RUNS/MODEL_DATA); a finished run is reused")
    parser.add_argument("--calls", type=int, default=300, help="batch-1 calls per mode")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)

    import numpy as np

    from zoo import runs
    from zoo.training import train

    rows = []
    for name in args.models:
        run_dir = os.path.abspath(os.path.join(args.runs, f"{name}_{args.data}"))
        if not os.path.exists(os.path.join(run_dir, runs.METRICS_FILE)):
            start = time.perf_counter()
            train(name, data=args.data, epochs=args.epochs, run_dir=run_dir, overwrite=True,
                  verbose=0)
            print(f"{name}: trained {args.epochs} epoch(s) on {args.data} in "
                  f"{time.perf_counter() - start:.0f} s: {run_dir}", flush=True)
        entries = _export_all(run_dir)
        with np.load(os.path.join(run_dir, runs.SAMPLE_FILE)) as saved:  # test inputs
            x = np.asarray(saved["inputs"], dtype="float32")
        latency = _latencies(entries, x, args.calls)
        for mode in MODES:
            entry = entries[mode]
            rows.append({"model": name, "data": args.data, "mode": mode,
                         "kernels": entry["kernels"], "size_bytes": entry["size_bytes"],
                         "size_vs_float32": entry["size_bytes"] / entries["float32"]["size_bytes"],
                         "test_accuracy": entry.get("test_accuracy"),
                         "points_vs_float32": None if entry.get("test_accuracy") is None else
                         100 * (entry["test_accuracy"] - entries["float32"]["test_accuracy"]),
                         "latency_ms": latency[mode],
                         "latency_vs_float32": latency[mode] / latency["float32"],
                         "test_examples": entries["dynamic"]["test_examples"]})

    print(f"\nLiteRT {_version('ai-edge-litert')}, TensorFlow "
          f"{_version('tensorflow-cpu') if _version('tensorflow-cpu') != '?' else _version('tensorflow')}"
          f" converter; batch-1 median of {args.calls} calls, one thread, modes alternating")
    print(f"{'model':<10} {'mode':<8} {'kernels':<10} {'size KB':>8} {'size':>6} "
          f"{'test acc':>8} {'points':>7} {'ms':>7} {'latency':>8}")
    for row in rows:
        accuracy = "-" if row["test_accuracy"] is None else f"{row['test_accuracy']:.4f}"
        points = "-" if row["points_vs_float32"] is None else f"{row['points_vs_float32']:+.2f}"
        print(f"{row['model']:<10} {row['mode']:<8} {row['kernels']:<10} "
              f"{row['size_bytes'] / 1024:>8.1f} {row['size_vs_float32']:>6.0%} {accuracy:>8} "
              f"{points:>7} {row['latency_ms']:>7.3f} {row['latency_vs_float32']:>7.2f}x")
    if args.json:
        from zoo import io as zio
        zio.write_json(args.json, rows)
    return 0


def _version(name):
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
