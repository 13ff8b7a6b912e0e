"""Export for serving: SavedModel, `.keras`, TFLite, a model card, and verification.

`export_saved_model` writes a SavedModel whose `serving_default` signature has
named inputs (the model's input names) and named outputs (its output names),
plus any named endpoints a family declares (`hooks.export_signatures`).
`verify_saved_model` loads it in a fresh process that imports only TensorFlow
and compares outputs with the Keras model.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from zoo import checks, runs
from zoo import io as zio

FORMATS = ("saved_model", "keras", "tflite", "onnx")
ONNX_OPSET = 17
SAMPLE_FILE = runs.SAMPLE_FILE
# Post-training quantization of the TFLite export (TensorFlow's converter):
# dynamic-range (int8 weights), float16 weights, full-integer int8.
QUANTIZE_MODES = ("dynamic", "float16", "int8")
REPRESENTATIVE_EXAMPLES = 200  # int8 calibration examples from the training split
QUANTIZED_TEST_EXAMPLES = 10_000  # at most this many test examples score a quantized model
ACCURACY_DROP_WARNING = 0.01  # one point of accuracy
TFLITE_SIGNATURE = "serving_default"
LITERT_MISSING = ("is checked in the LiteRT interpreter, which is not installed: "
                  "pip install 'zoo-keras[litert]'")


class ExportVerificationError(AssertionError):
    """The exported artifact does not reproduce the Keras model's outputs."""


def _check_target(path, overwrite, *, run_dir=None, argument="path"):
    """Refuse an export target in the way.

    One that exists is refused unless `overwrite`, and even then unless it
    is a SavedModel or an exported model file holding nothing else, and
    neither the run being exported nor a folder above it (the package's one
    rule, `zoo.runs.check_replaceable`).
    """
    path = os.path.abspath(path)
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise ValueError(f"Export target already exists; pass overwrite=True (--overwrite) to "
                         f"replace it. Received: {argument}={path!r}")
    runs.check_replaceable(path, ("saved_model", "artifact"), argument=argument,
                           keep=[(run_dir, "the run being exported")] if run_dir else ())


def _replace_folder(temporary, path):
    """Move the folder `temporary` to `path`; a SavedModel stays at `path` at every moment."""
    zio.replace_folder(temporary, path)


def input_names(model):
    # Subclassed models (VAE, GAN) have no symbolic inputs/outputs.
    return [t.name.split(":")[0] for t in getattr(model, "inputs", None) or ()]


def output_names(model):
    names = getattr(model, "output_names", None)
    if names:
        return list(names)
    return [f"output_{i}" for i in range(len(getattr(model, "outputs", None) or ()))]


def default_signature(model):
    """(fn, input_signature) for `serving_default`: named inputs -> dict of named outputs."""
    import tensorflow as tf
    specs = [tf.TensorSpec([None, *t.shape[1:]], t.dtype, name=name)
             for t, name in zip(model.inputs, input_names(model))]
    outs = output_names(model)

    def serve(*inputs):
        result = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
        if isinstance(result, dict):
            return result
        results = result if isinstance(result, (list, tuple)) else [result]
        return {name: tensor for name, tensor in zip(outs, results)}

    return serve, specs


RAW_SIGNATURE = "serving_raw"


def takes_images(model, config=None):
    """Whether `model` gets a `serving_raw` endpoint: one (batch, H, W, C) image input."""
    inputs = getattr(model, "inputs", None) or ()
    return (len(inputs) == 1 and len(inputs[0].shape) == 4
            and (config is None or config.input_kind == "image"))


