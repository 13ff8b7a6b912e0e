"""`zoo tune`: KerasTuner search from the command line (a `zoo.cli` plugin).

    zoo tune NAME [--data digits] [--tuner hyperband] [--objective val_accuracy]
                  [--time-budget 1h]
                  [--max-trials N] [--max-epochs E] [--max-params N] [--space FILE.json]
                  [--arg KEY=VALUE] [--out DIR] [--overwrite] [--workers K] [--isolate]
                  [--retrain-best] [--seed S]
    zoo tune --models "lenet5,resnet20,wrn16_4" ...   the model is a hyperparameter too
    zoo tune DIR --report          top-10 table of a finished or running search
    zoo tune DIR --retrain-best    train the best configuration into a run directory
    zoo tune NAME ... --role chief  --oracle HOST:PORT   (one process of a cluster)
    zoo tune NAME ... --role worker --oracle HOST:PORT

Running the same command again resumes an interrupted search.  Imports no
TensorFlow until a search starts (`--help` and `--report` stay instant).
"""

import os
import sys

from tuning.errors import SearchFailed
from tuning.oracles import TUNERS

HELP = "search a model's hyperparameters with KerasTuner (resumable)"


def add_arguments(parser):
    from zoo import cli as zoo_cli

    parser.add_argument("name_or_dir", metavar="NAME_OR_DIR", nargs="?",
                        help="a registered model name (several: 'a,b' or a glob, as --models), "
                             "or a search directory (with --report or --retrain-best)")
    zoo_cli.add_training_arguments(parser, recipe=False, distribute=False)
    group = parser.add_argument_group("search")
    group.add_argument("--models", metavar="NAMES",
                       help="search over several models: 'lenet5,resnet20,wrn16_4' or a glob "
                            "('resnet*'); the model becomes a hyperparameter, each model's "
                            "space conditional on it, trial k < len(models) = model k's recipe")
    group.add_argument("--time-budget", metavar="DURATION",
                       help="wall-clock budget of the whole search (3600, 3600s, 90m, 1h): no "
                            "trial starts that the rest cannot finish; with --retrain-best the "
                            "retrain fits in it too and trains the epochs the rest holds")
    group.add_argument("--tuner", choices=TUNERS, default="hyperband",
                       help="KerasTuner oracle (default hyperband)")
    group.add_argument("--objective", help="metric to optimise, e.g. val_accuracy, val_mae:min "
                                           "(default: the task's)")
    group.add_argument("--max-trials", type=zoo_cli.positive_int,
                       help="at most this many trials (default 10; Hyperband: its brackets)")
    group.add_argument("--max-epochs", type=zoo_cli.positive_int,
                       help="epochs per trial, Hyperband's maximum (default: the recipe's)")
    group.add_argument("--max-params", type=zoo_cli.positive_int,
                       help="skip (without training) models with more parameters")
    group.add_argument("--executions-per-trial", type=zoo_cli.positive_int, default=1)
    group.add_argument("--space", metavar="FILE.json",
                       help="fix or narrow hyperparameters: {\"units\": 64, \"activation\": "
                            "[\"relu\", \"gelu\"], \"learning_rate\": {\"min\": 1e-4, "
                            "\"max\": 1e-2}}")
    group.add_argument("--arg", type=zoo_cli.model_arg, action="append", default=[],
                       metavar="KEY=VALUE", help="fixed builder argument, e.g. --arg units=64")
    group.add_argument("--early-stopping", choices=("auto", "median", "none"), default="auto",
                       help="median-stopping rule for bad trials (auto: random and bayesian)")
    group.add_argument("--max-failures", type=zoo_cli.positive_int, default=5,
                       help="stop after this many failed trials in a row (default 5)")
    group.add_argument("--out", help="search directory (default runs/tuning/NAME)")
    group.add_argument("--overwrite", action="store_true",
                       help="replace an existing search directory")
    group.add_argument("--report", action="store_true",
                       help="print the top-10 table of the search in NAME_OR_DIR and exit")
    group.add_argument("--retrain-best", action="store_true",
                       help="after the search, train the best configuration into a run "
                            "directory (full recipe epochs), ready for zoo export")
    group.add_argument("--run-dir", help="run directory for --retrain-best "
                                         "(default SEARCH_DIR/best_run)")
    group = parser.add_argument_group("distributed")
    group.add_argument("--workers", type=zoo_cli.non_negative_int, default=0,
                       help="run K local worker processes (KerasTuner chief/worker on "
                            "127.0.0.1)")
    group.add_argument("--isolate", action="store_true",
                       help="run every trial in its own process")
    group.add_argument("--role", choices=("chief", "worker"),
                       help="one process of a multi-machine search (with --oracle)")
    group.add_argument("--oracle", metavar="HOST:PORT",
                       help="the chief's address (default 127.0.0.1 and a free port)")


