"""Tune a model on Fashion-MNIST, retrain the best configuration and export it.

Offline: Fashion-MNIST is read from local IDX files (Debian package
`dataset-fashion-mnist`, /usr/share/datasets/fashion-mnist).  Interrupt it
at any time (Ctrl-C, or kill -9): the same command resumes the search.

    python examples/tune_fashion_mnist.py --model lenet5 --tuner hyperband --max-epochs 9
    zoo tune runs/tuning/fashion_mnist --report       # the leaderboard, any time
    zoo export runs/tuning/fashion_mnist/best_run     # the retrained best model

The same from the command line:

    zoo tune lenet5 --data fashion_mnist --tuner hyperband --max-epochs 9 \\
        --out runs/tuning/fashion_mnist --retrain-best
"""

import argparse

import tuning


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--tuner", default="hyperband", choices=tuning.TUNERS)
    parser.add_argument("--max-epochs", type=int, default=9)
    parser.add_argument("--max-trials", type=int, default=None)
    parser.add_argument("--max-params", type=int, default=None)
    parser.add_argument("--retrain-epochs", type=int, default=None,
                        help="epochs of the retraining (default: the recipe's, with early "
                             "stopping)")
    parser.add_argument("--out", default="runs/tuning/fashion_mnist")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    result = tuning.search(args.model, "fashion_mnist", tuner=args.tuner,
                           max_epochs=args.max_epochs, max_trials=args.max_trials,
                           max_params=args.max_params, seed=args.seed, directory=args.out)
    print(f"best trial {result.best_trial_id}: {result.objective} = {result.best_score:.4f}")
    print(f"  {result.best_hyperparameters}")
    run = tuning.retrain_best(result.directory, epochs=args.retrain_epochs, overwrite=True)
    print(f"retrained: {run.run_dir}, test accuracy {run.metrics['test_accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
