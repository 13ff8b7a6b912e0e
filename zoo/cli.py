"""The `zoo` command line.

    zoo list [PATTERN] [--family F] [--task T] [--json] [--details]
    zoo info NAME [--json]
    zoo train NAME [--data digits] [--epochs N] [--batch-size N] [--optimizer O]
                   [--lr X] [--schedule S] [--seed N] [--out DIR] [--strategy S] ...
    zoo evaluate RUN_DIR
    zoo export RUN_DIR [--format saved_model keras tflite onnx] [--out PATH] [--overwrite]
                   [--quantize dynamic|float16|int8]
    zoo tune NAME ...       (tuning.cli)
    zoo finetune BACKBONE ...  (transfer.cli)

`--help`, `list` and `info` never import TensorFlow.  A user error prints
one line and exits 2 (a missing dataset, a bad argument, a damaged run);
an internal error shows its traceback and exits 1; `--debug` shows the
traceback of user errors too.
"""

import argparse
import ast
import importlib
import json
import os
import sys

from zoo import checks, startup
from zoo.registry import LOSSES, OPTIMIZERS, SCHEDULES, TASKS

EXIT_USAGE = 2  # user errors (argparse uses 2 too); uncaught internal errors exit 1
# Subcommands that live in their own packages: module with HELP,
# add_arguments(parser) and run(args) -> exit code; imported without TensorFlow.
PLUGINS = {"tune": "tuning.cli", "finetune": "transfer.cli"}


