"""Hyperband vs random search on a fixed Fashion-MNIST subset, same total epoch budget.

Hyperband (KerasTuner's, factor 3) over `--max-epochs` spends a known number
of epochs (printed before it starts); random search gets the same number of
epochs as `budget // max_epochs` full-length trials.  Prints, for each, the
best validation accuracy, the epochs actually spent, the trials and the
wall time, and the test accuracy of the best trial's weights.

    python benchmarks/tuning_search.py --model mlp --train 6000 --max-epochs 9
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def subset(path, n_train, n_test, seed=0):
    """A fixed, stratified-by-chance subset of Fashion-MNIST as an npz file (x_train, ...)."""
    import numpy as np

    from zoo import data as zdata
    (x, y), test, _ = zdata.read_source("fashion_mnist")
    rng = np.random.default_rng(seed)
    train_idx = rng.permutation(len(x))[:n_train]
    test_idx = rng.permutation(len(test[0]))[:n_test]
    np.savez(path, x_train=x[train_idx], y_train=y[train_idx], x_test=test[0][test_idx],
             y_test=test[1][test_idx])
    return f"npz:{path}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--max-epochs", type=int, default=9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="keep the searches here (default: a temporary folder)")
    args = parser.parse_args(argv)

    import tuning
    from tuning import searcher

    root = args.out or tempfile.mkdtemp()
    os.makedirs(root, exist_ok=True)
    data = subset(os.path.join(root, "fashion_subset.npz"), args.train, args.test)
    _, budget, text = searcher.budget("hyperband", max_trials=None, max_epochs=args.max_epochs)
    random_trials = max(1, budget // args.max_epochs)
    print(f"hyperband budget: {text}")
    print(f"random search: {random_trials} trials x {args.max_epochs} epochs = "
          f"{random_trials * args.max_epochs} epochs")
    rows = []
    for tuner, kwargs in (("hyperband", {}), ("random", {"max_trials": random_trials,
                                                         "early_stopping": None})):
        start = time.time()
        result = tuning.search(args.model, data, tuner=tuner, max_epochs=args.max_epochs,
                               seed=args.seed, directory=os.path.join(root, tuner),
                               overwrite=True, verbose=0, tensorboard=False, **kwargs)
        seconds = time.time() - start
        epochs = sum(r["epochs_run"] or 0 for r in result.rows)
        model = result.best_model
        bundle = result._hypermodel.plan.bundle
        test = model.evaluate(bundle.test, verbose=0, return_dict=True)
        rows.append((tuner, result.best_score, test.get("accuracy"), epochs, len(result.rows),
                     seconds))
        print(f"{tuner}: best val_accuracy {result.best_score:.4f} (trial "
              f"{result.best_trial_id}), its test accuracy {test.get('accuracy'):.4f}, "
              f"{epochs} epochs in {len(result.rows)} trials, {seconds:.0f} s", flush=True)
    print("\n| tuner | best val accuracy | test accuracy of best | epochs spent | trials | "
          "seconds |\n|---|---|---|---|---|---|")
    for tuner, val, test, epochs, trials, seconds in rows:
        print(f"| {tuner} | {val:.4f} | {test:.4f} | {epochs} | {trials} | {seconds:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
