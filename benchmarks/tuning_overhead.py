"""Per-trial overhead of a search: one trial vs a bare `model.fit` of the same configuration.

Both sides build the registered model at its default point through the
same seam (`zoo.training.build_model`, recipe compile) on the same plan
(data loaded once) and train it for the same epochs.  The "trial" side is a
whole KerasTuner trial of `tuning.search` (oracle round trip, the zoo's
callbacks: BackupAndRestore, history, best weights, TensorBoard, the trial
record, the leaderboard rewrite); the "bare" side is
`model.fit(train, validation_data=val, epochs=E)` with no callbacks.  The
sides alternate; the median of the paired ratios is printed.  Goal: <= 5%.

    python benchmarks/tuning_overhead.py --model mlp --data digits --epochs 5 --repeats 5
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-tensorboard", action="store_true")
    args = parser.parse_args(argv)

    import keras
    import keras_tuner as kt

    from tuning import searcher
    from tuning.tuners import trial_seed

    root = tempfile.mkdtemp()
    first = searcher.prepare(args.model, args.data, tuner="random", max_trials=1,
                             max_epochs=args.epochs, directory=os.path.join(root, "s0"),
                             early_stopping=None, check_objective=False)
    hypermodel = first.hypermodel
    hp = kt.HyperParameters()
    hp.merge(first.full.space)
    bundle = hypermodel.bundle(hypermodel.point(hp).recipe)

    def bare():
        start = time.perf_counter()
        keras.backend.clear_session()
        keras.utils.set_random_seed(trial_seed(0, "0"))
        model = hypermodel.build(hp)
        model.fit(bundle.train, validation_data=bundle.validation, epochs=args.epochs,
                  verbose=0, shuffle=False)
        return time.perf_counter() - start

    def trial(i):
        # The same prepared search (plan, data) in a fresh directory: one trial.
        prepared = first
        prepared.directory = os.path.join(root, f"s{i}")
        prepared.state = "new"
        os.makedirs(prepared.directory, exist_ok=True)
        searcher._write_search_file(prepared, status="running")
        tuner = searcher.make_tuner(prepared, verbose=0,
                                    tensorboard=not args.no_tensorboard)
        start = time.perf_counter()
        tuner.search(verbose=0)
        return time.perf_counter() - start

    bare()  # warm up the data pipelines' caches and the first traces
    trial(0)
    ratios, bares, trials = [], [], []
    for i in range(1, args.repeats + 1):
        if i % 2:
            b, t = bare(), trial(i)
        else:
            t, b = trial(i), bare()
        bares.append(b)
        trials.append(t)
        ratios.append(t / b)
        print(f"round {i}: trial {t:.2f} s, bare fit {b:.2f} s, ratio {t / b:.3f}", flush=True)
    print(f"{args.model} on {args.data}, {args.epochs} epochs: median trial "
          f"{statistics.median(trials):.2f} s vs bare fit {statistics.median(bares):.2f} s; "
          f"median paired ratio {statistics.median(ratios):.3f} "
          f"(overhead {statistics.median(ratios) - 1:+.1%}, goal <= +5%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
