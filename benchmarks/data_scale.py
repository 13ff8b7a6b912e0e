"""Data at scale: peak memory, time to the first step and input images/s on folders of JPEGs.

    python benchmarks/data_scale.py --images 2000 8000 --cache /tmp/zoo_data_scale
    python benchmarks/data_scale.py --images 500 2000 --code /tmp/zoo_before   # another checkout

Generates (once, cached under --cache) folders of N 224x224 JPEGs in 10
classes (smooth random colour fields with a few ellipses, ~14 KB each), then
for each N runs, each in a fresh process (peak RSS = that process's
`ru_maxrss` from `os.wait4`, so runs never mask each other):

  train     `zoo train lenet5 --arg input_shape=[224,224,3] --data folder:DIR --epochs 1`
            against the same LeNet-5 (`zoo.build`) fitted by plain Keras on
            `keras.utils.image_dataset_from_directory(DIR, image_size=(224, 224),
            validation_split=0.1, subset="both")` with a best-model
            `ModelCheckpoint` and a final evaluation, as the zoo run does;
  finetune  `zoo finetune BACKBONE --data folder:DIR --head-epochs 1 --epochs 1`
            (--backbone, default keras:MobileNetV2; a folder is resized to the
            backbone's native size: 224 for keras:*, a zoo model's input_shape)
            against the same backbone (keras.applications, or `zoo.build` without
            its top), frozen, + a Dense head fitted by plain Keras on
            `image_dataset_from_directory` at that size;
  pipeline  images/s of the zoo's own training pipeline alone (`zoo.training.plan`
            then `Plan.data(...).train`, no augmentation, and with the recipe's)
            against `image_dataset_from_directory(DIR, batch_size=64)`, both
            decoding, iterated for the same number of images; and the images/s
            the small CNN consumes (`training.build_model`, `train_on_batch` on
            one batch held in memory), so "pipeline / model" says whether the
            model would ever wait.

Time to the first step comes from wall-clock marks that Keras's CallbackList
writes (patched in before the measured program starts; it changes nothing
else): "start" is fit's `on_train_begin` (data indexed or loaded, model built
and compiled), "first" the first `on_train_batch_end` after it, i.e. the first
batch read, the train step traced and run (the zoo runs `steps_per_execution`
steps per call, so its first mark comes after k steps; k is printed).  A
training run is stopped (SIGKILL to its own process group) --train-seconds
after its first step mark: its peak RSS is the loading peak plus steady
training, not a whole epoch (--train-seconds 0: every run to its end, the
zoo's evaluation and Keras's whole epoch included).  Before
the runs, the zoo's header pass over the folder (zoo.images.index_folder, when
the measured code has it) is timed cold and then cached, so every run after it
starts from the cached index, as a user's second run would.

Goals (issue 22): zoo train's peak RSS at the largest N within 10% of the
smallest N's and below 2 GiB; time to the first step flat; pipeline >= 1.0x
Keras's and >= 2x what the model consumes.  Never run a loader that stacks
images in memory (--code of a checkout before streaming) at 32,000: ~1.35 GiB
per 1,000 images; a run whose RSS passes --max-rss-gib is killed and marked.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = 10
SIZE = 224
SMALL_CNN = "lenet5"
BACKBONE = "keras:MobileNetV2"
TRAIN_BATCH = 32
PIPELINE_BATCH = 64
GIB = 2 ** 30
MARK = re.compile(r"@@data_scale (train_begin|batch_end) ([0-9.]+) (-?\d+)")
# Run before the measured program (the zoo CLI or a Keras worker): Keras's own
# CallbackList, which every fit calls whatever callbacks it was given, also
# writes wall-clock marks as fit's loop starts and as each execution of
# train steps ends. Instrumentation only: nothing the program does changes.
INSTRUMENT = """
import os, time
from keras.src.callbacks.callback_list import CallbackList as _List
def _mark(what, step):
    os.write(2, f"\\n@@data_scale {what} {time.time():.3f} {step}\\n".encode())