def raw_image_signature(model):
    """(fn, input_signature) for `serving_raw`: decoded uint8 images of any size.

    The training pipeline's own preparation (`zoo.data.pipeline`), inside
    the SavedModel: pixels / 255, a bilinear resize to the model's height and
    width when they differ, a gray channel repeated to the model's channels.
    Any preprocessing a backbone expects (caffe, tf, torch modes) is already
    a layer of the model, so a client sends raw pixels and nothing else.
    """
    import tensorflow as tf
    height, width, channels = model.inputs[0].shape[1:]
    outs = output_names(model)

    def serve(images):
        x = tf.cast(images, tf.float32) / 255.0
        size = tf.shape(x)[1:3]
        x = tf.cond(tf.reduce_all(tf.equal(size, [height, width])), lambda: x,
                    lambda: tf.image.resize(x, (height, width)))
        if channels != 1:
            x = tf.cond(tf.equal(tf.shape(x)[-1], 1),
                        lambda: tf.tile(x, [1, 1, 1, channels]), lambda: x)
        x = tf.ensure_shape(x, [None, height, width, channels])
        result = model(x, training=False)
        results = result if isinstance(result, (list, tuple)) else [result]
        return {name: tensor for name, tensor in zip(outs, results)}

    return serve, [tf.TensorSpec([None, None, None, None], tf.uint8, name="images")]


def export_saved_model(model, path, *, signatures=None, overwrite=False):
    """Write `model` as a SavedModel at `path`, atomically.

    Args:
        model: a built Keras model.
        path: target directory; refused if it exists unless `overwrite`.
        signatures: extra endpoints {name: (fn, input_signature)}; a
            "serving_default" entry replaces the default one. Defaults to None.
        overwrite: replace an existing export. Defaults to False.

    Returns:
        `path`.
    """
    from keras.export import ExportArchive

    path = os.path.abspath(path)
    _check_target(path, overwrite)
    endpoints = dict(signatures or {})
    if "serving_default" not in endpoints and getattr(model, "inputs", None):
        endpoints = {"serving_default": default_signature(model), **endpoints}
    if not endpoints:
        raise ValueError("The model has no symbolic inputs; pass signatures={name: (fn, "
                         "input_signature)}.")
    archive = ExportArchive()
    archive.track(model)
    for name, (fn, input_signature) in endpoints.items():
        archive.add_endpoint(name, fn, input_signature=input_signature)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=".partial-", dir=parent)
    try:
        archive.write_out(temporary, verbose=False)
        _replace_folder(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return path


def export_keras(model, path, *, overwrite=False):
    """Write a `.keras` archive atomically."""
    if not str(path).endswith(".keras"):
        raise ValueError(f"A Keras archive path must end with '.keras'. Received: path={path!r}")
    _check_target(path, overwrite)
    return runs.save_model(model, os.path.abspath(path))  # creates e.g. run_dir/export/


def litert_available():
    """Whether LiteRT's interpreter (`ai_edge_litert`, the `[litert]` extra) can be imported."""
    import importlib.util
    try:
        return all(importlib.util.find_spec(name) is not None
                   for name in ("ai_edge_litert", "ai_edge_litert.interpreter"))
    except (ImportError, ValueError):  # ValueError: None in sys.modules (import blocked)
        return False


def tflite_flatbuffer(saved_model_dir, *, quantize=None, representative=None):
    """Convert a SavedModel's `serving_default` to a TFLite flatbuffer.

    Only `serving_default` is converted: LiteRT's interpreter has no
    TensorFlow (Flex) kernels, and `serving_raw`'s resize-if-needed needs one.

    Args:
        saved_model_dir: the SavedModel.
        quantize: None (float32), "dynamic" (int8 weights), "float16" (float16
            weights) or "int8" (full-integer: weights and activations).
        representative: for "int8", an array of single inputs to calibrate
            activation ranges on (drawn from the training split).

    Returns:
        (flatbuffer bytes, kernels) with kernels "float32", "dynamic",
        "float16", "int8" or "int8+float" (an op without an int8 kernel runs
        in float between quantize/dequantize ops).
    """
    import tensorflow as tf

    from zoo import startup

    def convert(int8_only):
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model_dir, signature_keys=[TFLITE_SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                               tf.lite.OpsSet.SELECT_TF_OPS]
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantize == "int8":
            # Inputs and outputs stay float32 (same feeds as the float model);
            # everything between is int8 where TFLite has the kernel.
            converter.representative_dataset = lambda: (
                [np.asarray(x, "float32")[None]] for x in representative)
            if int8_only:
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        with startup.filtered_stderr():  # the quantizer prints its settings to fd 2
            return converter.convert()

    if quantize != "int8":
        return convert(False), quantize or "float32"
    try:
        return convert(True), "int8"
    except Exception:  # the converter's ConverterError: an op has no int8 kernel
        return convert(False), "int8+float"


def export_tflite(saved_model_dir, path, *, overwrite=False, quantize=None, representative=None):
    """Convert a SavedModel to a `.tflite` flatbuffer at `path` (see `tflite_flatbuffer`).

    Returns:
        (path, kernels).
    """
    _check_target(path, overwrite)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    flatbuffer, kernels = tflite_flatbuffer(saved_model_dir, quantize=quantize,
                                            representative=representative)

    def write(temporary):
        with open(temporary, "wb") as file:
            file.write(flatbuffer)
    return zio.atomic_write(path, write), kernels


def export_onnx(saved_model_dir, path, *, overwrite=False, opset=ONNX_OPSET):
    """Convert a SavedModel's `serving_default` to ONNX with tf2onnx (the `[onnx]` extra).

    tf2onnx's command line is its documented entry point for SavedModels;
    it runs in its own process, and the file is moved into place only once
    complete.
    """
    import importlib.util
    if importlib.util.find_spec("tf2onnx") is None:
        raise ValueError("format='onnx' needs tf2onnx and onnxruntime: "
                         "pip install 'zoo-keras[onnx]'. Received: format='onnx'")
    _check_target(path, overwrite)
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)

    def convert(temporary):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        result = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model",
                                 os.path.abspath(saved_model_dir), "--output", temporary,
                                 "--opset", str(opset), "--signature_def", "serving_default"],
                                capture_output=True, text=True, env=env)
        if result.returncode != 0 or not os.path.exists(temporary):
            raise ExportVerificationError(f"tf2onnx could not convert {saved_model_dir}:\n"
                                          f"{result.stderr[-3000:]}")
    return zio.atomic_write(path, convert, suffix=".onnx")


