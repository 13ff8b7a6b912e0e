"""Distributed training: mirrored on two logical CPUs, multi-worker with two local processes.

Processes, not epochs, are the expensive part, so the checks share a few:
one subprocess with two logical CPU devices (mirrored == default, batch
semantics, VAE under the custom loop, fine-tuning under mirrored), and one
two-worker cluster started twice (killed, then resumed) that also trains a
small CNN.  Bad inputs are checked in this process, before TensorFlow.

Tolerances (stated, measured on this CPU):
- mirrored vs default strategy, SGD on an unshuffled set whose size the
  global batch divides: final weights within 1e-5 (measured 9e-8; float
  reassociation of the all-reduce only).  With Adam, or with a partial last
  batch (each replica averages its own share), updates legitimately differ.
- custom loop vs `fit` on the same strategy and data: weights equal to 1e-6
  (measured 0.0), histories to 1e-6.
- two workers: weights identical (bitwise); test accuracy of the resumed
  multi-worker run within 0.05 of a single-process run (their shuffling
  orders differ, so agreement is statistical).
- SavedModel vs Keras model outputs: 1e-5.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from zoo import cli, cluster, distribute

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "ZOO_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
       "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


# ----------------------------------------------------------------- bad inputs (no TensorFlow)


def _args(**kw):
    base = dict(workers=None, strategy=None, per_replica_batch=None, scale_lr=False,
                batch_size=None)
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize("kwargs,match", [
    ({"workers": 0}, r"workers must be an integer >= 1. Received: workers=0"),
    ({"workers": -2}, r"Received: workers=-2"),
    ({"workers": 2, "strategy": "mirrored"}, r"workers=2, strategy='mirrored'"),
    ({"per_replica_batch": 16, "batch_size": 64},
     r"either --batch-size .* Received: batch_size=64, per_replica_batch=16"),
])
def test_distribute_options_refuse_bad_flags(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cli.distribute_options(_args(**kwargs))


def test_distribute_flags_parse_and_imply_multi_worker():
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy")
    parser.add_argument("--batch-size", type=int)
    cli.add_distribute_arguments(parser)
    args = parser.parse_args(["--workers", "2", "--per-replica-batch", "16", "--scale-lr"])
    assert cli.distribute_options(args) == {
        "per_replica_batch": 16, "scale_lr": True, "strategy": "multi_worker"}
    assert cli.distribute_options(parser.parse_args([])) == {
        "per_replica_batch": None, "scale_lr": False}
    with pytest.raises(SystemExit):
        parser.parse_args(["--per-replica-batch", "0"])


@pytest.mark.parametrize("text,match", [
    ("not json", r"TF_CONFIG is not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', r"TF_CONFIG has no 'cluster' key"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}}', r"TF_CONFIG has no 'task' key"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker"}}',
     r"'task' has no 'index' key"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"index": 0}}',
     r"'task' has no 'type' key"),
    ('{"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}',
     r"'host:port' addresses. Received: '127.0.0.1'"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
     r"index must be an integer in \[0, 2\)"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
     r"task type 'chief' is not a job of the cluster"),
])
def test_malformed_tf_config_names_the_key(text, match):
    with pytest.raises(ValueError, match=match):
        cluster.parse_tf_config(text)


def test_chief_is_worker_zero_or_the_chief_task(monkeypatch):
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    for index, chief in ((0, True), (1, False)):
        monkeypatch.setenv("TF_CONFIG", json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        assert distribute.is_chief_task("multi_worker") is chief
        assert distribute.is_chief_task("mirrored") is True
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {**cluster, "chief": ["127.0.0.1:3"]}, "task": {"type": "worker", "index": 0}}))
    assert distribute.is_chief_task("multi_worker") is False


def test_port_in_use_and_unreachable_chief_are_named():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        with pytest.raises(ValueError, match=rf"Port {port} of worker 0 .* already in use"):
            cluster.check_port_free(f"127.0.0.1:{port}", what="worker 0")
    finally:
        holder.close()
    cluster.check_port_free(f"127.0.0.1:{port}")  # free again
    with pytest.raises(ValueError, match=rf"Could not reach the chief at 127.0.0.1:{port} "
                                         rf"within 0.5 s"):
        cluster.wait_for_address(f"127.0.0.1:{port}", timeout=0.5)


def test_batch_plan_is_global_and_scales_the_learning_rate():
    plan = distribute.batch_plan(batch_size=64, replicas=2)
    assert (plan["global_batch_size"], plan["per_replica_batch_size"]) == (64, 32)
    with pytest.raises(ValueError, match=r"divisible .* Received: batch_size=33, replicas=2"):
        distribute.batch_plan(batch_size=33, replicas=2)
    plan = distribute.batch_plan(batch_size=32, replicas=4, per_replica_batch=16, scale_lr=True,
                                 learning_rate=0.1)
    assert plan["global_batch_size"] == 64 and plan["learning_rate"] == pytest.approx(0.2)


def test_plan_refuses_bad_distribution_arguments_before_tensorflow():
    from zoo.training import plan
    with pytest.raises(ValueError, match=r"Received: batch_size=64, per_replica_batch=8"):
        plan("mlp", batch_size=64, per_replica_batch=8)
    with pytest.raises(ValueError, match=r"per_replica_batch must be a positive integer"):
        plan("mlp", per_replica_batch=0)
    with pytest.raises(ValueError, match=r"'dcgan' \(family gan\) cannot train under "
                                         r"strategy='multi_worker'.*supports: default, cpu, "
                                         r"one_device"):
        plan("dcgan", strategy="multi_worker")


def test_strategy_errors_come_before_any_server_starts(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match=r"needs a cluster: set TF_CONFIG .* --workers"):
        distribute.get_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}}')
    with pytest.raises(ValueError, match=r"TF_CONFIG has no 'task' key"):
        distribute.get_strategy("multi_worker")
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    try:
        monkeypatch.setenv("TF_CONFIG", json.dumps({
            "cluster": {"worker": [f"127.0.0.1:{port}", "127.0.0.1:1"]},
            "task": {"type": "worker", "index": 0}}))
        with pytest.raises(ValueError, match=rf"Port {port} of worker 0"):
            distribute.get_strategy("multi_worker")
    finally:
        holder.close()
    with pytest.raises(ValueError, match=r"strategy='tpu' but no TPU is reachable"):
        distribute.get_strategy("tpu")


def test_launcher_refuses_bad_worker_counts():
    from zoo.launch import run_local_workers
    with pytest.raises(ValueError, match=r"Received: workers=0"):
        run_local_workers([sys.executable, "-c", "pass"], 0)
    with pytest.raises(TypeError, match=r"command must be a non-empty list"):
        run_local_workers("python", 2)


def test_launcher_stops_the_others_when_one_worker_dies():
    # Worker 0 would sleep for minutes; worker 1 dies at once: no hang, no orphan.
    from zoo.launch import WorkerError, run_local_workers
    script = ("import os, time, json; c = json.loads(os.environ['TF_CONFIG']); "
              "assert c['cluster']['worker'][0].startswith('127.0.0.1:'); "
              "i = int(os.environ['ZOO_LOCAL_WORKER']); print('worker', i, flush=True); "
              "time.sleep(300) if i == 0 else os.kill(os.getpid(), 9)")
    with pytest.raises(WorkerError, match=r"worker 1 of 2 was killed by SIGKILL; stopped the "
                                          r"other workers.*resume"):
        run_local_workers([sys.executable, "-c", script], 2)
    assert run_local_workers([sys.executable, "-c", "pass"], 2) == 0


# ----------------------------------------------------------------- mirrored (one subprocess)

_MIRRORED = textwrap.dedent("""
    import json, sys
    import numpy as np
    from zoo.distribute import configure_cpu_devices, get_strategy
    assert len(configure_cpu_devices(2)) == 2
    from zoo import data as zdata, training
    from zoo.distributed_loop import fit_loop
    out = {}

    def run(strategy, loop, name="mlp", epochs=1, **kw):
        p = training.plan(name, data="digits", epochs=epochs, seed=0, strategy=strategy, **kw)
        s = get_strategy(strategy)
        with s.scope():
            model = training.build_model(p)
        a = p.bundle.arrays
        # Unshuffled, and 1280 = 40 global batches of 32: every replica gets
        # exactly half of every batch.
        data = zdata.pipeline(a.x_train[:1280], a.y_train[:1280], batch_size=32, image=False) \\
            if name == "mlp" else p.bundle.train
        if loop:
            h = fit_loop(model, data, validation_data=p.bundle.validation, epochs=epochs,
                         verbose=0, strategy=s)
        else:
            h = model.fit(data, validation_data=p.bundle.validation, epochs=epochs, verbose=0,
                          shuffle=False)
        return p, [np.asarray(w) for w in model.get_weights()], h.history

    def diff(a, b):
        return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))

    sgd = dict(batch_size=32, optimizer="sgd", learning_rate=0.05)
    _, w_default, h_default = run(None, False, **sgd)
    _, w_loop, h_loop = run(None, True, **sgd)
    _, w_mirrored, h_mirrored = run("mirrored", False, **sgd)
    p, w_mloop, h_mloop = run("mirrored", True, **sgd)
    out["replicas"] = get_strategy("mirrored").num_replicas_in_sync
    out["loop_vs_fit"] = diff(w_default, w_loop)
    out["mirrored_vs_default"] = diff(w_default, w_mirrored)
    out["mirrored_loop_vs_default"] = diff(w_default, w_mloop)
    out["history_keys"] = [sorted(h_default), sorted(h_mloop)]
    out["history_loop_vs_fit"] = max(abs(x - y) for k in h_default
                                     for x, y in zip(h_default[k], h_loop[k]))

    # Batch semantics through the seam, recorded in config.json.
    try:
        training.plan("mlp", data="digits", batch_size=33, strategy="mirrored")
    except ValueError as err:
        out["indivisible"] = str(err)
    # 3 epochs: the recipe's one-cycle rate (3e-3 at 128, halved for 64) spans the
    # run, and one epoch of it (about 20 steps of 64) is too short to learn the digits.
    r = training.train("mlp", data="digits", epochs=3, strategy="mirrored", per_replica_batch=32,
                       scale_lr=True, run_dir=sys.argv[1] + "/per_replica", export=False,
                       verbose=0)
    out["config"] = json.load(open(r.run_dir + "/config.json"))
    out["per_replica_accuracy"] = r.metrics["test_accuracy"]

    # A family with its own train_step (VAE) under the custom loop on two replicas.
    _, _, h_vae = run("mirrored", True, name="dense_vae", epochs=1, batch_size=32,
                      model_kwargs={"input_shape": (8, 8, 1), "latent_dim": 2,
                                    "hidden_units": (16,), "seed": 0})
    out["vae_history"] = h_vae
    # (Fine-tuning under mirrored: tests/test_transfer.py's phase-2 run.)
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.heavy
def test_mirrored_matches_default_and_batches_are_global(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _MIRRORED, str(tmp_path)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert out["replicas"] == 2
    assert out["loop_vs_fit"] <= 1e-6 and out["history_loop_vs_fit"] <= 1e-6
    assert out["mirrored_vs_default"] <= 1e-5, out
    assert out["mirrored_loop_vs_default"] <= 1e-5, out
    assert out["history_keys"][0] == out["history_keys"][1] == \
        ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert "Received: batch_size=33, replicas=2" in out["indivisible"]
    config = out["config"]
    assert (config["global_batch_size"], config["per_replica_batch_size"], config["replicas"]) \
        == (64, 32, 2)
    # mlp's recipe rate is for its own batch (Adam 3e-3 at 128); the linear rule
    # scales it to the global batch of 64.
    import zoo
    recipe = zoo.get_spec("mlp").recipe
    assert recipe.batch_size != 64
    assert config["effective_learning_rate"] == pytest.approx(
        recipe.learning_rate * 64 / recipe.batch_size)
    assert config["lr_reference_batch_size"] == recipe.batch_size and config["scale_lr"] is True
    # The recipe as asked (a resume compares it).
    assert config["recipe"]["batch_size"] == recipe.batch_size
    assert out["per_replica_accuracy"] > 0.5
    vae = out["vae_history"]
    assert {"loss", "kl_loss", "val_loss"} <= set(vae) and np.isfinite(vae["loss"][0])


# ----------------------------------------------------------------- multi-worker (two processes)

_WORKER = textwrap.dedent("""
    import json, os, signal, sys
    import keras
    import numpy as np
    from zoo.training import train

    out, phase = sys.argv[1], sys.argv[2]
    index = int(os.environ["ZOO_LOCAL_WORKER"])

    class KillWorkerOne(keras.callbacks.Callback):
        # Epoch 2 begins only once both workers agreed to go on after epoch 1,
        # which the chief does after writing its backup of epoch 1.
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2 and index == 1:
                os.kill(os.getpid(), signal.SIGKILL)

    def run(name, epochs, **kw):
        # Each worker gets its own run_dir: the test proves only the chief writes.
        return train(name, data="digits", epochs=epochs, batch_size=32, seed=0,
                     strategy="multi_worker", verbose=0,
                     run_dir=os.path.join(out, f"{name}_w{index}"), **kw)

    def save(name, result):
        np.savez(os.path.join(out, f"{name}_w{index}.npz"), *result.model.get_weights())
        with open(os.path.join(out, f"{name}_w{index}.json"), "w") as f:
            json.dump({"metrics": result.metrics, "resumed": result.resumed,
                       "history": {k: list(v) for k, v in result.history.items()}}, f)

    if phase == "killed":
        run("mlp", 3, callbacks=[KillWorkerOne()], export=False)
    else:
        save("mlp", run("mlp", 3, export=index == 0))
        save("lenet5", run("lenet5", 1, export=False, augment=()))
        # A streamed folder: each worker reads (and decodes) only its own share.
        folder = train("lenet5", data="folder:" + os.path.join(out, "images"), epochs=1,
                       batch_size=4, seed=0, strategy="multi_worker", verbose=0, augment=(),
                       run_dir=os.path.join(out, f"folder_w{index}"), export=False)
        save("folder", folder)
        with open(os.path.join(out, f"folder_w{index}.share.json"), "w") as f:
            json.dump({"policy": folder.bundle.train.options().experimental_distribute
                       .auto_shard_policy.name, "batches": int(folder.bundle.train.cardinality()),
                       "examples": folder.bundle.num_examples["train"]}, f)
""")


def _image_folder(root):
    """Three classes of ten 32x32 PNGs, each a flat grey value."""
    import tensorflow as tf
    for c, name in enumerate(("a", "b", "c")):
        os.makedirs(root / name)
        for i in range(10):
            pixels = np.full((32, 32, 3), 8 * (c * 10 + i), np.uint8)
            (root / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())


def _launch(out, phase):
    from zoo.launch import run_local_workers
    return run_local_workers([sys.executable, "-c", _WORKER, str(out), phase], 2, env=ENV)


@pytest.mark.heavy
def test_two_local_workers_train_identically_resume_and_export(tmp_path):
    from zoo.launch import WorkerError
    out = tmp_path
    # 1. Worker 1 is killed -9 in epoch 3: the run ends with a clear error, no hang.
    with pytest.raises(WorkerError, match=r"worker 1 of 2 was killed by SIGKILL; stopped the "
                                          r"other workers.*resume from the last backup"):
        _launch(out, "killed")
    chief_dir = out / "mlp_w0"
    assert (chief_dir / "config.json").exists() and (chief_dir / "backup").is_dir()
    assert not (chief_dir / "metrics.json").exists()
    # 2. The same command resumes from the chief's backup and finishes; then a small CNN,
    # on digits and on a streamed image folder.
    _image_folder(out / "images")
    assert _launch(out, "resumed") == 0
    for name in ("mlp", "lenet5", "folder"):
        w0, w1 = np.load(out / f"{name}_w0.npz"), np.load(out / f"{name}_w1.npz")
        assert len(w0.files) == len(w1.files) > 0
        for key in w0.files:  # every worker ends with identical weights
            np.testing.assert_array_equal(w0[key], w1[key])
        # Only the chief wrote a run directory.
        assert (out / f"{name}_w0" / "metrics.json").exists()
        assert not (out / f"{name}_w1").exists()
        r0 = json.load(open(out / f"{name}_w0.json"))
        r1 = json.load(open(out / f"{name}_w1.json"))
        assert r0["metrics"]["test_accuracy"] == pytest.approx(r1["metrics"]["test_accuracy"])
    # The folder's 21 training images: 10 per worker (one left over), 5 batches of 2 each.
    shares = [json.load(open(out / f"folder_w{index}.share.json")) for index in (0, 1)]
    assert shares[0] == shares[1] == {"policy": "OFF", "batches": 5, "examples": 21}
    chief = json.load(open(out / "mlp_w0.json"))
    assert chief["resumed"] is True
    history = chief["history"]
    assert [int(e) for e in history["epoch"]][-1] == 2  # epochs 0, 1 before the kill, 2 after
    config = json.load(open(chief_dir / "config.json"))
    assert (config["strategy"], config["replicas"], config["global_batch_size"],
            config["per_replica_batch_size"]) == ("multi_worker", 2, 32, 16)
    assert json.load(open(out / "lenet5_w0.json"))["metrics"]["test_accuracy"] > 0.2

    # 3. Metrics agree with a single-process run of the same recipe (tolerance 0.05).
    from zoo.training import train
    single = train("mlp", data="digits", epochs=3, batch_size=32, seed=0, verbose=0,
                   run_dir=str(tmp_path / "single"), export=False)
    assert abs(single.metrics["test_accuracy"] - chief["metrics"]["test_accuracy"]) <= 0.05

    # 4. The chief's SavedModel computes what its Keras model computes.
    import tensorflow as tf

    from zoo.runs import load_model
    keras_model = load_model(str(chief_dir / "model.keras"))
    x = np.concatenate([np.asarray(b[0]) for b in single.bundle.test])[:64]
    served = tf.saved_model.load(str(chief_dir / "saved_model")).signatures["serving_default"]
    outputs = list(served(tf.constant(x, tf.float32)).values())[0].numpy()
    np.testing.assert_allclose(outputs, np.asarray(keras_model(x)), atol=1e-5)
