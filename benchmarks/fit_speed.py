"""Steps/s of the zoo's `fit` vs the best plain-Keras configuration of the same model.

Side by side in one process, alternating, for each model: the zoo side is
`zoo.training.fit` with a run directory (every standard callback: best
checkpoint, BackupAndRestore, CSV log, TensorBoard, TerminateOnNaN, early
stopping) and `steps_per_execution="auto"`; the plain side is the same
architecture (the zoo's builder) compiled with the same optimizer, loss and
accuracy metric, fit twice: as a short script does (numpy arrays with
`batch_size`, Keras's default `steps_per_execution=1`) and tuned (a cached,
shuffled, prefetched `tf.data` pipeline and `steps_per_execution=32`, the
fastest plain configuration on a CPU in issue 20: XLA and the JAX backend are
slower for convolutions there).  The plain side's best of the two is the
reference.

Steady state: each side's steps/s is the epoch's training steps over the time
from the epoch's start to its validation's start, over epochs 2..N (the first
one traces the graph), the fastest of them by default (`--statistic min`, as
`timeit` takes the best of its runs): on this shared 2-core machine an epoch
of resnet20 on 10,000 images took either ~13 s or ~20 s whichever side ran
(2026-12-05), so the median compared the machine's two speeds more than the
two sides; `--statistic median` is the other choice.  Every repeat builds
fresh models; the ratio zoo / best plain is printed with its median and range
over repeats.
`--mixed-precision auto` lets the zoo choose its compute dtype as `zoo train`
does (bfloat16 for the batch-normalized convnets on a CPU with AMX, where
the zoo's fused `BatchNormalization` keeps it fast) and gives the plain side
the same global policy (`keras.config.set_dtype_policy("mixed_bfloat16")`,
what a Keras user sets); the default `off` compares float32 with float32.
The plain side always builds the architecture with Keras's own
`BatchNormalization` (the zoo's builder, its fused layers swapped back).
Goal (issue 20): >= 1.0x.  Both sides train without augmentation (the
recipe's own is left out: the plain side has none), and `--train-examples N`
takes the first N training images, so that a convnet's epochs stay short.

    python benchmarks/fit_speed.py --models mlp lenet5 --data fashion_mnist --epochs 3
    python benchmarks/fit_speed.py --models resnet20 --train-examples 10000 --repeats 2
    python benchmarks/fit_speed.py --models resnet20 --train-examples 10000 --repeats 2 \
        --mixed-precision auto
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _epoch_clock():
    """A callback recording each epoch's training time (epoch start to validation start)."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []
            self._start = None

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def _stop(self):
            if self._start is not None:
                self.seconds.append(time.perf_counter() - self._start)
                self._start = None

        def on_test_begin(self, logs=None):
            self._stop()

        def on_epoch_end(self, epoch, logs=None):
            self._stop()

    return EpochClock()


def _steady(seconds, steps, statistic="min"):
    """Steps/s of the epochs after the first (or of the only one): their fastest or median."""
    steady = seconds[1:] or seconds
    return steps / (min(steady) if statistic == "min" else statistics.median(steady))


def _keras_batch_norm(model):
    """`model` rebuilt with `keras.layers.BatchNormalization` where the zoo has its fused one."""
    import keras

    from zoo.models.layers.cnn import BatchNormalization

    def clone(layer):
        if type(layer) is BatchNormalization:
            return keras.layers.BatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    return keras.models.clone_model(model, clone_function=clone)