# Runs in a fresh interpreter, as a serving process would: SavedModels with
# TensorFlow alone, TFLite files with LiteRT's interpreter, ONNX files
# with onnxruntime alone; it refuses to run if this package got imported.
# One process serves a whole list of jobs (each runtime starts once).
_VERIFY_SCRIPT = r"""
import json, sys, warnings
import numpy as np
warnings.simplefilter("ignore")
with open(sys.argv[1]) as f:
    jobs = json.load(f)
for job in jobs:
    with np.load(job["inputs"], allow_pickle=False) as f:
        feeds = {k: f[k] for k in f.files}
    if job["kind"] == "saved_model":
        import tensorflow as tf
        fn = tf.saved_model.load(job["path"]).signatures[job["signature"]]
        outputs = {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in feeds.items()}).items()}
    elif job["kind"] == "tflite":
        from ai_edge_litert.interpreter import Interpreter
        runner = Interpreter(model_path=job["path"]).get_signature_runner(job["signature"])
        count = len(next(iter(feeds.values())))
        parts = [runner(**{k: v[start:start + 256] for k, v in feeds.items()})
                 for start in range(0, count, 256)]
        outputs = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
    else:
        import onnxruntime
        session = onnxruntime.InferenceSession(job["path"], providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        wanted = {i.name: feeds[i.name.split(":")[0]] for i in session.get_inputs()}
        outputs = dict(zip([n.split(":")[0] for n in names], session.run(names, wanted)))
    np.savez(job["outputs"], **{k: np.asarray(v) for k, v in outputs.items()})
assert "zoo" not in sys.modules, "the serving process imported zoo"
"""


def run_saved_models_fresh(jobs, kind="saved_model"):
    """Outputs of exported models computed in ONE fresh process without this package.

    Args:
        jobs: list of (path, feeds dict, signature name).
        kind: "saved_model", "tflite" or "onnx". Defaults to "saved_model".

    Returns:
        A list of {output name: array}, one per job.
    """
    with tempfile.TemporaryDirectory() as folder:
        manifest = []
        for index, (path, feeds, signature) in enumerate(jobs):
            inputs_file = os.path.join(folder, f"inputs_{index}.npz")
            np.savez(inputs_file, **feeds)
            manifest.append({"path": os.path.abspath(path), "inputs": inputs_file,
                             "outputs": os.path.join(folder, f"outputs_{index}.npz"),
                             "signature": signature, "kind": kind})
        manifest_file = os.path.join(folder, "jobs.json")
        with open(manifest_file, "w") as file:
            json.dump(manifest, file)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        result = subprocess.run([sys.executable, "-c", _VERIFY_SCRIPT, manifest_file],
                                capture_output=True, text=True, env=env, cwd=folder)
        if result.returncode != 0:
            paths = ", ".join(job["path"] for job in manifest)
            raise ExportVerificationError(f"Loading {paths} in a fresh process failed:\n"
                                          f"{result.stderr[-3000:]}")
        results = []
        for job in manifest:
            with np.load(job["outputs"]) as outputs:
                results.append({name: outputs[name] for name in outputs.files})
        return results


