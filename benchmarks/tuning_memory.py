"""Resident memory of a search, trial after trial (KerasTuner issues 873, 1031).

Runs a small random search (tiny MLP on digits by default) in this process
and records the resident set size (RSS) after every trial; prints RSS after
trial 1 and after the last, and the growth.  Goal: flat (<= 10% growth from
trial 1 to trial 30).  With --isolate every trial runs in its own process
and the chief's RSS is what is measured.

    python benchmarks/tuning_memory.py --trials 30
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--tuner", default="random")
    parser.add_argument("--isolate", action="store_true")
    args = parser.parse_args(argv)

    import keras
    import psutil

    import tuning

    process = psutil.Process()
    rss = []

    class Probe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            # Memory left over by the previous trial, measured as the next one starts.
            rss.append(process.memory_info().rss / 2 ** 20)

    with tempfile.TemporaryDirectory() as directory:
        start = time.time()
        tuning.search(args.model, args.data, tuner=args.tuner, max_trials=args.trials + 1,
                      max_epochs=args.epochs, directory=directory, verbose=0, report=False,
                      early_stopping=None, isolate=args.isolate,
                      callbacks=None if args.isolate else [Probe()])
        seconds = time.time() - start
        if args.isolate:
            rss.append(process.memory_info().rss / 2 ** 20)
    # rss[k] is measured after k trials finished (k = 1 .. trials).
    after = rss[1:]
    print(f"{args.trials} trials of {args.model} on {args.data}, {seconds:.0f} s")
    if args.isolate:
        print(f"chief RSS at the end: {rss[-1]:.0f} MiB (every trial in its own process)")
        return 0
    print("RSS after trial k (MiB): " + ", ".join(f"{k + 1}:{v:.0f}" for k, v in
                                                  enumerate(after)))
    growth = after[-1] / after[0] - 1
    print(f"RSS after trial 1: {after[0]:.0f} MiB; after trial {len(after)}: "
          f"{after[-1]:.0f} MiB; growth {growth:+.1%} (goal <= 10%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