def _model_names(text):
    from tuning.searcher import model_names
    return model_names(text)


def _search_dir(target):
    from tuning import results
    return os.path.isdir(target) and os.path.exists(os.path.join(target, results.SEARCH_FILE))


def run(args):
    from zoo import cli as zoo_cli

    if (args.name_or_dir is None) == (args.models is None):
        raise ValueError(f"zoo tune takes a model name (or search directory) or --models, one "
                         f"of the two. Received: NAME_OR_DIR={args.name_or_dir!r}, "
                         f"--models={args.models!r}")
    if args.models is not None:
        if args.report:
            raise ValueError("--report reads a search directory: give the directory, not "
                             "--models.")
        args.name_or_dir = args.models
    if args.time_budget is not None:
        from tuning.budget import parse_duration
        parse_duration(args.time_budget, name="--time-budget")
    if args.report:
        if not _search_dir(args.name_or_dir):
            raise ValueError(f"--report needs a search directory (with search.json). "
                             f"Received: {args.name_or_dir!r}")
        from tuning import results
        print(results.top_table(args.name_or_dir, 10))
        return 0
    if _search_dir(args.name_or_dir):
        if not args.retrain_best:
            raise ValueError(f"{args.name_or_dir!r} is a search directory: add --report or "
                             f"--retrain-best, or give a model name to search.")
        return _retrain(args, args.name_or_dir)

    searcher_names = _model_names(args.name_or_dir)  # unknown names fail before TensorFlow
    options = zoo_cli.training_options(args)
    verbose = options.pop("verbose")
    data = options.pop("data")
    seed = options.pop("seed")
    options = {k: v for k, v in options.items()
               if v is not None and not (k == "deterministic" and v is False)}
    if args.arg:
        options["model_kwargs"] = dict(args.arg)
    from tuning import searcher
    try:
        result = searcher.search(
            searcher_names if len(searcher_names) > 1 else searcher_names[0], data,
            tuner=args.tuner, objective=args.objective, time_budget=args.time_budget,
            retrain_best=bool(args.retrain_best and args.time_budget),
            max_trials=args.max_trials, max_epochs=args.max_epochs, max_params=args.max_params,
            executions_per_trial=args.executions_per_trial, seed=seed, directory=args.out,
            overwrite=args.overwrite, workers=args.workers, space=args.space,
            early_stopping=None if args.early_stopping == "none" else args.early_stopping,
            max_consecutive_failed_trials=args.max_failures, verbose=min(verbose, 1),
            oracle=args.oracle, role=args.role, isolate=args.isolate, **options)
    except SearchFailed as err:  # the search's own outcome: one line, exit 2
        print(f"zoo tune: {err}", file=sys.stderr)
        return 2
    if result is None:  # a worker
        return 0
    failed = searcher.no_result_message(result)
    if failed:
        print(f"zoo tune: {failed}", file=sys.stderr)
        return 2
    print(f"search directory: {result.directory}")
    print(f"leaderboard: {os.path.join(result.directory, 'trials.csv')}; report: "
          f"{os.path.join(result.directory, 'report.html')}")
    if args.retrain_best:
        return _retrain(args, result.directory)
    return 0


def _retrain(args, directory):
    from tuning import searcher
    from zoo.training import print_summary

    verbose = args.verbose if args.verbose is not None else (1 if sys.stdout.isatty() else 2)
    run = searcher.retrain_best(directory, run_dir=args.run_dir, overwrite=args.overwrite,
                                verbose=verbose)
    print_summary(run)
    return 0