def run_saved_model_fresh(path, feeds, signature="serving_default"):
    """Outputs of a SavedModel signature computed in a fresh TensorFlow-only process."""
    return run_saved_models_fresh([(path, feeds, signature)])[0]


def _expected_and_feeds(model, inputs):
    names = input_names(model)
    arrays = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    feeds = {name: np.asarray(a) for name, a in zip(names, arrays)}
    expected = model(list(arrays) if len(arrays) > 1 else arrays[0], training=False)
    if not isinstance(expected, dict):
        expected = expected if isinstance(expected, (list, tuple)) else [expected]
        expected = dict(zip(output_names(model), expected))
    return {k: np.asarray(v) for k, v in expected.items()}, feeds


def _max_diff(path, expected, served, atol):
    worst = 0.0
    for key, value in expected.items():
        if key not in served:
            raise ExportVerificationError(f"Output {key!r} missing from the SavedModel {path} "
                                          f"(has {sorted(served)}).")
        # float32: a bfloat16 output (mixed_bfloat16) has no numpy arithmetic.
        diff = np.asarray(value).astype("float32") - np.asarray(served[key]).astype("float32")
        worst = max(worst, float(np.max(np.abs(diff))))
    if worst > atol:
        raise ExportVerificationError(f"SavedModel {path} outputs differ from Keras by "
                                      f"{worst:.3g} (allowed {atol}).")
    return worst


def as_raw_pixels(inputs):
    """Images in [0, 1] (as the pipeline gives them) as the uint8 pixels they came from."""
    return np.clip(np.round(np.asarray(inputs, dtype="float64") * 255.0), 0, 255).astype("uint8")


def verify_saved_models(items, *, atol=1e-5, kind="saved_model"):
    """`verify_saved_model` for many (path, model, inputs[, signature]) items in one fresh process.

    Args:
        items: list of (exported path, Keras model, inputs) or (..., signature);
            for `serving_raw` the inputs are [0, 1] images, sent as uint8
            pixels and compared with the model on those pixels / 255.
        atol: largest allowed absolute difference. Defaults to 1e-5.
        kind: "saved_model", "tflite" or "onnx". Defaults to "saved_model".

    Returns:
        The largest absolute difference of each item.
    """
    prepared = []
    for path, model, inputs, *rest in items:
        signature = rest[0] if rest else "serving_default"
        if signature == RAW_SIGNATURE:
            pixels = as_raw_pixels(inputs)
            expected, _ = _expected_and_feeds(model, (pixels / 255.0).astype("float32"))
            feeds = {"images": pixels}
        else:
            expected, feeds = _expected_and_feeds(model, inputs)
        prepared.append((path, expected, feeds, signature))
    served = run_saved_models_fresh([(path, feeds, signature)
                                     for path, _, feeds, signature in prepared], kind=kind)
    return [_max_diff(path, expected, outputs, atol)
            for (path, expected, _, _), outputs in zip(prepared, served)]


def verify_saved_model(path, model, inputs, *, atol=1e-5):
    """Compare a SavedModel's `serving_default` (fresh process) with `model` on `inputs`.

    Returns:
        The largest absolute difference; raises `ExportVerificationError` above `atol`.
    """
    return verify_saved_models([(path, model, inputs)], atol=atol)[0]


