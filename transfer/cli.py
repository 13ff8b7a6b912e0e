"""`zoo finetune BACKBONE ...`: the command-line face of `transfer.finetune` (no TensorFlow to import)."""

HELP = "fine-tune a pretrained backbone with a new head (writes a run directory)"


def _unfreeze(text):
    import argparse
    if text == "all":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of stages or 'all', "
                                         f"got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of stages, got {text!r}")
    return value


def add_arguments(parser):
    from transfer.backbones import IN_CHANNELS, KERAS_BACKBONES, PREPROCESSING
    from transfer.finetuning import HEAD_INITS, METHODS
    from tuning.oracles import FIXED_EPOCH_TUNERS
    from zoo.cli import add_training_arguments, positive_float, positive_int

    parser.add_argument("backbone", help="a zoo backbone (zoo list --backbones), keras:NAME ("
                        + ", ".join(KERAS_BACKBONES) + ") or a finished run directory")
    add_training_arguments(parser, recipe=True)
    parser.add_argument("--weights", help="imagenet, a .h5 weights file or a run directory "
                                          "(default: random initialisation)")
    parser.add_argument("--weights-sha256", help="expected sha256 of the weights file")
    parser.add_argument("--method", choices=METHODS, default="two_phase",
                        help="fine-tuning method (default two_phase)")
    parser.add_argument("--unfreeze", type=_unfreeze, default="all",
                        help="stages to unfreeze after the head phase, or 'all' (default)")
    parser.add_argument("--head-epochs", type=int, default=3,
                        help="epochs with the backbone frozen (default 3)")
    parser.add_argument("--lr-factor", type=positive_float, default=10.0,
                        help="divide the learning rate by this when stages train (default 10)")
    parser.add_argument("--layer-decay", type=positive_float,
                        help="layer-wise learning-rate decay per stage, e.g. 0.75")
    parser.add_argument("--unfreeze-every", type=positive_int,
                        help="gradual: epochs between unfreezing steps")
    parser.add_argument("--head-init", choices=HEAD_INITS, default="probe",
                        help="start the new head from a linear probe of the frozen features "
                             "(default) or from a random initialisation")
    parser.add_argument("--in-channels", choices=IN_CHANNELS, default="adapt",
                        help="adapt the first convolution (default) or tile gray to RGB")
    parser.add_argument("--input-size", type=positive_int,
                        help="image size the backbone sees (default: a folder:/tfrecord: source "
                             "is resized to the backbone's native size, e.g. 224 for keras:*; "
                             "other data keep their own size)")
    parser.add_argument("--preprocessing", choices=PREPROCESSING,
                        help="override the input preprocessing the weights expect")
    parser.add_argument("--tune", type=positive_int, metavar="TRIALS",
                        help="search --unfreeze, --lr-factor and --layer-decay with KerasTuner "
                             "over this many fine-tuning runs (resumes on the same --out)")
    parser.add_argument("--tuner", choices=FIXED_EPOCH_TUNERS, default="random",
                        help="the search's oracle with --tune (default random)")
    parser.add_argument("--out", help="run directory (default runs/BACKBONE_finetuned; with "
                                      "--tune the search directory)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run")
    parser.add_argument("--no-export", action="store_true", help="skip the SavedModel export")


def run(args):
    from transfer.backbones import resolve
    from zoo.cli import run_local_workers, training_options

    code = run_local_workers(args)  # --workers K: this command as K local workers
    if code is not None:
        return code
    # Bad names and weights fail here, before TensorFlow loads.
    resolve(args.backbone, weights=args.weights, weights_sha256=args.weights_sha256,
            preprocessing=args.preprocessing)
    options = training_options(args)
    epochs = options.pop("epochs") or 5
    if args.tune:
        return _tune(args, options, epochs)
    from transfer.finetuning import finetune
    from zoo.training import print_summary
    result = finetune(
        args.backbone, method=args.method, weights=args.weights,
        weights_sha256=args.weights_sha256, unfreeze=args.unfreeze,
        head_epochs=args.head_epochs, epochs=epochs, lr_factor=args.lr_factor,
        layer_decay=args.layer_decay, unfreeze_every=args.unfreeze_every,
        head_init=args.head_init, in_channels=args.in_channels, input_size=args.input_size,
        preprocessing=args.preprocessing, run_dir=args.out, overwrite=args.overwrite,
        export=not args.no_export, **options)
    print_summary(result)
    print("phases: " + ", ".join(f"{phase.name} (epochs {phase.start + 1}-{phase.end})"
                                 for phase in result.phases))
    return 0


def _tune(args, options, epochs):
    from transfer.search import tune_finetune
    result = tune_finetune(
        args.backbone, tuner=args.tuner, max_trials=args.tune, directory=args.out,
        overwrite=args.overwrite, method=args.method, weights=args.weights,
        weights_sha256=args.weights_sha256, head_epochs=args.head_epochs, epochs=epochs,
        unfreeze_every=args.unfreeze_every, head_init=args.head_init,
        in_channels=args.in_channels, input_size=args.input_size,
        preprocessing=args.preprocessing, **options)
    print(f"{'trial':>6} {'unfreeze':>9} {'lr_factor':>9} {'layer_decay':>11} {'score':>8} "
          f"{'test_accuracy':>13}  run")
    for row in result.trials:
        score = "-" if row["score"] is None else f"{row['score']:.4f}"
        test = row.get("test_accuracy")
        print(f"{row['trial']:>6} {str(row['unfreeze']):>9} {row['lr_factor']:>9g} "
              f"{str(row['layer_decay']):>11} {score:>8} "
              f"{'-' if test is None else format(test, '.4f'):>13}  {row['run_dir']}")
    if result.best:
        print(f"best: {result.best['run_dir']} (zoo export {result.best['run_dir']})")
    return 0
