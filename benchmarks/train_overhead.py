"""zoo.train's training loop vs a bare `model.fit`, side by side in one process.

Both sides train the same registered model, compiled with the same recipe,
on the same data; they alternate, and each side's best-of-N steps/s is
compared. The zoo side uses everything `zoo.train` adds to `fit`: the
standard callbacks (early stopping, best checkpoint, BackupAndRestore, CSV
log, TensorBoard, TerminateOnNaN) and the family's hooks. The bare side is
`model.fit` with no callbacks, once on the same tf.data pipeline and once on
numpy arrays with `batch_size` (what a user would write). Goal: overhead <= 3%.

    python benchmarks/train_overhead.py --model lenet5 --data fashion_mnist --epochs 2
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    from zoo import training

    # The same seam `zoo.train` composes: one plan (data loaded once), a fresh
    # model per timing from `build_model`, and `fit` for the zoo's loop.
    p = training.plan(args.model, args.data, batch_size=args.batch_size, epochs=args.epochs,
                      jit_compile=False, mixed_precision=False)
    bundle = p.bundle
    steps = p.steps_per_epoch()
    x_train = np.concatenate([b[0].numpy() for b in bundle.train])
    y_train = np.concatenate([b[1].numpy() for b in bundle.train])
    for _ in bundle.validation:  # fill the caches before timing
        pass

    def fresh_model():
        keras.utils.set_random_seed(0)
        return training.build_model(p)

    def timed_fit(kind):
        model = fresh_model()
        model.fit(bundle.train.take(2), epochs=1, verbose=0)  # trace outside the timing
        with tempfile.TemporaryDirectory() as run_dir:
            if kind == "zoo":
                fit = lambda: training.fit(p, model, run_dir=run_dir, verbose=0)  # noqa
            elif kind == "bare_tfdata":
                fit = lambda: model.fit(bundle.train, validation_data=bundle.validation,  # noqa
                                        epochs=args.epochs, verbose=0, shuffle=False)
            else:
                fit = lambda: model.fit(x_train, y_train, batch_size=args.batch_size,  # noqa
                                        validation_data=bundle.validation,
                                        epochs=args.epochs, verbose=0)
            start = time.perf_counter()
            fit()
            elapsed = time.perf_counter() - start
        return steps * args.epochs / elapsed

    kinds = ("bare_tfdata", "zoo", "bare_arrays")
    results = {k: [] for k in kinds}
    for r in range(args.repeats):
        for kind in (kinds if r % 2 == 0 else kinds[::-1]):  # alternate the order
            results[kind].append(timed_fit(kind))
            print(f"repeat {r + 1} {kind:<12} {results[kind][-1]:8.1f} steps/s", flush=True)
    best = {k: max(v) for k, v in results.items()}
    print(f"\nmodel={args.model} data={args.data} epochs={args.epochs} "
          f"batch={args.batch_size} steps/epoch={steps} (best of {args.repeats})")
    for kind in kinds:
        print(f"  {kind:<12} {best[kind]:8.1f} steps/s")
    import statistics
    for base in ("bare_tfdata", "bare_arrays"):
        ratio = best["zoo"] / best[base]
        # Rounds run back to back, so per-round ratios cancel slow drift of
        # the machine's speed; their median is the robust figure.
        per_round = [z / b for z, b in zip(results["zoo"], results[base])]
        paired = statistics.median(per_round)
        print(f"  zoo / {base:<12} = {ratio:.3f} best-of, {paired:.3f} median of paired "
              f"rounds (range {min(per_round):.3f}-{max(per_round):.3f})  "
              f"(overhead {100 * (1 - ratio):+.1f}% / {100 * (1 - paired):+.1f}%, "
              f"goal <= 3%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