def package_versions():
    from importlib import metadata
    versions = {}
    for name in ("tensorflow", "tensorflow-cpu", "keras", "keras-tuner", "numpy",
                 "tensorflow-datasets", "scikit-learn", "ai-edge-litert", "zoo-keras"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    versions["python"] = sys.version.split()[0]
    return versions


def write_model_card(run_dir, model, config, metrics, exports):
    spec = runs.spec_of(config)
    card = {
        "name": config.model,
        "registered": config.registered,
        "base_model": config.base_model,
        "spec": spec.to_dict(),
        "parameters": int(model.count_params()),
        "inputs": [{"name": n, "shape": [None, *t.shape[1:]], "dtype": str(t.dtype)}
                   for n, t in zip(input_names(model), getattr(model, "inputs", None) or ())],
        "outputs": output_names(model),
        "class_names": config.class_names,
        "data": config.data,
        # Provenance a fine-tuning run records (backbone source, weights sha256).
        **{k: v for k, v in config.extra.items() if k in ("backbone", "weights")},
        "test_metrics": {k: v for k, v in metrics.items() if k.startswith("test_")},
        "metrics": metrics,
        "exports": exports,
        "versions": package_versions(),
    }
    zio.write_json(os.path.join(run_dir, runs.CARD_FILE), card)
    return card


@runs.holding_run_dir
def export_run(run_dir, formats=("saved_model",), *, model=None, bundle=None, hooks=None,
               out=None, overwrite=False, verify=True, metrics=None, quantize=None):
    """Export a finished run: artifacts, verification and model_card.json.

    Args:
        run_dir: the run directory.
        formats: any of "saved_model", "keras", "tflite", "onnx" (every one but
            "keras" verified against the Keras model in a fresh process).
            Defaults to ("saved_model",).
        model: the trained model (loaded from model.keras when None).
        bundle: its `DataBundle`, to take sample inputs from (otherwise the
            run's export_inputs.npz). Defaults to None.
        hooks: the run's task hooks (resolved from config.json when None).
        metrics: the run's metrics for the model card (read from metrics.json
            when None; training passes them before it writes that file).
        out: target for a single format (default: inside `run_dir`). Defaults to None.
        overwrite: replace existing exports. Defaults to False.
        verify: check the SavedModel in a fresh process. Defaults to True.
        quantize: with "tflite", one of "dynamic", "float16", "int8": a
            quantized TFLite model (default target export/model_MODE.tflite)
            instead of the float one, scored in the LiteRT interpreter on the
            run's test split beside the float model ("int8" is calibrated on
            up to 200 training examples). Defaults to None.

    Returns:
        {format: {"path", ...}} ("max_abs_diff" when verified); a quantized
        TFLite model's entry is "tflite_MODE".
    """
    from zoo.tasks import get_hooks

    run_dir = os.path.abspath(run_dir)
    formats = tuple(formats)
    quantize = _check_quantize(quantize, formats)
    if "tflite" in formats and (verify or quantize) and not litert_available():
        raise ValueError(f"format='tflite' {LITERT_MISSING} (or export unverified with "
                         f"verify=False, --no-verify). Received: format='tflite'"
                         if not quantize else
                         f"quantize={quantize!r} {LITERT_MISSING}. Received: "
                         f"quantize={quantize!r}")
    targets = _export_targets(run_dir, formats, out=out, overwrite=overwrite, quantize=quantize)
    if model is None:
        config, model = runs.load_run(run_dir)
    else:
        config = runs.read_config(run_dir)
    metrics_path = os.path.join(run_dir, runs.METRICS_FILE)
    if metrics is None:
        metrics = runs.read_json(metrics_path) if os.path.exists(metrics_path) else {}
    samples = _sample_inputs(run_dir, model, bundle)
    if (verify and samples is None and bundle is None and set(formats) & {
            "saved_model", "tflite", "onnx"} and len(getattr(model, "inputs", None) or ()) == 1):
        raise ValueError(f"The export cannot be verified: the run has no {SAMPLE_FILE} (inputs "
                         f"to compare outputs on); pass verify=False (--no-verify) to export "
                         f"it unverified. Received: run_dir={run_dir!r}")

    exports = {}
    card_path = os.path.join(run_dir, runs.CARD_FILE)
    if os.path.exists(card_path):
        exports = runs.read_json(card_path).get("exports", {})
    if set(formats) & {"saved_model", "tflite", "onnx"}:
        serving = float32_model(model)
        signatures = (hooks or get_hooks(runs.spec_of(config))).export_signatures(serving)
        scoring = _quantize_data(run_dir, config, serving, bundle) if quantize else None
        exports.update(_export_serving(serving, config, formats, targets, signatures=signatures,
                                       samples=samples if verify else None,
                                       overwrite=overwrite, quantize=quantize, scoring=scoring))
    if "keras" in formats:
        exports["keras"] = {"path": export_keras(model, targets["keras"], overwrite=overwrite)}
    write_model_card(run_dir, model, config, metrics, exports)
    # What an export killed mid-way left behind (the run directory is locked
    # while training, and an export replaces its target only once complete).
    for name in os.listdir(run_dir):
        if name.startswith(".partial-"):
            shutil.rmtree(os.path.join(run_dir, name), ignore_errors=True)
    return exports


def float32_model(model):
    """`model` computing in float32 where it trained in bfloat16 (same weights), else itself.

    bfloat16 is a training speed-up of CPUs with AMX (`zoo.training.CPU_BFLOAT16_FAMILIES`);
    what serves the model (LiteRT, ONNX Runtime, TensorFlow on a CPU without
    AMX) has float32 kernels, so the serving formats get a float32 copy.  Its
    weights are the trained ones (mixed-precision variables are float32).
    """
    layers = getattr(model, "layers", None) or ()
    if not any(getattr(getattr(layer, "dtype_policy", None), "compute_dtype", None)
               == "bfloat16" for layer in layers):
        return model
    import keras

    def clone(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    try:
        copy = keras.models.clone_model(model, clone_function=clone)
    except ValueError:  # a subclassed model cannot be cloned: served as it trained
        return model
    copy.set_weights(model.get_weights())
    return copy


def _check_quantize(quantize, formats):
    """`quantize` checked: None or a mode of QUANTIZE_MODES, with the tflite format only."""
    if quantize is None:
        return None
    checks.choice("quantize", quantize, QUANTIZE_MODES)
    if "tflite" not in formats:
        raise ValueError(f"quantize= applies to the TFLite export; add format 'tflite' "
                         f"(--format tflite). Received: quantize={quantize!r}, "
                         f"formats={formats!r}")
    return quantize


def _export_targets(run_dir, formats, *, out, overwrite, quantize=None):
    """{format: path} of each export, once the formats are valid and no target is in the way."""
    if not formats:
        raise ValueError("formats must name at least one format. Received: formats=()")
    for fmt in formats:
        checks.choice("format", fmt, FORMATS)
    if out is not None and len(formats) != 1:
        raise ValueError(f"out= needs exactly one format. Received: formats={formats!r}")
    targets = {"saved_model": os.path.join(run_dir, "saved_model"),
               "keras": os.path.join(run_dir, "export", "model.keras"),
               "tflite": os.path.join(run_dir, *(
                   ("export", f"model_{quantize}.tflite") if quantize else ("model.tflite",))),
               "onnx": os.path.join(run_dir, "model.onnx")}
    if out is not None:
        targets[formats[0]] = os.path.abspath(out)
    for fmt in formats:
        _check_target(targets[fmt], overwrite, run_dir=run_dir,
                      argument="out" if out is not None else "path")
    return targets


def _sample_inputs(run_dir, model, bundle):
    """Inputs to verify exports on: taken from `bundle` (and saved), else the run's saved ones."""
    sample_path = os.path.join(run_dir, SAMPLE_FILE)
    if bundle is not None and len(getattr(model, "inputs", None) or ()) == 1:
        samples = bundle.take_inputs("test", 8)
        zio.atomic_write(sample_path, lambda temporary: np.savez(temporary, inputs=samples),
                         suffix=".npz")
        return samples
    if os.path.lexists(sample_path):
        try:
            with zio.open_regular(sample_path, "rb") as f, np.load(f, allow_pickle=False) as saved:
                return saved["inputs"]
        except Exception as err:  # a damaged npz raises zipfile, numpy, OS and key errors
            raise ValueError(f"File is damaged ({type(err).__name__}: {str(err)[:200]}): "
                             f"{sample_path}") from None
    return None


def _export_serving(model, config, formats, targets, *, signatures, samples, overwrite,
                    quantize=None, scoring=None):
    """The SavedModel and the formats converted from it, each verified on `samples` if given.

    Returns:
        {format: {"path", ...}} for the requested ones of "saved_model", "tflite", "onnx"
        ("tflite_MODE" for a quantized TFLite model: see `_export_quantized`).
    """
    exports = {}
    raw = not signatures and takes_images(model, config)
    saved = targets["saved_model"]
    scratch = None
    try:
        if "saved_model" in formats or not os.path.isdir(saved):
            if "saved_model" not in formats:  # a converter's input only
                scratch = tempfile.mkdtemp(prefix="zoo-saved-model-")
                saved = os.path.join(scratch, "saved_model")
            export_saved_model(model, saved, overwrite=True, signatures=(
                {RAW_SIGNATURE: raw_image_signature(model)} if raw else signatures))
        entry = {"path": saved, "signatures": ["serving_default", *(
            name for name in (signatures or {}) if name != "serving_default")]}
        if raw:
            entry["signatures"].append(RAW_SIGNATURE)
        checkable = samples is not None and (not signatures or
                                             "serving_default" not in signatures)
        # A SavedModel that is only a converter's input is not checked itself
        # (a fresh TensorFlow process): the converted file is, against Keras.
        if checkable and "saved_model" in formats:
            diffs = verify_saved_models([(saved, model, samples)] + (
                [(saved, model, samples, RAW_SIGNATURE)] if raw else []))
            entry["max_abs_diff"] = diffs[0]
            if raw:
                entry["raw_max_abs_diff"] = diffs[1]
        if "saved_model" in formats:
            exports["saved_model"] = entry
        if "tflite" in formats and quantize:
            exports[f"tflite_{quantize}"] = _export_quantized(
                saved, targets["tflite"], model, config, quantize, scoring,
                samples=samples if checkable else None, overwrite=overwrite)
        for fmt, convert in (("tflite", export_tflite), ("onnx", export_onnx)):
            if fmt in formats and not (fmt == "tflite" and quantize):
                path = convert(saved, targets[fmt], overwrite=overwrite)
                exports[fmt] = {"path": path[0] if fmt == "tflite" else path}
                if checkable:
                    exports[fmt]["max_abs_diff"] = verify_saved_models(
                        [(exports[fmt]["path"], model, samples)], kind=fmt)[0]
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return exports


def _split_examples(bundle, split, n):
    """Up to `n` (inputs, labels) of a split as the model receives them, in split order.

    From the bundle's unbatched, unaugmented `examples` pipelines where it has
    them, else from its batched pipeline; labels are None for unlabeled data.
    """
    xs, ys = [], []
    if split in bundle.examples:
        for item in bundle.examples[split].take(n):
            item = item if isinstance(item, tuple) else (item,)
            xs.append(np.asarray(item[0])[None])
            if len(item) > 1:
                ys.append(np.asarray(item[1])[None])
    else:
        for batch in getattr(bundle, split):
            batch = batch if isinstance(batch, tuple) else (batch,)
            xs.append(np.asarray(batch[0]))
            if len(batch) > 1:
                ys.append(np.asarray(batch[1]))
            if sum(len(x) for x in xs) >= n:
                break
    if not xs:
        raise ValueError(f"The run's {split} split is empty: a quantized model cannot be "
                         f"{'calibrated' if split == 'train' else 'scored'} on it.")
    x = np.concatenate(xs)[:n]
    y = np.concatenate(ys)[:n] if len(ys) == len(xs) else None
    return x, y


def _quantize_data(run_dir, config, model, bundle=None):
    """Calibration inputs (training split) and scoring examples (test split) of the run.

    The run's data is loaded as `zoo evaluate` loads it (same source, seed,
    input shape, classes and options), unless training passes its `bundle`.
    """
    if len(getattr(model, "inputs", None) or ()) != 1:
        raise ValueError(f"quantize= needs a model with one input. Received: a model with "
                         f"{len(getattr(model, 'inputs', None) or ())} inputs in "
                         f"run_dir={run_dir!r}")
    if bundle is None:
        from zoo.tasks import get_hooks, load_data
        if config.data == "<arrays>":
            raise ValueError(f"This run was trained on in-memory arrays; a quantized export "
                             f"needs its data to calibrate and score on. Received: "
                             f"run_dir={run_dir!r}")
        spec = runs.spec_of(config)
        bundle = load_data(spec, config.data, hooks=get_hooks(spec),
                           batch_size=config.recipe.get("batch_size", 32), seed=config.seed,
                           input_shape=tuple(config.input_shape), classes=config.classes,
                           options=config.data_options,
                           one_hot=config.loss == "categorical_crossentropy")
    representative, _ = _split_examples(bundle, "train", REPRESENTATIVE_EXAMPLES)
    x_test, y_test = _split_examples(bundle, "test", QUANTIZED_TEST_EXAMPLES)
    return {"representative": representative, "x": x_test, "y": y_test}


def _score(outputs, y, task):
    """(metric name, value) of a model's test outputs: accuracy for a classifier, else MAE."""
    if y is None:
        return None, None
    outputs = np.asarray(outputs)
    if task == "classification":
        labels = y.argmax(-1) if y.ndim > 1 and y.shape[-1] > 1 else y.reshape(len(y))
        predicted = (outputs.argmax(-1) if outputs.shape[-1] > 1
                     else (outputs.reshape(len(outputs)) > 0.5).astype(int))
        return "accuracy", float(np.mean(predicted == labels))
    if np.size(y) == np.size(outputs):
        return "mae", float(np.mean(np.abs(outputs - np.reshape(y, outputs.shape))))
    return None, None


def _export_quantized(saved, path, model, config, mode, scoring, *, samples, overwrite):
    """A quantized TFLite model at `path`, scored beside the float one in LiteRT.

    Both flatbuffers run in one fresh LiteRT process on the run's test split
    (at most QUANTIZED_TEST_EXAMPLES); the float one is also checked against
    Keras on `samples` (as the plain TFLite export is). An accuracy drop of
    more than ACCURACY_DROP_WARNING prints one warning line.

    Returns:
        The card entry: path, mode, kernels, sizes, the test metric of both models.
    """
    float_flatbuffer, _ = tflite_flatbuffer(saved)
    path, kernels = export_tflite(saved, path, overwrite=overwrite, quantize=mode,
                                  representative=scoring["representative"])
    name = input_names(model)[0]
    with tempfile.TemporaryDirectory(prefix="zoo-tflite-") as folder:
        float_path = os.path.join(folder, "float32.tflite")
        with open(float_path, "wb") as file:
            file.write(float_flatbuffer)
        jobs = [(float_path, {name: scoring["x"]}, TFLITE_SIGNATURE),
                (path, {name: scoring["x"]}, TFLITE_SIGNATURE)]
        if samples is not None:
            expected, feeds = _expected_and_feeds(model, samples)
            jobs.append((float_path, feeds, TFLITE_SIGNATURE))
        served = run_saved_models_fresh(jobs, kind="tflite")
    float_diff = _max_diff(path, expected, served[2], 1e-5) if samples is not None else None
    output = output_names(model)[0]
    float_out, quant_out = served[0][output], served[1][output]
    metric, float_value = _score(float_out, scoring["y"], config.task)
    _, quant_value = _score(quant_out, scoring["y"], config.task)
    entry = {"path": path, "mode": mode, "kernels": kernels,
             "size_bytes": os.path.getsize(path), "float_size_bytes": len(float_flatbuffer),
             "size_ratio": round(os.path.getsize(path) / len(float_flatbuffer), 4),
             "test_examples": int(len(scoring["x"])),
             "max_abs_diff_vs_float": float(np.max(np.abs(quant_out - float_out))),
             "runtime": "ai_edge_litert"}
    if float_diff is not None:
        entry["float_max_abs_diff"] = float_diff  # the float conversion against Keras
    if mode == "int8":
        entry["representative_examples"] = int(len(scoring["representative"]))
    if metric:
        entry.update({"metric": metric, f"test_{metric}": quant_value,
                      f"float_test_{metric}": float_value})
    if metric == "accuracy":
        drop = float_value - quant_value
        entry["accuracy_drop"] = drop
        if drop > ACCURACY_DROP_WARNING:
            entry["warning"] = (f"{mode} quantization costs {100 * drop:.1f} points of test "
                                f"accuracy ({float_value:.4f} float32 -> {quant_value:.4f}); "
                                f"--quantize dynamic or float16 keeps more")
            print(f"zoo export: warning: {entry['warning']}", file=sys.stderr)
    return entry
