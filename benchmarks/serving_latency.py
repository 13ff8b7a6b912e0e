"""Single-example latency: exported SavedModel signature vs `model.predict`, one process.

Trains nothing: builds the registered model, exports it with
`zoo.export.export_saved_model`, reloads it with plain `tf.saved_model.load`,
then alternates single-example calls of `serving_default` and of
`model.predict` and prints medians and their ratio, per round and as the
median and range over `--rounds` rounds. Goal: ratio <= 0.1.

    python benchmarks/serving_latency.py --model lenet5 --calls 200 --rounds 3
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--calls", type=int, default=200, help="calls of each path per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    import zoo
    from zoo.export import export_saved_model, input_names

    spec = zoo.get_spec(args.model)
    model = zoo.build(args.model)
    x = np.random.default_rng(0).random((1, *spec.input_shape)).astype("float32")
    with tempfile.TemporaryDirectory() as tmp:
        path = export_saved_model(model, os.path.join(tmp, "saved"))
        serve = tf.saved_model.load(path).signatures["serving_default"]
        feed = {input_names(model)[0]: tf.constant(x)}
        served = next(iter(serve(**feed).values())).numpy()
        np.testing.assert_allclose(served, model.predict(x, verbose=0), atol=1e-5)
        for _ in range(10):  # warm up both paths
            serve(**feed)
            model.predict(x, verbose=0)
        print(f"model={args.model} input={tuple(x.shape)} calls={args.calls} (alternating) "
              f"rounds={args.rounds}")
        rounds = []
        for r in range(args.rounds):
            saved_ms, predict_ms = [], []
            for _ in range(args.calls):
                start = time.perf_counter()
                next(iter(serve(**feed).values())).numpy()
                saved_ms.append(1e3 * (time.perf_counter() - start))
                start = time.perf_counter()
                model.predict(x, verbose=0)
                predict_ms.append(1e3 * (time.perf_counter() - start))
            s, p = statistics.median(saved_ms), statistics.median(predict_ms)
            rounds.append((s, p, s / p))
            print(f"  round {r + 1}: SavedModel {s:7.3f} ms, model.predict {p:7.3f} ms, "
                  f"ratio {s / p:.3f}", flush=True)

    def spread(values, fmt):
        return (f"median {format(statistics.median(values), fmt)} "
                f"(range {format(min(values), fmt)}-{format(max(values), fmt)})")
    print(f"  SavedModel serving_default  {spread([r[0] for r in rounds], '.3f')} ms")
    print(f"  model.predict               {spread([r[1] for r in rounds], '.3f')} ms")
    print(f"  ratio SavedModel / predict  {spread([r[2] for r in rounds], '.3f')}  "
          f"(goal <= 0.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
