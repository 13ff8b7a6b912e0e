"""SavedModel / .keras / TFLite export, fresh-process verification, model card."""

import json
import os
import sys

import numpy as np
import pytest

from zoo import export


def test_training_exports_a_verified_saved_model(digits_lenet_run):
    run_dir = digits_lenet_run.run_dir
    card = json.load(open(os.path.join(run_dir, "model_card.json")))
    assert card["name"] == "lenet5"
    assert card["parameters"] == 61_706
    assert card["inputs"] == [{"name": "inputs", "shape": [None, 32, 32, 1], "dtype": "float32"}]
    assert card["outputs"] == ["predictions"]
    assert card["class_names"] == [str(i) for i in range(10)]
    assert "test_accuracy" in card["test_metrics"]
    assert {"tensorflow-cpu", "keras", "python"} <= set(card["versions"]) or \
        {"tensorflow", "keras", "python"} <= set(card["versions"])
    saved = card["exports"]["saved_model"]
    assert saved["path"] == os.path.join(run_dir, "saved_model")
    assert saved["max_abs_diff"] <= 1e-5


def test_fresh_process_reproduces_predictions(digits_lenet_run):
    run_dir = digits_lenet_run.run_dir
    x = digits_lenet_run.bundle.take_inputs("test", 5)
    served = export.run_saved_model_fresh(os.path.join(run_dir, "saved_model"), {"inputs": x})
    expected = digits_lenet_run.model.predict(x, verbose=0)
    np.testing.assert_allclose(served["predictions"], expected, atol=1e-5)


def test_raw_pixels_of_any_size_serve_like_the_training_pipeline(digits_lenet_run):
    """`serving_raw` takes decoded uint8 images (8x8 here; lenet5 sees 32x32) and does the
    pipeline's scaling and resize itself: equal to the Keras model on pipeline-made inputs."""
    from zoo import data as zdata
    run_dir = digits_lenet_run.run_dir
    saved = json.load(open(os.path.join(run_dir, "model_card.json")))["exports"]["saved_model"]
    assert export.RAW_SIGNATURE in saved["signatures"] and saved["raw_max_abs_diff"] <= 1e-5
    pixels = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1)).astype("uint8")
    served = export.run_saved_model_fresh(os.path.join(run_dir, "saved_model"),
                                          {"images": pixels}, export.RAW_SIGNATURE)
    pipeline = zdata.pipeline(pixels, None, batch_size=5, input_shape=(32, 32, 1))
    expected = digits_lenet_run.model.predict(pipeline, verbose=0)
    np.testing.assert_allclose(served["predictions"], expected, atol=1e-5)


def test_existing_export_target_is_refused_and_kept(digits_lenet_run, tmp_path):
    run_dir = digits_lenet_run.run_dir
    marker = os.path.join(run_dir, "saved_model", "saved_model.pb")
    stamp = os.path.getmtime(marker)
    with pytest.raises(ValueError, match="Export target already exists"):
        export.export_run(run_dir)
    assert os.path.getmtime(marker) == stamp
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="already exists"):
        export.export_saved_model(digits_lenet_run.model, target)
    assert (target / "keep.txt").exists()


def test_keras_and_tflite_formats(digits_lenet_run, tmp_path):
    import keras
    from ai_edge_litert.interpreter import Interpreter

    run_dir = digits_lenet_run.run_dir
    path = export.export_run(run_dir, formats=("keras",), out=str(tmp_path / "m.keras"))
    reloaded = keras.saving.load_model(path["keras"]["path"])
    x = digits_lenet_run.bundle.take_inputs("test", 3)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0),
                               digits_lenet_run.model.predict(x, verbose=0), atol=1e-6)

    out = export.export_run(run_dir, formats=("tflite",), out=str(tmp_path / "m.tflite"))
    interpreter = Interpreter(model_path=out["tflite"]["path"])
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, digits_lenet_run.model.predict(x, verbose=0), atol=1e-4)
    # The export itself verified the file in a fresh process and recorded it.
    assert out["tflite"]["max_abs_diff"] <= 1e-5
    card = json.loads(open(os.path.join(run_dir, "model_card.json")).read())
    assert card["exports"]["tflite"]["max_abs_diff"] == out["tflite"]["max_abs_diff"]


