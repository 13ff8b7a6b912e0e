"""The `zoo` command line.

    zoo list [PATTERN] [--family F] [--task T] [--json] [--details]
    zoo info NAME [--json]
    zoo train NAME [--data digits] [--epochs N] [--batch-size N] [--optimizer O]
                   [--lr X] [--schedule S] [--seed N] [--out DIR] [--strategy S] ...
    zoo evaluate RUN_DIR
    zoo export RUN_DIR [--format saved_model keras tflite] [--out PATH] [--overwrite]

`--help`, `list` and `info` never import TensorFlow.
"""

import argparse
import ast
import json
import os
import sys

from zoo.registry import LOSSES, OPTIMIZERS, SCHEDULES, TASKS

EXIT_USAGE = 2


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _int_list(text):
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def _model_arg(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    if isinstance(parsed, list):
        parsed = tuple(parsed)
    return key, parsed


def build_parser():
    parser = argparse.ArgumentParser(
        prog="zoo", description="Keras model zoo: list, train, evaluate and export models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="glob over names, e.g. 'resnet*'")
    p.add_argument("--family", help="only this family")
    p.add_argument("--task", choices=TASKS, help="only this task")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--details", action="store_true",
                   help="parameters, GMACs per image and measured accuracy (zoo/results.csv)")

    p = sub.add_parser("info", help="show a model's spec")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("train", help="train a model and write a run directory")
    p.add_argument("name")
    p.add_argument("--data", default="digits",
                   help="digits (default, offline), mnist, fashion_mnist, cifar10, cifar100, "
                        "tfds:NAME, folder:PATH, npz:PATH, csv:PATH")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--lr", type=_positive_float, help="learning rate")
    p.add_argument("--schedule", choices=SCHEDULES)
    p.add_argument("--loss", choices=LOSSES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="run directory (default runs/NAME)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--strategy", help="default, cpu, one_device, mirrored, multi_worker, tpu")
    p.add_argument("--augment", nargs="+", metavar="NAME", help="augmentations, e.g. flip crop")
    p.add_argument("--classes", type=_int_list, help="keep these labels only, e.g. 3,8")
    p.add_argument("--arg", type=_model_arg, action="append", default=[], metavar="KEY=VALUE",
                   help="model builder argument, e.g. --arg hidden_units=[64,32]")
    p.add_argument("--deterministic", action="store_true", help="TensorFlow op determinism")
    p.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=None,
                   help="XLA (default: on with a GPU, off on CPU)")
    p.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2)
    for flag in ("text-column", "label-column", "target"):
        p.add_argument(f"--{flag}", help="data option for csv sources")
    p.add_argument("--lookback", type=_positive_int, help="time-series input window")
    p.add_argument("--horizon", type=_positive_int, help="time-series forecast steps")

    p = sub.add_parser("evaluate", help="evaluate a finished run on its test split")
    p.add_argument("run_dir")
    p.add_argument("--data", help="evaluate on another source")

    p = sub.add_parser("export", help="export a finished run for serving")
    p.add_argument("run_dir")
    p.add_argument("--format", nargs="+", default=["saved_model"],
                   choices=("saved_model", "keras", "tflite"))
    p.add_argument("--out", help="target path (one format only)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-verify", action="store_true", help="skip the fresh-process check")
    return parser


def _results_table():
    """Measured results keyed by model name, from the shipped results CSV."""
    import csv
    path = os.path.join(os.path.dirname(__file__), "results.csv")
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        return {row["name"]: row for row in csv.DictReader(f)}


def cmd_list(args):
    from zoo.registry import get_spec, list_models
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
            measured = (f"{float(r['test_accuracy']):.4f} on {r['dataset']} after "
                        f"{r['epochs']} epochs" if r.get("test_accuracy") else "-")
            line += f"  {gmacs:>9} GMACs  {measured}"
        else:
            line += f"  {s.description}"
        print(line)
    return 0


def cmd_info(args):
    from zoo.registry import get_spec
    spec = get_spec(args.name)
    d = spec.to_dict()
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    for key in ("name", "family", "task", "description", "paper", "num_params", "params_note",
                "input_shape", "min_input_shape", "input_kind", "exportable", "backbone"):
        print(f"{key:>16}: {d[key]}")
    print(f"{'recipe':>16}: " + ", ".join(f"{k}={v}" for k, v in d["recipe"].items()))
    print(f"{'arguments':>16}: " + ", ".join(f"{k}={v!r}" for k, v in d["arguments"].items()))
    return 0


def cmd_train(args):
    from zoo.registry import get_spec
    get_spec(args.name)  # unknown names fail before TensorFlow loads
    options = {k: getattr(args, k) for k in ("text_column", "label_column", "target",
                                              "lookback", "horizon")
               if getattr(args, k) is not None}
    from zoo.training import print_summary, train
    result = train(
        args.name, data=args.data, epochs=args.epochs, batch_size=args.batch_size,
        optimizer=args.optimizer, learning_rate=args.lr, schedule=args.schedule, loss=args.loss,
        seed=args.seed, run_dir=args.out, strategy=args.strategy, overwrite=args.overwrite,
        model_kwargs=dict(args.arg), data_options=options or None, augment=args.augment,
        classes=args.classes, deterministic=args.deterministic, jit_compile=args.jit_compile,
        export=not args.no_export, verbose=args.verbose)
    print_summary(result)
    return 0


def cmd_evaluate(args):
    from zoo.training import evaluate
    metrics = evaluate(args.run_dir, data=args.data)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_export(args):
    from zoo.export import export_run
    exports = export_run(args.run_dir, formats=args.format, out=args.out,
                         overwrite=args.overwrite, verify=not args.no_verify)
    for fmt, entry in exports.items():
        if fmt in args.format:
            extra = (f" (max abs diff vs Keras {entry['max_abs_diff']:.2e})"
                     if "max_abs_diff" in entry else "")
            print(f"{fmt}: {entry['path']}{extra}")
    return 0


COMMANDS = {"list": cmd_list, "info": cmd_info, "train": cmd_train, "evaluate": cmd_evaluate,
            "export": cmd_export}


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except ValueError as err:
        print(f"zoo {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:
        from zoo.data import DataUnavailableError
        if not isinstance(err, DataUnavailableError):
            raise
        print(f"zoo {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