_begin, _end = _List.on_train_begin, _List.on_train_batch_end
def _on_train_begin(self, logs=None):
    _mark("train_begin", -1)
    return _begin(self, logs)
def _on_train_batch_end(self, batch, logs=None):
    result = _end(self, batch, logs)
    _mark("batch_end", batch)
    return result
_List.on_train_begin, _List.on_train_batch_end = _on_train_begin, _on_train_batch_end
"""


# --------------------------------------------------------------------------- images

def _write_images(job):
    """Write the JPEGs `job` = (folder, first index, count, seed) names."""
    import numpy as np
    from PIL import Image, ImageDraw

    folder, first, count, seed = job
    rng = np.random.default_rng([seed, first])
    for i in range(first, first + count):
        label = i % CLASSES
        # Smooth colour field + noise + ellipses: compresses like a photo (~14 KB
        # at quality 90), where white noise would give 100 KB+ JPEGs.
        base = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
        image = Image.fromarray(base).resize((SIZE, SIZE), Image.BICUBIC)
        pixels = np.asarray(image).astype(np.int16) + rng.normal(0, 6, (SIZE, SIZE, 3)).astype(
            np.int16)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(2 + label % 4):
            x, y = rng.integers(0, SIZE - 24, 2)
            w, h = rng.integers(10, 60, 2)
            draw.ellipse([int(x), int(y), int(x + w), int(y + h)],
                         fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        image.save(os.path.join(folder, f"class_{label}", f"img_{i:06d}.jpg"), "JPEG",
                   quality=90)


def image_folder(cache, n, *, workers=2, seed=0):
    """The folder of `n` generated JPEGs under `cache`, made on first use."""
    folder = os.path.join(cache, f"images_{n}")
    if os.path.isdir(folder):
        return folder
    # Written under a scratch name and renamed when complete: an interrupted
    # generation never leaves a short folder that a later run would reuse.
    scratch = folder + ".partial"
    shutil.rmtree(scratch, ignore_errors=True)
    for label in range(CLASSES):
        os.makedirs(os.path.join(scratch, f"class_{label}"))
    chunk = 500
    jobs = [(scratch, first, min(chunk, n - first), seed) for first in range(0, n, chunk)]
    start = time.time()
    if workers > 1:
        import multiprocessing

        with multiprocessing.Pool(workers) as pool:
            pool.map(_write_images, jobs)
    else:
        for job in jobs:
            _write_images(job)
    os.rename(scratch, folder)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)
    print(f"generated {n} JPEGs in {folder}: {size / n / 1024:.1f} KB each, "
          f"{time.time() - start:.0f} s", flush=True)
    return folder


# --------------------------------------------------------------------------- processes

def _status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_process(argv, *, env, cwd, train_seconds, max_rss_gib, timeout):
    """Run `argv` in its own process group; timings of its progress output and its peak RSS.

    Returns a dict: start (s to fit's on_train_begin mark), first (s to the
    first on_train_batch_end mark after it), first_step (steps done by then),
    rate (steps/s between the first and last marks), finished, killed
    (why, or None), peak_gib, rc, tail (last output lines, marks left out).
    """
    began = time.time()
    process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    found = {"start": None, "first": None, "first_step": None, "updates": []}
    tail = []

    def read():
        pending = ""
        while True:
            chunk = process.stdout.read1(65536)
            if not chunk:
                break
            pending += chunk.decode("utf-8", "replace")
            segments = re.split(r"[\r\n]", pending)
            pending = segments.pop()
            for segment in segments:
                match = MARK.search(segment)
                if not match:
                    if segment.strip():
                        tail.append(segment)
                        del tail[:-40]
                    continue
                what, when, step = match.group(1), float(match.group(2)) - began, int(
                    match.group(3))
                if what == "train_begin":
                    if found["start"] is None:
                        found["start"] = when
                elif found["start"] is not None:
                    if found["first"] is None:
                        # Keras passes the last step index of the execution.
                        found["first"], found["first_step"] = when, step + 1
                    found["updates"].append((when, step + 1))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    killed, usage = None, None
    while True:
        # wait4 reaps this very child: its own ru_maxrss, whatever ran before it
        # (Popen.poll would reap it without the usage).
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        now = time.time() - began
        rss = _status_kib(process.pid, "VmRSS") / 2 ** 20
        if killed is None:
            if rss > max_rss_gib:
                killed = f"RSS {rss:.1f} GiB > {max_rss_gib} GiB"
            elif (train_seconds and found["first"] is not None
                  and now - found["first"] > train_seconds):
                killed = f"stopped {train_seconds:.0f} s after the first step"
            elif now > timeout:
                killed = f"timeout {timeout:.0f} s"
            if killed:
                os.killpg(process.pid, signal.SIGKILL)
        time.sleep(0.2)
    process.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=10)
    updates = found["updates"]
    rate = None
    if len(updates) >= 2 and updates[-1][0] > updates[0][0]:
        rate = (updates[-1][1] - updates[0][1]) / (updates[-1][0] - updates[0][0])
    return {"start": found["start"], "first": found["first"], "first_step": found["first_step"],
            "rate": rate, "killed": killed, "rc": process.returncode,
            "finished": killed is None and process.returncode == 0,
            "peak_gib": usage.ru_maxrss / 2 ** 20, "tail": tail[-8:]}


def _env(code, keras_home):
    env = dict(os.environ, PYTHONPATH=code, PYTHONUNBUFFERED="1", ZOO_OFFLINE="1",
               KERAS_HOME=keras_home, TF_CPP_MIN_LOG_LEVEL="3")
    return env


def _zoo_cli(*args):
    return [sys.executable, "-c",
            INSTRUMENT + "\nimport sys\nfrom zoo.cli import main\nsys.exit(main())", *args]


def _worker(mode, **kwargs):
    return [sys.executable, os.path.abspath(__file__), "--worker", mode,
            "--worker-args", json.dumps(kwargs)]


def _result_line(record):
    """The worker's JSON result (the line starting 'RESULT ')."""
    for line in reversed(record["tail"]):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return None


