"""Training and inference images/s: zoo CNNs vs their keras.applications twins.

    python benchmarks/throughput.py                      # ResNet50/101/152, VGG16/19
    python benchmarks/throughput.py --models resnet50 --image-size 96 --batch-size 16

Both models of a pair get the same input shape, class count and optimizer, and
are timed alternately in one process (zoo, keras, keras, zoo, ...), so drifts
in machine load hit both; the ratio column is zoo / keras (1.00 = same speed).
The zoo models are built with weight_decay=0 (keras.applications has no
regularizers), so the pair computes the same graph; VGG's zoo top also has the
paper's two dropout layers.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PAIRS = {"resnet50": "ResNet50", "resnet101": "ResNet101", "resnet152": "ResNet152",
         "resnet50v2": "ResNet50V2", "vgg16": "VGG16", "vgg19": "VGG19"}


def _time_steps(fn, steps):
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return time.perf_counter() - start


def measure(name, *, image_size, batch_size, steps, warmup, repeats, num_classes=10):
    """Images/s of each round for (zoo, keras) in inference and training."""
    import keras
    import numpy as np

    import zoo

    shape = (image_size, image_size, 3)
    models = {
        "zoo": zoo.build(name, input_shape=shape, num_classes=num_classes, weight_decay=0.0),
        "keras": getattr(keras.applications, PAIRS[name])(
            weights=None, input_shape=shape, classes=num_classes),
    }
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, *shape)).astype("float32")
    y = rng.integers(0, num_classes, batch_size)
    for model in models.values():
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                      loss="sparse_categorical_crossentropy")
        for _ in range(warmup):  # trace and build both functions before timing
            model.predict_on_batch(x)
            model.train_on_batch(x, y)
    rates = {(who, mode): [] for who in models for mode in ("inference", "training")}
    for round_ in range(repeats):
        # Swap who goes first each round, so neither always meets the same load.
        order = list(models.items())[::1 if round_ % 2 == 0 else -1]
        for who, model in order:
            seconds = _time_steps(lambda: model.predict_on_batch(x), steps)
            rates[(who, "inference")].append(steps * batch_size / seconds)
            seconds = _time_steps(lambda: model.train_on_batch(x, y), steps)
            rates[(who, "training")].append(steps * batch_size / seconds)
    return rates


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "resnet101", "resnet152",
                                                        "vgg16", "vgg19"],
                        choices=sorted(PAIRS))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds (median)")
    args = parser.parse_args(argv)
    if args.image_size < 32:
        parser.error("--image-size must be at least 32 (five stride-2 stages)")

    import tensorflow as tf

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, images {args.image_size}x"
          f"{args.image_size}x3, batch {args.batch_size}, {args.steps} steps x "
          f"{args.repeats} alternating rounds (median)")
    # The ratio is taken per round (zoo and keras timed back to back), then its
    # median and range over the rounds: the spread is the run-to-run noise.
    header = (f"{'model':<11}{'mode':<11}{'zoo img/s':>11}{'keras img/s':>13}{'zoo/keras':>11}"
              f"{'range':>13}")
    print(header)
    print("-" * len(header))
    for name in args.models:
        rates = measure(name, image_size=args.image_size, batch_size=args.batch_size,
                        steps=args.steps, warmup=args.warmup, repeats=args.repeats)
        for mode in ("inference", "training"):
            ours, theirs = rates[("zoo", mode)], rates[("keras", mode)]
            ratios = [a / b for a, b in zip(ours, theirs)]
            print(f"{name:<11}{mode:<11}{statistics.median(ours):>11.1f}"
                  f"{statistics.median(theirs):>13.1f}{statistics.median(ratios):>11.2f}"
                  f"{min(ratios):>8.2f}-{max(ratios):.2f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