def measure(name, data, *, epochs, batch_size, repeats, train_examples=None, statistic="min",
            mixed_precision="off"):
    """{side: [steps/s per repeat]}, the zoo's steps per execution, and the dtype policy."""
    import keras
    import numpy as np

    from zoo import training

    if train_examples:
        from zoo import data as zdata
        (x, y), _, _ = zdata.read_source(data)
        data = (x[:train_examples], y[:train_examples])
    run_plan = training.plan(name, data, batch_size=batch_size, epochs=epochs, augment=(),
                             jit_compile=False,
                             mixed_precision=None if mixed_precision == "auto" else False)
    policy = (f"mixed_{run_plan.mixed_precision}" if run_plan.mixed_precision else "float32")
    bundle, recipe = run_plan.bundle, run_plan.recipe
    steps = run_plan.steps_per_epoch()
    arrays = {split: [np.concatenate(part) for part in zip(*[(b[0].numpy(), b[1].numpy())
                                                             for b in dataset])]
              for split, dataset in (("train", bundle.train), ("validation", bundle.validation))}

    def zoo_side():
        keras.utils.set_random_seed(0)
        model = training.build_model(run_plan)
        clock = _epoch_clock()
        with tempfile.TemporaryDirectory() as run_dir:
            training.fit(run_plan, model, run_dir=run_dir, epochs=epochs, callbacks=[clock],
                         verbose=0)
        return clock.seconds, model.steps_per_execution

    import tensorflow as tf

    def pipeline(split, shuffle):
        dataset = tf.data.Dataset.from_tensor_slices(tuple(arrays[split])).cache()
        if shuffle:
            dataset = dataset.shuffle(len(arrays[split][0]), seed=0)
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def plain_side(steps_per_execution):
        keras.utils.set_random_seed(0)
        keras.config.set_dtype_policy(policy)
        try:
            model = _keras_batch_norm(run_plan.spec.build(**run_plan.builder_kwargs()))
        finally:
            keras.config.set_dtype_policy("float32")
        optimizer = training.make_optimizer(recipe.optimizer, recipe.learning_rate,
                                            momentum=recipe.momentum,
                                            weight_decay=recipe.weight_decay)
        logits = model.layers[-1].activation is keras.activations.linear
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=logits),
                      metrics=["accuracy"], steps_per_execution=steps_per_execution)
        clock = _epoch_clock()
        if steps_per_execution == 1:  # the short script
            model.fit(*arrays["train"], batch_size=batch_size, epochs=epochs, verbose=0,
                      validation_data=tuple(arrays["validation"]), callbacks=[clock])
        else:  # tuned
            model.fit(pipeline("train", True), epochs=epochs, verbose=0, shuffle=False,
                      validation_data=pipeline("validation", False), callbacks=[clock])
        return clock.seconds

    results = {"zoo": [], "plain_spe1": [], "plain_spe32": []}
    chosen = None
    for _ in range(repeats):
        seconds, chosen = zoo_side()
        results["zoo"].append(_steady(seconds, steps, statistic))
        results["plain_spe1"].append(_steady(plain_side(1), steps, statistic))
        results["plain_spe32"].append(_steady(plain_side(32), steps, statistic))
    return results, chosen, steps, policy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "lenet5"])
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--epochs", type=int, default=3,
                        help="epochs per fit (the first is not timed)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-examples", type=int, default=None, metavar="N",
                        help="train on the first N training examples (default: all)")
    parser.add_argument("--statistic", choices=("min", "median"), default="min",
                        help="each fit's steps/s from its fastest steady epoch (default) or "
                             "their median")
    parser.add_argument("--mixed-precision", choices=("off", "auto"), default="off",
                        help="off: float32 on both sides (default); auto: the zoo's choice "
                             "for this machine, and the same global policy on the plain side")
    args = parser.parse_args(argv)
    if args.train_examples is not None and args.train_examples < args.batch_size:
        parser.error(f"--train-examples must be at least --batch-size ({args.batch_size}). "
                     f"Received: train_examples={args.train_examples}")
    if args.epochs < 2 or args.repeats < 1:
        parser.error(f"--epochs must be at least 2 and --repeats at least 1. Received: "
                     f"epochs={args.epochs}, repeats={args.repeats}")

    print(f"fit steps/s, batch {args.batch_size}, data {args.data}, {args.epochs} epochs "
          f"(first untimed, {args.statistic} of the rest), {args.repeats} repeats"
          + (f", first {args.train_examples} training examples" if args.train_examples else "")
          + f", {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'model':<10} {'zoo':>16} {'plain numpy':>16} {'plain tf.data+32':>16} "
          f"{'zoo / best plain':>26}")
    for name in args.models:
        results, chosen, steps, policy = measure(
            name, args.data, epochs=args.epochs, batch_size=args.batch_size,
            repeats=args.repeats, train_examples=args.train_examples,
            statistic=args.statistic, mixed_precision=args.mixed_precision)
        ratios = [z / max(a, b) for z, a, b in zip(results["zoo"], results["plain_spe1"],
                                                    results["plain_spe32"])]
        cells = [f"{statistics.median(v):8.1f} ({min(v):.0f}-{max(v):.0f})"
                 for v in (results["zoo"], results["plain_spe1"], results["plain_spe32"])]
        print(f"{name:<10} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16} "
              f"{statistics.median(ratios):>8.2f}x (range {min(ratios):.2f}-{max(ratios):.2f})"
              f"   [zoo steps_per_execution={chosen}, {steps} steps/epoch, {policy}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