def _argument_type(check, what):
    """An argparse type from a `zoo.checks` function (one rule, one message)."""
    def parse(text):
        try:
            value = float(text) if check in (checks.positive_float,) else int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        try:
            return check("value", value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    return parse


positive_int = _argument_type(checks.positive_int, "a positive integer")
non_negative_int = _argument_type(checks.non_negative_int, "a non-negative integer")
positive_float = _argument_type(checks.positive_float, "a positive number")


def int_list(text):
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None


def model_arg(text):
    """KEY=VALUE with VALUE a Python literal (numbers, True/False, [lists], 'strings')."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        if any(c in value for c in "[](){},'\""):
            raise argparse.ArgumentTypeError(
                f"{key}: {value!r} is not a Python literal (e.g. [64,32], 0.5, True, "
                f"'relu')") from None
        parsed = value  # a bare word: a string such as relu
    if isinstance(parsed, str) and parsed.lower() in ("true", "false", "yes", "no"):
        raise argparse.ArgumentTypeError(
            f"{key}: write booleans as True or False, got {value!r}")
    if isinstance(parsed, list):
        parsed = tuple(parsed)
    return key, parsed


def _task_data_options():
    """{option: help} over every task the registered models use (no TensorFlow)."""
    from zoo.data import GENERIC_OPTIONS
    from zoo.registry import get_spec, list_models
    options = dict(GENERIC_OPTIONS)
    seen = set()
    for name in list_models():
        spec = get_spec(name)
        if spec.hooks and spec.hooks not in seen:
            seen.add(spec.hooks)
            hooks = spec.load_hooks()
            for option, help_text in (getattr(hooks, "data_options", None) or {}).items():
                options.setdefault(option, help_text)
    return options


_INT_OPTIONS = ("lookback", "horizon", "sequence_length", "season")


def add_training_arguments(parser, *, recipe=True, distribute=True):
    """The flags `zoo train`, `zoo tune` and `zoo finetune` share.

    Args:
        parser: an argparse parser.
        recipe: add the recipe overrides (epochs, lr, ...). Defaults to True.
        distribute: add --workers, --per-replica-batch and --scale-lr
            (`add_distribute_arguments`). Defaults to True.
    """
    parser.add_argument("--data", default="digits",
                        help="digits (default, offline), mnist, fashion_mnist, cifar10, "
                             "cifar100, tfds:NAME, folder:PATH, tfrecord:GLOB, npz:PATH, "
                             "csv:PATH")
    if recipe:
        parser.add_argument("--epochs", type=positive_int)
        parser.add_argument("--batch-size", type=positive_int)
        parser.add_argument("--optimizer", choices=OPTIMIZERS)
        parser.add_argument("--lr", type=positive_float, help="learning rate")
        parser.add_argument("--schedule", choices=SCHEDULES)
        parser.add_argument("--loss", choices=LOSSES)
        parser.add_argument("--augment", nargs="+", metavar="NAME",
                            help="augmentations, e.g. flip crop")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--strategy", help="default, cpu, one_device, mirrored, multi_worker, tpu")
    parser.add_argument("--classes", type=int_list, help="keep these labels only, e.g. 3,8")
    parser.add_argument("--deterministic", action="store_true", help="TensorFlow op determinism")
    parser.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=None,
                        help="XLA (default: on with a GPU, off on CPU)")
    parser.add_argument("--mixed-precision", choices=("auto", "off", "float16", "bfloat16"),
                        default="auto",
                        help="compute dtype (default auto: float16 with a GPU; bfloat16 for "
                             "the batch-normalized convnets on a CPU with AMX; else float32)")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None,
                        help="0 silent, 1 progress bar, 2 one line per epoch (default: 1 in "
                             "a terminal, else 2)")
    if distribute:
        add_distribute_arguments(parser)
    group = parser.add_argument_group("data options (by task)")
    from zoo.data import SWITCH_OPTIONS
    for option, help_text in _task_data_options().items():
        if option in SWITCH_OPTIONS:  # e.g. --skip-bad-images: no value
            group.add_argument(f"--{option.replace('_', '-')}", dest=option, help=help_text,
                               action="store_const", const=True, default=None)
            continue
        group.add_argument(f"--{option.replace('_', '-')}", dest=option, help=help_text,
                           type=positive_int if option in _INT_OPTIONS else str)


def training_options(args):
    """`zoo.train` / `zoo.training.plan` keyword arguments from `add_training_arguments` flags."""
    options = {k: getattr(args, k) for k in _task_data_options()
               if getattr(args, k, None) is not None}
    kwargs = dict(data=args.data, seed=args.seed, strategy=args.strategy, classes=args.classes,
                  deterministic=args.deterministic, jit_compile=args.jit_compile,
                  mixed_precision={"auto": None, "off": False}.get(args.mixed_precision,
                                                                   args.mixed_precision),
                  data_options=options or None,
                  verbose=args.verbose if args.verbose is not None else (
                      1 if sys.stdout.isatty() else 2))
    if hasattr(args, "epochs"):
        kwargs.update(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
                      learning_rate=args.lr, schedule=args.schedule, loss=args.loss,
                      augment=args.augment)
    if hasattr(args, "per_replica_batch"):
        kwargs.update(distribute_options(args))
    return kwargs


def _steps_per_execution(text):
    if text == "auto":
        return text
    try:
        return checks.positive_int("steps_per_execution", int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', "
                                         f"got {text!r}") from None


def _open_fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def _smoothing(text):
    """Label smoothing in [0, 1): 0 turns off a recipe's smoothing."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1) (0: none), got {text!r}")
    return value


def add_recipe_option_arguments(parser):
    """`zoo train`'s flags for the recipe's training options (speed, averaging, smoothing)."""
    group = parser.add_argument_group("training options (recipe fields)")
    group.add_argument("--steps-per-execution", type=_steps_per_execution, metavar="N|auto",
                       help="training steps per call into TensorFlow (default auto: 32 for "
                            "small models, 1 with callbacks that need every batch)")
    group.add_argument("--label-smoothing", type=_smoothing, metavar="E",
                       help="label smoothing of categorical losses, e.g. 0.1 (0: none)")
    group.add_argument("--ema", type=_open_fraction, metavar="MOMENTUM", dest="ema_momentum",
                       help="exponential moving average of the weights (e.g. 0.999), used "
                            "for validation, checkpoints, evaluation and export")
    group.add_argument("--tta", action="store_true", default=None,
                       help="also report test_tta_accuracy: image and mirror averaged")


def recipe_option_changes(args):
    """The recipe fields `add_recipe_option_arguments` flags set (absent flags: none)."""
    names = ("steps_per_execution", "label_smoothing", "ema_momentum", "tta")
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _integer(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def add_distribute_arguments(parser):
    """Add --workers, --per-replica-batch and --scale-lr to an argparse parser."""
    group = parser.add_argument_group("distribution")
    # --workers' range is checked by distribute_options, with the same message as workers=.
    group.add_argument("--workers", type=_integer, metavar="K",
                       help="rehearse multi_worker on this machine: K local worker processes "
                            "on 127.0.0.1 with a generated TF_CONFIG (chief = worker 0)")
    group.add_argument("--per-replica-batch", type=positive_int, metavar="N",
                       help="batch per replica; the global batch becomes N x replicas "
                            "(default: --batch-size is the global batch)")
    group.add_argument("--scale-lr", action="store_true",
                       help="linear scaling rule: learning rate x global batch / the "
                            "recipe's batch")


def distribute_options(args):
    """`zoo.train` / `plan` keyword arguments from `add_distribute_arguments` flags.

    Validates --workers (>= 1, only with multi_worker, which it implies) and
    that --per-replica-batch and --batch-size are not both given.
    """
    from zoo.launch import check_workers
    strategy = check_workers(getattr(args, "workers", None), getattr(args, "strategy", None))
    per_replica = getattr(args, "per_replica_batch", None)
    if per_replica is not None and getattr(args, "batch_size", None) is not None:
        raise ValueError(f"Pass either --batch-size (the global batch) or --per-replica-batch, "
                         f"not both. Received: batch_size={args.batch_size}, "
                         f"per_replica_batch={per_replica}")
    options = {"per_replica_batch": per_replica, "scale_lr": bool(getattr(args, "scale_lr", False))}
    if strategy is not None:
        options["strategy"] = strategy
    return options


class _Parser(argparse.ArgumentParser):
    """argparse with a user error on one line (argparse prints the whole usage first)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    parser = _Parser(
        prog="zoo", description="Keras model zoo: list, train, tune, fine-tune, evaluate and "
                                "export models.")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error and all of TensorFlow's log "
                             "(ZOO_DEBUG=1 does too)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    listing = sub.add_parser("list", help="list registered models")
    listing.add_argument("pattern", nargs="?", default="*", help="glob over names, e.g. 'resnet*'")
    listing.add_argument("--family", help="only this family")
    listing.add_argument("--task", choices=TASKS, help="only this task")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument("--details", action="store_true",
                         help="parameters, GMACs per image and measured accuracy "
                              "(zoo/results.csv)")
    listing.add_argument("--backbones", action="store_true",
                         help="every backbone `zoo finetune` takes: source, input size, "
                              "preprocessing")

    info = sub.add_parser("info", help="show a model's spec")
    info.add_argument("name")
    info.add_argument("--json", action="store_true")

    training = sub.add_parser("train", help="train a model and write a run directory")
    training.add_argument("name")
    add_training_arguments(training)
    add_recipe_option_arguments(training)
    training.add_argument("--out", help="run directory (default runs/NAME)")
    training.add_argument("--overwrite", action="store_true",
                          help="replace an existing run directory")
    training.add_argument("--arg", type=model_arg, action="append", default=[],
                          metavar="KEY=VALUE",
                          help="model builder argument, e.g. --arg hidden_units=[64,32]")
    training.add_argument("--no-export", action="store_true", help="skip the SavedModel export")

    evaluation = sub.add_parser("evaluate", help="evaluate a finished run on its test split")
    evaluation.add_argument("run_dir")
    evaluation.add_argument("--data", help="evaluate on another source")
    evaluation.add_argument("--batch-size", type=positive_int)

    exporting = sub.add_parser("export", help="export a finished run for serving")
    exporting.add_argument("run_dir")
    exporting.add_argument("--format", nargs="+", default=["saved_model"],
                           choices=("saved_model", "keras", "tflite", "onnx"),
                           help="onnx needs pip install 'zoo-keras[onnx]'")
    exporting.add_argument("--out", help="target path (one format only)")
    exporting.add_argument("--overwrite", action="store_true")
    exporting.add_argument("--no-verify", action="store_true",
                           help="skip the fresh-process check")
    exporting.add_argument("--quantize", choices=("dynamic", "float16", "int8"),
                           help="with --format tflite: a quantized model (int8 calibrated on "
                                "the run's training split), scored against the float one")

    for command, module in PLUGINS.items():
        try:
            plugin = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            continue
        plugin.add_arguments(sub.add_parser(command, help=plugin.HELP))
    return parser


def _results_table():
    """Measured results keyed by model name, from the shipped results CSV."""
    import csv
    path = os.path.join(os.path.dirname(__file__), "results.csv")
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        return {row["name"]: row for row in csv.DictReader(f)}


def _epochs(count):
    """'1 epoch', '3 epochs' for a results-table cell."""
    try:
        n = int(float(count))
    except (TypeError, ValueError):  # a hand-edited table: shown as written
        return f"{count} epochs"
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def cmd_list(args):
    from zoo.registry import get_spec, list_models
    if args.backbones:
        import fnmatch

        from transfer import list_backbones
        rows = [r for r in list_backbones() if fnmatch.fnmatchcase(r[0], args.pattern)
                or fnmatch.fnmatchcase(r[0].partition(":")[2], args.pattern)]
        if args.json:
            print(json.dumps([dict(zip(("name", "source", "input_size", "preprocessing"), r))
                              for r in rows], indent=2))
            return 0
        width = max((len(r[0]) for r in rows), default=0)
        for name, source, size, pre in rows:
            print(f"{name:<{width}}  {source:<18} {size:<18} {pre}")
        return 0
    names = list_models(args.pattern, family=args.family, task=args.task)
    specs = [get_spec(n) for n in names]
    results = _results_table() if args.details else {}
    if args.json:
        rows = []
        for s in specs:
            row = s.to_dict()
            if args.details:
                row["results"] = results.get(s.name)
            rows.append(row)
        print(json.dumps(rows, indent=2))
        return 0
    if not names:
        print("no models match", file=sys.stderr)
        return 0
    width = max(len(n) for n in names)
    for s in specs:
        params = f"{s.num_params:,}" if s.num_params else "-"
        line = f"{s.name:<{width}}  {s.family:<12} {s.task:<15} {params:>13}"
        if args.details:
            r = results.get(s.name, {})
            gmacs = f"{float(r['gmacs']):.4g}" if r.get("gmacs") else "-"
            # zoo/results.csv, written by benchmarks/results_table.py; no figure is made up.
            measured = (f"{float(r['test_accuracy']):.4f} on {r['dataset']} after "
                        f"{_epochs(r['epochs'])}" if r.get("test_accuracy") else "not measured")
            if r.get("test_accuracy") and r.get("train_seconds"):
                measured += f" in {float(r['train_seconds']):.0f} s"
            if r.get("test_accuracy") and r.get("date"):
                measured += f" ({r['date']})"
            if r.get("baseline_test_accuracy"):
                # The script trains for the zoo run's wall time, but at least one epoch.
                baseline = _epochs(r["baseline_epochs"])
                if r.get("baseline_seconds"):
                    baseline += f" in {float(r['baseline_seconds']):.0f} s"
                measured += (f"; plain Keras {float(r['baseline_test_accuracy']):.4f} "
                             f"({baseline})")
            elif r.get("test_accuracy"):
                measured += "; plain Keras not measured"
            line += f"  {gmacs:>9} GMACs  {measured}"
        else:
            line += f"  {s.description}"
        print(line)
    return 0


def cmd_info(args):
    from zoo.registry import get_spec
    spec = get_spec(args.name)
    details = spec.to_dict()
    if args.json:
        print(json.dumps(details, indent=2))
        return 0
    for key in ("name", "family", "task", "description", "paper", "num_params", "params_note",
                "input_shape", "min_input_shape", "input_kind", "exportable", "backbone"):
        print(f"{key:>16}: {details[key]}")
    print(f"{'recipe':>16}: " + ", ".join(f"{k}={v}" for k, v in details["recipe"].items()))
    print(f"{'arguments':>16}: "
          + ", ".join(f"{k}={v!r}" for k, v in details["arguments"].items()))
    return 0


def run_local_workers(args):
    """`--workers K`: run this very command as K local workers; None when not asked.

    Plugins (`zoo finetune`) call it first thing too.
    """
    from zoo.launch import maybe_run_local_workers
    return maybe_run_local_workers(args, getattr(args, "argv", None))


def cmd_train(args):
    from zoo.registry import get_spec
    get_spec(args.name)  # unknown names fail before TensorFlow loads
    code = run_local_workers(args)
    if code is not None:
        return code
    from zoo.training import print_summary, train
    changes = recipe_option_changes(args)
    recipe = get_spec(args.name).recipe.replace(**changes) if changes else None
    result = train(args.name, run_dir=args.out, overwrite=args.overwrite,
                   model_kwargs=dict(args.arg), export=not args.no_export, recipe=recipe,
                   **training_options(args))
    _explain_stop(result)
    print_summary(result)
    return 0


def _explain_stop(result):
    """Say why a run ended before its last epoch (early stopping, NaN loss)."""
    history = result.history or {}
    run = result.metrics.get("epochs_run")
    from zoo.runs import read_config
    try:
        planned = read_config(result.run_dir).recipe["epochs"]
    except (ValueError, KeyError):  # RunError is a ValueError
        return
    if not run or run >= planned:
        return
    losses = history.get("loss") or []
    if losses and (losses[-1] is None or losses[-1] != losses[-1]):
        print(f"stopped at epoch {run}/{planned}: the loss became NaN (TerminateOnNaN)")
        return
    monitor = next((k for k in ("val_loss",) if history.get(k)), None)
    if monitor:
        values = [v for v in history[monitor] if v is not None]
        best = min(values) if values else None
        at = history[monitor].index(best) + 1 if best is not None else "?"
        print(f"stopped early at epoch {run}/{planned}: {monitor} did not improve for "
              f"{run - at} epochs after its best, {best:.4g} at epoch {at} (those weights "
              f"were kept)")


def cmd_evaluate(args):
    from zoo.training import evaluate
    metrics = evaluate(args.run_dir, data=args.data, batch_size=args.batch_size)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_export(args):
    from zoo.export import export_run
    exports = export_run(args.run_dir, formats=args.format, out=args.out,
                         overwrite=args.overwrite, verify=not args.no_verify,
                         quantize=args.quantize)
    for fmt, entry in exports.items():
        if fmt in args.format and not (fmt == "tflite" and args.quantize):
            extra = (f" (max abs diff vs Keras {entry['max_abs_diff']:.2e})"
                     if "max_abs_diff" in entry else "")
            print(f"{fmt}: {entry['path']}{extra}")
        elif args.quantize and fmt == f"tflite_{args.quantize}":
            metric = entry.get("metric")
            score = (f", test {metric} {entry[f'test_{metric}']:.4f} (float32 "
                     f"{entry[f'float_test_{metric}']:.4f})" if metric else "")
            print(f"tflite ({entry['kernels']}): {entry['path']} "
                  f"({entry['size_bytes']} bytes, {entry['size_ratio']:.0%} of float32{score})")
    return 0


COMMANDS = {"list": cmd_list, "info": cmd_info, "train": cmd_train, "evaluate": cmd_evaluate,
            "export": cmd_export}


def _is_user_error(err):
    """Errors that are the user's to fix (one line) rather than a bug (traceback)."""
    from zoo.data import DataUnavailableError
    from zoo.launch import WorkerError
    return isinstance(err, (ValueError, TypeError, FileNotFoundError, PermissionError,
                            NotADirectoryError, IsADirectoryError, DataUnavailableError,
                            WorkerError))


def main(argv=None):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    parser = build_parser()
    args = parser.parse_args(argv)  # imports no TensorFlow
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    args.debug = startup.debug_requested(args.debug)
    startup.quiet_tensorflow(debug=args.debug)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    if args.command in COMMANDS:
        run = COMMANDS[args.command]
    else:
        run = importlib.import_module(PLUGINS[args.command]).run
    try:
        return run(args)
    except KeyboardInterrupt:
        print(f"zoo {args.command}: interrupted; an interrupted run resumes when the same "
              f"command is run again", file=sys.stderr)
        return 130
    except Exception as err:
        if startup.tensorflow_missing(err) and not args.debug:
            print(f"zoo {args.command}: error: {startup.MISSING_TENSORFLOW}", file=sys.stderr)
            return EXIT_USAGE
        if getattr(err, "exit_code", None) == 0 and not args.debug:
            print(f"zoo {args.command}: {err}")  # e.g. zoo.runs.RunFinished: already done
            return 0
        if args.debug or not _is_user_error(err):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"zoo {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
