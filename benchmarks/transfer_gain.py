"""Transfer gain offline: pretrain on Fashion-MNIST classes 0-4, fine-tune on 5-9.

    python benchmarks/transfer_gain.py --pretrain-epochs 3 --epochs 6 --per-class 20 100

Pretrains a zoo CNN (resnet20 at 28x28x1 by default) on classes 0-4 of
Fashion-MNIST's training set, then for each labelled budget (images per
class of classes 5-9, drawn from the training set; 80% train, 20% validate)
compares test accuracy of `feature_extraction`, `two_phase` and training
from scratch with the same epoch budget, and the seconds per epoch of the
frozen phase vs the unfrozen one.  Test accuracy is measured on
`--test-per-class` images per class of classes 5-9 from Fashion-MNIST's own
test set (2,000 by default), passed as the source's test split (an npz with
x_test/y_test), so no test image is ever trained on or used for validation.
Seconds per epoch leave out each fit's first epoch (graph tracing).  Prints
a table; numbers go to the README and the closing note.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _subset(x, y, classes, per_class, seed):
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.choice(np.flatnonzero(y == label), per_class, replace=False)
                           for label in classes])
    return x[keep], (y[keep] - min(classes)).astype("int32")


def _median(seconds):
    return f"{np.median(seconds):.2f}" if seconds else "-"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--pretrain-per-class", type=int, default=2000)
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--head-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--per-class", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--test-per-class", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print("transfer_gain " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
          flush=True)

    import transfer
    import zoo
    from zoo import data as zdata

    (x, y), (x_test, y_test), _ = zdata.read_source("fashion_mnist")
    work = tempfile.mkdtemp(prefix="transfer_gain-")
    t0 = time.perf_counter()
    pre = zoo.train(args.model, _subset(x, y, range(5), args.pretrain_per_class, args.seed),
                    epochs=args.pretrain_epochs, batch_size=64, optimizer="adam",
                    learning_rate=1e-3, schedule="constant", augment=(),
                    model_kwargs={"input_shape": (args.size, args.size, 1)},
                    run_dir=os.path.join(work, "pretrain"), export=False, verbose=0)
    print(f"pretrain {args.model} on classes 0-4: test accuracy "
          f"{pre.metrics['test_accuracy']:.4f} ({time.perf_counter() - t0:.0f} s)")
    total = args.head_epochs + args.epochs
    print(f"{'per class':>9} {'method':>18} {'test acc':>9} {'s/epoch frozen':>15} "
          f"{'s/epoch unfrozen':>17} {'wall s':>7}")
    for per_class in args.per_class:
        xs, ys = _subset(x, y, range(5, 10), per_class, args.seed + 1)
        xt, yt = _subset(x_test, y_test, range(5, 10), args.test_per_class, args.seed + 2)
        # The source's own test split (never trained on); validation comes from xs.
        data = os.path.join(work, f"target_{per_class}.npz")
        np.savez(data, x_train=xs, y_train=ys, x_test=xt, y_test=yt)
        data = f"npz:{data}"
        for method in ("feature_extraction", "two_phase", "scratch"):
            times = {}

            class Timer(__import__("keras").callbacks.Callback):
                def on_epoch_begin(self, epoch, logs=None):
                    self.start = time.perf_counter()

                def on_epoch_end(self, epoch, logs=None):
                    times[epoch] = time.perf_counter() - self.start

            kwargs = dict(method="two_phase" if method == "scratch" else method,
                          weights=None if method == "scratch" else pre.run_dir,
                          head_epochs=0 if method == "scratch" else args.head_epochs,
                          epochs=total if method == "scratch" else args.epochs)
            if method == "scratch":
                # All stages train from the start, at the full rate, from Keras's
                # initialisation (no linear-probe head: there are no features to probe).
                kwargs.update(lr_factor=1.0, head_init="random")
            started = time.perf_counter()
            result = transfer.finetune(
                args.model, data, validation_split=0.2, batch_size=16,
                input_size=args.size, run_dir=os.path.join(work, f"{method}_{per_class}"),
                callbacks=[Timer()], export=False, verbose=0, seed=args.seed, **kwargs)
            # Each fit's first epoch traces the graph: left out of the timings.
            if method == "feature_extraction":
                frozen, unfrozen = [took for epoch, took in times.items() if epoch > 0], []
            elif method == "scratch":
                frozen, unfrozen = [], [took for epoch, took in times.items() if epoch > 0]
            else:
                frozen = [took for epoch, took in times.items() if 0 < epoch < args.head_epochs]
                unfrozen = [took for epoch, took in times.items() if epoch > args.head_epochs]
            print(f"{per_class:>9} {method:>18} {result.metrics['test_accuracy']:>9.4f} "
                  f"{_median(frozen):>15} {_median(unfrozen):>17} "
                  f"{time.perf_counter() - started:>7.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