# --------------------------------------------------------------------------- workers

def worker_index(folder):
    """Seconds of the zoo's header pass, cold then cached (None without zoo.images)."""
    import zoo

    try:
        from zoo import images
    except ImportError:
        images = None
    # An editable install's finder serves a submodule the measured checkout
    # lacks from the installed tree: that is not the measured code's.
    if images is None or os.path.dirname(images.__file__) != os.path.dirname(zoo.__file__):
        print("RESULT " + json.dumps({"cold": None, "cached": None}), flush=True)
        return
    times = []
    for _ in range(2):
        start = time.perf_counter()
        images.index_folder(folder)
        times.append(time.perf_counter() - start)
    print("RESULT " + json.dumps({"cold": times[0], "cached": times[1]}), flush=True)


def _keras_dataset(folder, batch_size, scale, offset=0.0, size=SIZE):
    import keras
    import tensorflow as tf

    dataset = keras.utils.image_dataset_from_directory(
        folder, image_size=(size, size), batch_size=batch_size, seed=0, verbose=False)
    return dataset.map(lambda x, y: (x * scale + offset, y),
                       num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def worker_keras_train(folder, scratch=None):
    """Plain Keras: the same LeNet-5 on image_dataset_from_directory, one epoch.

    What `zoo train` does, the way a Keras script does it: 10% held out by
    `validation_split`, `ModelCheckpoint(save_best_only=True)` each epoch, an
    evaluation at the end (Keras's checkpoint save, like the zoo's, costs a
    transient few hundred MB for this model's 5.4M parameters and Adam state).
    """
    import keras
    import tensorflow as tf

    import zoo

    train, validation = keras.utils.image_dataset_from_directory(
        folder, image_size=(SIZE, SIZE), batch_size=TRAIN_BATCH, seed=0, verbose=False,
        validation_split=0.1, subset="both")
    train, validation = (d.map(lambda x, y: (x / 255, y), num_parallel_calls=tf.data.AUTOTUNE)
                         .prefetch(tf.data.AUTOTUNE) for d in (train, validation))
    model = zoo.build(SMALL_CNN, input_shape=(SIZE, SIZE, 3), num_classes=CLASSES)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    checkpoint = keras.callbacks.ModelCheckpoint(
        os.path.join(scratch or tempfile.mkdtemp(), "best.keras"), save_best_only=True)
    model.fit(train, validation_data=validation, epochs=1, verbose=2, callbacks=[checkpoint])
    model.evaluate(validation, verbose=0)


def backbone_size(backbone):
    """The size `zoo finetune` resizes a folder to for `backbone` (its native size)."""
    if backbone.startswith("keras:"):
        return SIZE
    sys.path.insert(0, REPO)
    import zoo

    return zoo.get_spec(backbone).input_shape[0]


def worker_keras_finetune(folder, backbone=BACKBONE):
    """Plain Keras: the frozen backbone + Dense head on image_dataset_from_directory."""
    import keras

    size = backbone_size(backbone)
    if backbone.startswith("keras:"):
        base = getattr(keras.applications, backbone[len("keras:"):])(
            include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg")
        scale, offset = 1 / 127.5, -1.0  # MobileNetV2's 'tf' preprocessing: [-1, 1]
    else:
        import zoo

        base = keras.Sequential([zoo.build(backbone, include_top=False,
                                           input_shape=(size, size, 3)),
                                 keras.layers.GlobalAveragePooling2D()])
        scale, offset = 1 / 255, 0.0  # the zoo's [0, 1] images
    base.trainable = False
    inputs = keras.Input((size, size, 3))
    outputs = keras.layers.Dense(CLASSES, activation="softmax")(base(inputs, training=False))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(_keras_dataset(folder, TRAIN_BATCH, scale, offset, size=size), epochs=1,
              verbose=2)


def _images_per_second(dataset, images, warmup=2):
    """Images/s of iterating `dataset` for `images` images after `warmup` batches."""
    iterator = iter(dataset.repeat())
    for _ in range(warmup):
        next(iterator)
    seen, start = 0, time.perf_counter()
    while seen < images:
        try:
            x = next(iterator)[0]
        except StopIteration:
            break
        seen += int(x.shape[0])
    return seen / (time.perf_counter() - start), seen


def worker_pipeline(folder, images, steps):
    """Images/s of the zoo's pipeline (no augmentation; the recipe's), Keras's, the model's."""
    import numpy as np
    import tensorflow as tf

    from zoo import training

    run_plan = training.plan(SMALL_CNN, f"folder:{folder}", batch_size=PIPELINE_BATCH,
                             model_kwargs={"input_shape": (SIZE, SIZE, 3)})
    result = {"train_examples": int(run_plan.bundle.num_examples["train"])}
    keras_dataset = _keras_dataset(folder, PIPELINE_BATCH, 1 / 255)
    plain = run_plan.data(batch_size=PIPELINE_BATCH, augment=())
    result["zoo"], result["zoo_images"] = _images_per_second(plain.train, images)
    result["keras"], result["keras_images"] = _images_per_second(keras_dataset, images)
    result["zoo_augmented"], _ = _images_per_second(run_plan.bundle.train, images)
    # What the model consumes: train steps on one batch held in memory, so no input waits.
    model = training.build_model(run_plan)
    x, y = next(iter(plain.train))
    x, y = tf.constant(np.asarray(x)[:TRAIN_BATCH]), tf.constant(np.asarray(y)[:TRAIN_BATCH])
    for _ in range(2):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    result["model"] = steps * TRAIN_BATCH / (time.perf_counter() - start)
    print("RESULT " + json.dumps(result), flush=True)


WORKERS = {"index": worker_index, "keras_train": worker_keras_train,
           "keras_finetune": worker_keras_finetune, "pipeline": worker_pipeline}


# --------------------------------------------------------------------------- one N

def measure(n, folder, *, code, scratch, args):
    """Every figure for one folder: {name: run record}."""
    keras_home = os.path.join(scratch, "keras_home")
    # A fresh KERAS_HOME per N: the header pass below is cold, every run after it cached.
    shutil.rmtree(keras_home, ignore_errors=True)
    os.makedirs(keras_home)
    env = _env(code, keras_home)
    limits = dict(env=env, cwd=scratch, train_seconds=args.train_seconds,
                  max_rss_gib=args.max_rss_gib, timeout=args.timeout)
    data = f"folder:{folder}"
    commands = {
        "index": _worker("index", folder=folder),
        "zoo_train": _zoo_cli("train", SMALL_CNN, "--data", data, "--epochs", "1",
                              "--batch-size", str(TRAIN_BATCH), "--arg",
                              f"input_shape=[{SIZE},{SIZE},3]", "--verbose", "2",
                              "--no-export", "--out", os.path.join(scratch, "run_train")),
        "keras_train": _worker("keras_train", folder=folder, scratch=scratch),
        "zoo_finetune": _zoo_cli("finetune", args.backbone, "--data", data,
                                 "--head-epochs", "1",
                                 "--epochs", "1", "--batch-size", str(TRAIN_BATCH),
                                 "--verbose", "2", "--no-export", "--out",
                                 os.path.join(scratch, "run_finetune"),
                                 *shlex.split(args.finetune_args)),
        "keras_finetune": _worker("keras_finetune", folder=folder, backbone=args.backbone),
        "pipeline": _worker("pipeline", folder=folder, images=args.pipeline_images,
                            steps=args.model_steps),
    }
    records = {}
    for name in args.runs:
        for key in ([name] if name == "index" or name == "pipeline"
                    else [f"zoo_{name}", f"keras_{name}"]):
            repeats = []
            for _ in range(1 if key == "index" else args.repeats):
                for run_dir in ("run_train", "run_finetune"):
                    shutil.rmtree(os.path.join(scratch, run_dir), ignore_errors=True)
                record = run_process(commands[key], **limits)
                record["result"] = _result_line(record)
                repeats.append(record)
                state = "ok" if record["finished"] else (record["killed"] or f"rc={record['rc']}")
                print(f"  N={n} {key}: peak {record['peak_gib']:.2f} GiB, start "
                      f"{_fmt(record['start'])} s, first step {_fmt(record['first'])} s "
                      f"(step {record['first_step']}), {state}", flush=True)
                if record["rc"] not in (0, -signal.SIGKILL) and not record["killed"]:
                    print("    " + "\n    ".join(record["tail"]), flush=True)
            records[key] = repeats
    return records


# --------------------------------------------------------------------------- report

def _fmt(value, spec=".1f"):
    return "-" if value is None else format(value, spec)


def _ratio(a, b):
    return a / b if a is not None and b else None


def _spread(values, spec=".2f"):
    """'median [min-max]' of the values that exist (one value: just it)."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    median = statistics.median(values)
    if len(values) == 1:
        return format(median, spec)
    return f"{format(median, spec)} [{format(min(values), spec)}-{format(max(values), spec)}]"


def _median(records, field, inner=None):
    values = []
    for record in records or []:
        value = (record.get("result") or {}).get(inner) if inner else record.get(field)
        if value is not None:
            values.append(value)
    return statistics.median(values) if values else None


def report(results, runs, backbone=BACKBONE):
    sizes = sorted(results)
    print()
    for what in [r for r in runs if r in ("train", "finetune")]:
        label = {"train": f"zoo train {SMALL_CNN} @224", "finetune": f"zoo finetune {backbone}"}
        print(f"{label[what]} vs plain Keras on image_dataset_from_directory "
              f"(batch {TRAIN_BATCH}; peak RSS GiB; seconds to fit's start / first step)")
        print(f"{'N':>7} | {'zoo RSS':>14} | {'Keras RSS':>14} | {'ratio':>5} | "
              f"{'zoo start':>14} | {'Keras start':>14} | {'zoo 1st step (k)':>16} | "
              f"{'Keras 1st step':>14} | zoo run")
        for n in sizes:
            zoo_runs, keras_runs = results[n].get(f"zoo_{what}"), results[n].get(f"keras_{what}")
            zoo_rss, keras_rss = _median(zoo_runs, "peak_gib"), _median(keras_runs, "peak_gib")
            ratio = _ratio(zoo_rss, keras_rss)
            steps = sorted({r["first_step"] for r in zoo_runs or [] if r["first_step"]})
            state = "; ".join(sorted({"ok" if r["finished"] else (r["killed"] or f"rc={r['rc']}")
                                      for r in zoo_runs or []}))
            print(f"{n:>7} | {_spread([r['peak_gib'] for r in zoo_runs or []]):>14} | "
                  f"{_spread([r['peak_gib'] for r in keras_runs or []]):>14} | "
                  f"{_fmt(ratio, '.2f'):>5} | "
                  f"{_spread([r['start'] for r in zoo_runs or []], '.1f'):>14} | "
                  f"{_spread([r['start'] for r in keras_runs or []], '.1f'):>14} | "
                  f"{_spread([r['first'] for r in zoo_runs or []], '.1f') + f' {steps}':>16} | "
                  f"{_spread([r['first'] for r in keras_runs or []], '.1f'):>14} | {state}")
        print()
    if "index" in runs:
        print("header pass (zoo.images.index_folder), s: " + ", ".join(
            f"N={n}: cold {_fmt(_median(results[n].get('index'), None, 'cold'))}, cached "
            f"{_fmt(_median(results[n].get('index'), None, 'cached'), '.2f')}" for n in sizes))
        print()
    if "pipeline" in runs:
        print(f"input pipeline alone, images/s (batch {PIPELINE_BATCH}, decode + resize to "
              f"{SIZE}), and what {SMALL_CNN} consumes (batch {TRAIN_BATCH}, batch in memory)")
        print(f"{'N':>7} | {'zoo':>7} | {'zoo+aug':>7} | {'Keras':>7} | {'zoo/Keras':>9} | "
              f"{'model':>7} | {'zoo/model':>9}")
        for n in sizes:
            runs_n = results[n].get("pipeline")
            zoo_rate, keras_rate = _median(runs_n, None, "zoo"), _median(runs_n, None, "keras")
            model = _median(runs_n, None, "model")
            print(f"{n:>7} | {_fmt(zoo_rate, '.0f'):>7} | "
                  f"{_fmt(_median(runs_n, None, 'zoo_augmented'), '.0f'):>7} | "
                  f"{_fmt(keras_rate, '.0f'):>7} | "
                  f"{_fmt(_ratio(zoo_rate, keras_rate), '.2f'):>9} | {_fmt(model, '.0f'):>7} | "
                  f"{_fmt(_ratio(zoo_rate, model), '.2f'):>9}")
        print()
    goals(results, sizes, runs)


def goals(results, sizes, runs):
    """Issue 22's goals, each PASS/FAIL/n.a. with the figures behind it."""
    print("goals (issue 22):")
    small, large = sizes[0], sizes[-1]

    def check(text, ok):
        print(f"  [{'n.a.' if ok is None else 'PASS' if ok else 'FAIL'}] {text}")

    for what in [r for r in runs if r in ("train", "finetune")]:
        first = _median(results[small].get(f"zoo_{what}"), "peak_gib")
        last = _median(results[large].get(f"zoo_{what}"), "peak_gib")
        growth = _ratio(last, first) if small != large else None
        check(f"zoo {what}: peak RSS at N={large} within 10% of N={small}: "
              f"{_fmt(first, '.2f')} -> {_fmt(last, '.2f')} GiB ({_fmt(growth, '.3f')}x)",
              None if growth is None else 0.9 <= growth <= 1.1)
        if what == "train":
            peaks = [_median(results[n].get("zoo_train"), "peak_gib") for n in sizes]
            peaks = [p for p in peaks if p is not None]
            check(f"zoo train: peak RSS below 2 GiB at every N: "
                  f"{', '.join(format(p, '.2f') for p in peaks)} GiB",
                  max(peaks) < 2.0 if peaks else None)
        start_small = _median(results[small].get(f"zoo_{what}"), "start")
        start_large = _median(results[large].get(f"zoo_{what}"), "start")
        ratio = _ratio(start_large, start_small)
        check(f"zoo {what}: time to fit's start flat (N={large} / N={small}, goal <= 1.1): "
              f"{_fmt(start_small)} -> {_fmt(start_large)} s ({_fmt(ratio, '.2f')}x)",
              None if ratio is None or small == large else ratio <= 1.1)
    if "pipeline" in runs:
        for n in sizes:
            runs_n = results[n].get("pipeline")
            zoo_rate, keras_rate = _median(runs_n, None, "zoo"), _median(runs_n, None, "keras")
            model = _median(runs_n, None, "model")
            versus_keras, versus_model = _ratio(zoo_rate, keras_rate), _ratio(zoo_rate, model)
            check(f"N={n}: pipeline >= 1.0x Keras: {_fmt(versus_keras, '.2f')}x",
                  None if versus_keras is None else versus_keras >= 1.0)
            check(f"N={n}: pipeline >= 2x the model: {_fmt(versus_model, '.2f')}x",
                  None if versus_model is None else versus_model >= 2.0)


# --------------------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[2000, 8000],
                        help="folder sizes N (default 2000 8000; 32000 as an option)")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "zoo_data_scale"),
                        help="where generated folders are kept and reused across runs")
    parser.add_argument("--code", default=REPO,
                        help="the checkout whose zoo is measured (default: this repository)")
    parser.add_argument("--runs", nargs="+", default=["index", "train", "finetune", "pipeline"],
                        choices=["index", "train", "finetune", "pipeline"])
    parser.add_argument("--backbone", default=BACKBONE,
                        help="what `zoo finetune` fine-tunes: keras:NAME or a zoo backbone "
                             "(default keras:MobileNetV2)")
    parser.add_argument("--finetune-args", default="",
                        help="more `zoo finetune` options, e.g. '--head-init random' (the "
                             "default linear probe reads min(train, 2,000) images first)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each measurement")
    parser.add_argument("--train-seconds", type=float, default=30.0,
                        help="stop a training run this long after its first progress update "
                             "(0: let every run finish)")
    parser.add_argument("--pipeline-images", type=int, default=1280,
                        help="images each pipeline is timed over (after 2 warm-up batches)")
    parser.add_argument("--model-steps", type=int, default=6,
                        help="timed train steps of the model on a batch in memory")
    parser.add_argument("--max-rss-gib", type=float, default=12.0,
                        help="kill a run whose RSS passes this")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run at most")
    parser.add_argument("--workers", type=int, default=2, help="processes writing JPEGs")
    parser.add_argument("--json", help="also write every figure to this JSON file (after each N)")
    parser.add_argument("--report", help="print the tables of a --json file written before")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-args", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        if args.worker.startswith("keras_"):
            exec(INSTRUMENT, {})
        WORKERS[args.worker](**json.loads(args.worker_args))
        return 0
    if args.report:
        with open(args.report) as f:
            saved = json.load(f)
        print(f"code {saved['code']} ({saved['commit']})")
        report({int(n): records for n, records in saved["results"].items()}, args.runs,
               saved.get("backbone", BACKBONE))
        return 0
    if any(n < 10 * CLASSES for n in args.images):
        parser.error(f"--images must be at least {10 * CLASSES}. Received: {args.images}")
    code = os.path.abspath(args.code)
    os.makedirs(args.cache, exist_ok=True)
    commit = subprocess.run(["git", "-C", code, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "not a git checkout"
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; code {code} ({commit}); "
          f"{os.cpu_count()} CPUs; N = {args.images}", flush=True)
    results = {}
    for n in args.images:
        folder = image_folder(args.cache, n, workers=args.workers)
        with tempfile.TemporaryDirectory(dir=args.cache, prefix="runs_") as scratch:
            results[n] = measure(n, folder, code=code, scratch=scratch, args=args)
        if args.json:
            sys.path.insert(0, REPO)
            from zoo import io as zio

            zio.write_json(args.json, {"code": code, "commit": commit, "backbone": args.backbone,
                                       "results": results})
    report(results, args.runs, args.backbone)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
