"""Steps/s and final accuracy: default vs mirrored (2 logical CPUs) vs multi_worker (2 local workers).

    python benchmarks/distribute_throughput.py --models mlp resnet20 --epochs 1 \\
        --data fashion_mnist --limit 6000

Same data, global batch and epochs for every configuration; each runs in a
fresh process (logical devices and multi-worker servers are fixed per
process).  Also the custom loop (`zoo.distributed_loop.fit_loop`, what
multi_worker and tpu use) against `model.fit` on the default strategy: the
goal is >= 0.95x.  Steps/s is measured from the second epoch on when there
is one (the first includes tracing), otherwise over the single epoch after
a warm-up step.  Printed side by side; no assertion.
"""

import argparse
import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_RUN = textwrap.dedent("""
    import json, os, sys, time
    cfg = json.loads(sys.argv[1])
    if cfg["mode"] == "mirrored":
        from zoo.distribute import configure_cpu_devices
        configure_cpu_devices(2)
    import keras
    import numpy as np
    from zoo import training
    from zoo.distribute import get_strategy
    from zoo.distributed_loop import fit_loop, local_model

    strategy = {"default": None, "loop": None, "mirrored": "mirrored",
                "multi_worker": "multi_worker"}[cfg["mode"]]
    p = training.plan(cfg["model"], data=cfg["data"], epochs=cfg["epochs"],
                      batch_size=cfg["batch_size"], seed=0, strategy=strategy, augment=(),
                      model_kwargs=cfg.get("model_kwargs") or None)
    bundle = p.bundle
    if cfg["limit"]:  # a short run: the first `limit` examples of each split
        import dataclasses
        batches = max(1, cfg["limit"] // cfg["batch_size"])
        bundle = dataclasses.replace(bundle, train=bundle.train.take(batches),
                                     test=bundle.test.take(batches))
    s = get_strategy(strategy)
    with s.scope():
        model = training.build_model(p, bundle=bundle)

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times, self.steps = [], []
        def on_epoch_begin(self, epoch, logs=None):
            self.t, self.n = None, 0
        def on_train_batch_end(self, batch, logs=None):
            if self.t is None:  # start after the first step (tracing)
                self.t = time.perf_counter()
            else:
                self.n += 1
        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.t)
            self.steps.append(self.n)

    clock = Clock()
    custom = cfg["mode"] in ("loop", "multi_worker")
    if custom:
        fit_loop(model, bundle.train, epochs=cfg["epochs"], callbacks=[clock], verbose=0)
        model = local_model(model)
    else:
        model.fit(bundle.train, epochs=cfg["epochs"], callbacks=[clock], verbose=0, shuffle=False)
    use = slice(1, None) if len(clock.times) > 1 else slice(0, None)
    steps_per_s = sum(clock.steps[use]) / sum(clock.times[use])
    acc = model.evaluate(bundle.test, verbose=0, return_dict=True)["accuracy"]
    if os.environ.get("ZOO_LOCAL_WORKER", "0") == "0":
        print("RESULT " + json.dumps({"steps_per_s": steps_per_s, "test_accuracy": acc}),
              flush=True)
""")


def _result(text):
    for line in text.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"no result in the output:\n{text[-3000:]}")


def run(cfg):
    env = {**os.environ, "ZOO_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": ROOT}
    command = [sys.executable, "-c", _RUN, json.dumps(cfg)]
    if cfg["mode"] != "multi_worker":
        proc = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(proc.stderr[-3000:])
        return _result(proc.stdout)
    # The chief prints the result; capture it through a file descriptor.
    import tempfile

    from zoo.launch import run_local_workers
    with tempfile.TemporaryFile("w+") as f:
        saved = os.dup(1)
        os.dup2(f.fileno(), 1)
        try:
            run_local_workers(command, 2, env=env)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        f.seek(0)
        return _result(f.read())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "resnet20"])
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch")
    parser.add_argument("--limit", type=int, default=0,
                        help="training examples per epoch (0: all)")
    parser.add_argument("--modes", nargs="+",
                        default=["default", "loop", "mirrored", "multi_worker"])
    args = parser.parse_args(argv)
    rows = []
    for model in args.models:
        kwargs = None
        for mode in args.modes:
            cfg = {"model": model, "mode": mode, "data": args.data, "epochs": args.epochs,
                   "batch_size": args.batch_size, "limit": args.limit, "model_kwargs": kwargs}
            result = run(cfg)
            rows.append((model, mode, result))
            print(f"{model:>10} {mode:>13}: {result['steps_per_s']:8.2f} steps/s  "
                  f"test accuracy {result['test_accuracy']:.4f}", flush=True)
    print("\nratios against default (model.fit, one device):")
    for model in args.models:
        base = next(r for m, mode, r in rows if m == model and mode == "default")
        for m, mode, r in rows:
            if m == model:
                print(f"{model:>10} {mode:>13}: {r['steps_per_s'] / base['steps_per_s']:.3f}x")


if __name__ == "__main__":
    main()
