"""Per-trial overhead of a search: one trial vs a bare `model.fit` of the same configuration.

Both sides build the registered model at its default point through the
same seam (`zoo.training.build_model`, recipe compile) on the same plan
(data loaded once) and train it for the same epochs.  The "trial" side is a
whole KerasTuner trial of `tuning.search` (oracle round trip, the zoo's
callbacks: BackupAndRestore, history, best weights, TensorBoard, the trial
record, the leaderboard rewrite); the "bare" side is
`model.fit(train, validation_data=val, epochs=E)` with no callbacks.  The
sides alternate; the median of the paired ratios is printed, for wall time
and for the process's CPU time (all threads; far less sensitive to other
jobs on a shared machine).  Goal: <= 5%.

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

    from tuning import searcher, tuners
    from tuning.trial import trial_seed

    root = tempfile.mkdtemp()
    first = searcher.prepare(args.model, args.data, tuner="random", max_trials=1,
                             max_epochs=args.epochs, directory=os.path.join(root, "s0"),
                             early_stopping=None, check_objective=False)
    hypermodel = first.hypermodel
    hp = kt.HyperParameters()
    hp.merge(first.space.space)
    bundle = hypermodel.bundle(hypermodel.point(hp).recipe)

    def bare():
        start, cpu = time.perf_counter(), time.process_time()
        keras.backend.clear_session()
        keras.utils.set_random_seed(trial_seed(0, "0"))
        model = hypermodel.build(hp)
        model.fit(bundle.train, validation_data=bundle.validation, epochs=args.epochs,
                  verbose=0, shuffle=False)
        return time.perf_counter() - start, time.process_time() - cpu

    def trial(i):
        # The same prepared search (plan, data) in a fresh directory: one trial.
        prepared = first
        prepared.directory = os.path.join(root, f"s{i}")
        prepared.state = "new"
        os.makedirs(prepared.directory, exist_ok=True)
        prepared.write_search_file(status="running")
        tuner = tuners.make_tuner(prepared, verbose=0, tensorboard=not args.no_tensorboard)
        with tuners.frozen_gc():  # as tuning.search runs its trials
            start, cpu = time.perf_counter(), time.process_time()
            tuner.search(verbose=0)
            return time.perf_counter() - start, time.process_time() - cpu

    bare()  # warm up the data pipelines' caches and the first traces
    trial(0)
    wall, cpu = [], []
    for i in range(1, args.repeats + 1):
        if i % 2:
            b, t = bare(), trial(i)
        else:
            t, b = trial(i), bare()
        wall.append((t[0], b[0]))
        cpu.append((t[1], b[1]))
        print(f"round {i}: trial {t[0]:.2f} s (cpu {t[1]:.2f}), bare fit {b[0]:.2f} s "
              f"(cpu {b[1]:.2f}); ratio wall {t[0] / b[0]:.3f}, cpu {t[1] / b[1]:.3f}",
              flush=True)
    for name, pairs in (("wall", wall), ("cpu", cpu)):
        ratio = statistics.median(t / b for t, b in pairs)
        print(f"{args.model} on {args.data}, {args.epochs} epochs, {name} time: median trial "
              f"{statistics.median(t for t, _ in pairs):.2f} s vs bare fit "
              f"{statistics.median(b for _, b in pairs):.2f} s; median paired ratio "
              f"{ratio:.3f} (overhead {ratio - 1:+.1%}, goal <= +5%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