def test_onnx_export_is_verified_with_onnxruntime(digits_lenet_run, tmp_path):
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    out = export.export_run(digits_lenet_run.run_dir, formats=("onnx",),
                            out=str(tmp_path / "m.onnx"))
    assert out["onnx"]["max_abs_diff"] <= 1e-5
    import onnxruntime
    session = onnxruntime.InferenceSession(out["onnx"]["path"],
                                           providers=["CPUExecutionProvider"])
    x = digits_lenet_run.bundle.take_inputs("test", 3)
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(got, digits_lenet_run.model.predict(x, verbose=0), atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"formats": ("pmml",)}, "format must be one of"),
    ({"formats": ()}, "at least one format"),
    ({"formats": ("keras", "tflite"), "out": "x"}, "exactly one format"),
])
def test_export_bad_arguments(digits_lenet_run, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export.export_run(digits_lenet_run.run_dir, **kwargs)


def test_export_of_a_directory_without_a_run(tmp_path):
    with pytest.raises(ValueError, match="no finished run"):
        export.export_run(str(tmp_path))


def test_verification_detects_a_mismatch(digits_lenet_run):
    import keras
    other = keras.models.clone_model(digits_lenet_run.model)  # fresh random weights
    x = digits_lenet_run.bundle.take_inputs("test", 4)
    with pytest.raises(export.ExportVerificationError, match="differ from Keras"):
        export.verify_saved_model(os.path.join(digits_lenet_run.run_dir, "saved_model"), other, x)


def _litert_outputs(path, x):
    from ai_edge_litert.interpreter import Interpreter
    runner = Interpreter(model_path=path).get_signature_runner("serving_default")
    return runner(inputs=x)["predictions"]


@pytest.mark.parametrize("mode, largest_ratio", [("dynamic", 0.35), ("float16", 0.6),
                                                 ("int8", 0.35)])
def test_quantized_tflite_is_scored_against_float_in_litert(digits_lenet_run, tmp_path, mode,
                                                            largest_ratio, monkeypatch, capsys):
    result = digits_lenet_run
    run_dir = result.run_dir
    # int8 loads the run's data as `zoo evaluate` does; the others take the bundle.
    bundle = None if mode == "int8" else result.bundle
    monkeypatch.setattr(export, "ACCURACY_DROP_WARNING", -1.0)  # any score warns
    out = export.export_run(run_dir, formats=("tflite",), quantize=mode, bundle=bundle,
                            out=str(tmp_path / f"m_{mode}.tflite"))
    entry = out[f"tflite_{mode}"]
    assert "tflite" not in out or out["tflite"]["path"] != entry["path"]
    assert entry["mode"] == mode and entry["runtime"] == "ai_edge_litert"
    assert entry["kernels"] == mode  # lenet5 has an int8 kernel for every op
    assert entry["size_bytes"] == os.path.getsize(tmp_path / f"m_{mode}.tflite")
    assert entry["size_ratio"] == pytest.approx(entry["size_bytes"] / entry["float_size_bytes"],
                                                abs=1e-4)
    assert entry["size_ratio"] <= largest_ratio
    assert entry["metric"] == "accuracy" and entry["test_examples"] == len(
        result.bundle.splits.y_test)
    # The float32 flatbuffer scores what Keras scored; the quantized one is close.
    assert entry["float_test_accuracy"] == pytest.approx(result.metrics["test_accuracy"],
                                                         abs=0.01)
    assert abs(entry["test_accuracy"] - entry["float_test_accuracy"]) <= 0.05
    assert entry["accuracy_drop"] == pytest.approx(
        entry["float_test_accuracy"] - entry["test_accuracy"])
    assert entry["float_max_abs_diff"] <= 1e-5
    if mode == "int8":
        assert entry["representative_examples"] == 200
    warning = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warning) == 1 and f"{mode} quantization costs" in warning[0]
    assert entry["warning"] in warning[0]
    card = json.load(open(os.path.join(run_dir, "model_card.json")))
    assert card["exports"][f"tflite_{mode}"] == entry
    assert card["exports"]["saved_model"]["max_abs_diff"] <= 1e-5  # earlier entries kept

    x = result.bundle.take_inputs("test", 16)
    served = _litert_outputs(entry["path"], x)
    expected = result.model.predict(x, verbose=0)
    assert np.max(np.abs(served - expected)) == pytest.approx(0, abs=0.1)
    assert np.mean(served.argmax(-1) == expected.argmax(-1)) >= 0.9
    if mode != "float16":
        assert not np.allclose(served, expected, atol=1e-5)  # it is quantized


@pytest.mark.parametrize("kwargs, message", [
    ({"formats": ("tflite",), "quantize": "int4"}, "quantize must be one of"),
    ({"formats": ("tflite",), "quantize": 8}, "quantize must be one of"),
    ({"formats": ("saved_model",), "quantize": "int8"}, "add format 'tflite'"),
])
def test_bad_quantize_is_refused(digits_lenet_run, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export.export_run(digits_lenet_run.run_dir, **kwargs)


def test_bad_quantize_in_the_cli_is_one_line(digits_lenet_run, capsys):
    from zoo import cli
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", digits_lenet_run.run_dir, "--format", "tflite", "--quantize", "int4"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'int4'" in err


def test_tflite_without_litert_is_one_line_naming_the_extra(digits_lenet_run, tmp_path,
                                                             monkeypatch, capsys):
    from zoo import cli
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # as if not installed
    assert not export.litert_available()
    for quantize in (None, "int8"):
        with pytest.raises(ValueError, match=r"pip install 'zoo-keras\[litert\]'"):
            export.export_run(digits_lenet_run.run_dir, formats=("tflite",), quantize=quantize,
                              out=str(tmp_path / "m.tflite"))
    assert not (tmp_path / "m.tflite").exists()
    assert cli.main(["export", digits_lenet_run.run_dir, "--format", "tflite", "--out",
                     str(tmp_path / "m.tflite")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "zoo-keras[litert]" in err and "--no-verify" in err
