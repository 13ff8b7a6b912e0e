"""Bad input, one table: each case is refused with one line naming what was wrong.

Every row runs `zoo ...` in-process (`zoo.cli.main`) or calls the Python
API, and expects exit code 2 (or a ValueError/TypeError), exactly one error
line, no traceback, and a message fragment naming the argument and value.
Nothing a refused call touched is lost: runs it refused to overwrite keep
their files, and a refused fresh run leaves no folder behind.  The data and
runs all cases share are made once (module fixture): one finished and one
interrupted `mlp` run on digits.
"""

import os
import shutil
import types

import numpy as np
import pytest

import zoo
from zoo import cli

MLP = ["--arg", "hidden_units=[8]", "--epochs", "1", "--verbose", "0", "--no-export"]


class _Interrupt(Exception):
    pass


# The interrupted run's call (env.interrupted stops it after epoch 2 of these 3).
RESUMED = dict(epochs=3, export=False, verbose=0, model_kwargs={"hidden_units": (8,)})


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import keras

    root = tmp_path_factory.mktemp("bad_inputs")
    d = types.SimpleNamespace(root=root, data=root / "data", fresh=root / "fresh")
    d.data.mkdir()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype("float32")
    np.savez(d.data / "single.npz", x=x, y=np.zeros(60, "int32"))
    huge = np.arange(60) % 3
    huge[0] = 10 ** 9
    np.savez(d.data / "huge.npz", x=x, y=huge)
    np.savez(d.data / "tiny.npz", x=x[:10], y=np.arange(10) % 2)
    np.savez(d.data / "binary.npz", x=x, y=np.arange(60) % 2)
    np.savez(d.data / "widths.npz", x_train=x, y_train=np.arange(60) % 3,
             x_test=rng.normal(size=(20, 6)).astype("float32"), y_test=np.arange(20) % 3)
    np.savez(d.data / "labels50.npz", x=rng.random((100, 64)).astype("float32"),
             y=np.arange(100) % 50)
    (d.data / "deep_space.json").write_text("[" * 100000 + "]" * 100000)
    (d.data / "damaged_search").mkdir()
    (d.data / "damaged_search" / "search.json").write_text('{"model": "mlp", "tri')
    (d.data / "empty_label.csv").write_text("a,b,label\n1,2,0\n3,4,1\n5,6,\n7,8,1\n")
    (d.data / "ragged.csv").write_text("a,b,label\n1,2,0\n3,4,1,9\n5,6,1\n")
    from PIL import Image
    for label in ("cat", "dog"):
        (d.data / "images" / label).mkdir(parents=True)
        for i in range(4):
            pixels = (rng.random((8, 8, 3)) * 255).astype("uint8")
            Image.fromarray(pixels).save(d.data / "images" / label / f"{i}.png")
    (d.data / "images" / "dog" / "broken.png").write_bytes(b"not a png")

    # A finished run, and copies of it holding what --overwrite must not delete.
    d.run = str(root / "run")
    zoo.train("mlp", "digits", epochs=1, run_dir=d.run, export=False, verbose=0,
              model_kwargs={"hidden_units": (8,)})
    d.foreign = root / "foreign"
    shutil.copytree(d.run, d.foreign)
    for name in ("a.txt", "b.txt", "c.txt", "d.txt", "e.txt", "f.txt", "notes"):
        (d.foreign / name).write_text("keep me")
    d.with_data = root / "with_data"
    shutil.copytree(d.run, d.with_data)
    shutil.copy(d.data / "binary.npz", d.with_data / "x.npz")

    # An interrupted run (stopped after epoch 2 of 3), then copies with a damaged backup.
    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise _Interrupt()

    interrupted = root / "interrupted"
    with pytest.raises(_Interrupt):
        zoo.train("mlp", "digits", run_dir=str(interrupted), callbacks=[Stop()], **RESUMED)
    for name, damaged in (("bad_metadata", "training_metadata.json"),
                          ("bad_state", "callbacks.json")):
        shutil.copytree(interrupted, root / name)
        (root / name / "backup" / damaged).write_text("{not json")
    d.interrupted = interrupted

    # What --overwrite must never delete: a folder of the user's own files, a
    # project folder holding a run and a report, and hostile run directories.
    d.users = root / "users"
    d.users.mkdir()
    for name in ("notes.txt", "thesis.tex"):
        (d.users / name).write_text("keep me")
    d.project = root / "project"
    shutil.copytree(d.run, d.project / "run")
    (d.project / "report.docx").write_text("keep me")
    d.outside = root / "outside.txt"
    d.outside.write_text("keep me")
    d.hostile = {}
    for name, make in _HOSTILE.items():
        d.hostile[name] = root / "hostile" / name
        shutil.copytree(interrupted if name.startswith("resume_") else d.run, d.hostile[name])
        make(d.hostile[name], d)
    return d


def _symlink(name, target):
    def make(run_dir, env):
        os.remove(run_dir / name)
        os.symlink(target(env) if callable(target) else target, run_dir / name)
    return make


def _fifo(name):
    def make(run_dir, env):
        os.remove(run_dir / name)
        os.mkfifo(run_dir / name)
    return make


def _write(name, content):
    def make(run_dir, env):
        (run_dir / name).write_bytes(content)
    return make


def _zip(members):
    def make(run_dir, env):
        import zipfile
        with zipfile.ZipFile(run_dir / "model.keras", "w", zipfile.ZIP_DEFLATED) as archive:
            for member, size in members.items():
                with archive.open(member, "w") as f:
                    for _ in range(size // 2 ** 20):
                        f.write(bytes(2 ** 20))
                    f.write(b"{}" if size < 2 ** 20 else b"")
    return make


def _config(**changes):
    def make(run_dir, env):
        import json
        config = json.loads((run_dir / "config.json").read_text())
        config.update(changes)
        config = {k: v for k, v in config.items() if v is not _DROP}
        (run_dir / "config.json").write_text(json.dumps(config))
    return make


_DROP = object()


def _lock_link(run_dir, env):
    os.symlink(env.outside, run_dir / ".lock")


# Run directories (copies of the finished run, or of the interrupted one for
# resume_*), each with one hostile change.
_HOSTILE = {
    "config_fifo": _fifo("config.json"),
    "model_fifo": _fifo("model.keras"),
    "model_dev_zero": _symlink("model.keras", "/dev/zero"),
    "zip_bomb": _zip({"config.json": 2, "model.weights.h5": 65 * 2 ** 20}),
    "zip_no_config": _zip({"metadata.json": 2}),
    "metrics_list": _write("metrics.json", b"[1, 2]"),
    "config_deep": _write("config.json", b"[" * 100000 + b"]" * 100000),
    "config_huge": _write("config.json", b" " * (11 * 2 ** 20) + b"{}"),
    "inputs_corrupt": _write("export_inputs.npz", b"PK\x03\x04 not a zip"),
    "inputs_missing": lambda run_dir, env: os.remove(run_dir / "export_inputs.npz"),
    "lock_link": _lock_link,
    "config_no_input_shape": _config(input_shape=_DROP),
    "config_recipe_string": _config(recipe="adam"),
    "config_seed_string": _config(seed="3"),
    "config_kwargs_list": _config(model_kwargs=[1]),
    "resume_history_link": _symlink("history.csv", lambda env: env.outside),
    "resume_backup_link": lambda run_dir, env: (
        shutil.move(run_dir / "backup", env.root / "moved_backup"),
        os.symlink(env.root / "moved_backup", run_dir / "backup")),
}


def _train(out, *argv):
    return ["train", "mlp", "--out", str(out), *argv]


def _fresh(env, case):
    return env.fresh / case


def _resume(env, name):
    # The interrupted run's command: same model, data, recipe and seed.
    return ["train", "mlp", "--out", str(env.root / name), "--arg", "hidden_units=[8]",
            "--epochs", "3", "--verbose", "0", "--no-export"]


def _unwritable(env):
    if os.geteuid() != 0:
        folder = env.root / "read_only"
        folder.mkdir(exist_ok=True)
        folder.chmod(0o555)
        return folder / "run"
    return "/sys/zoo_bad_inputs/run"  # root ignores modes; /sys refuses even root


# (case, argv from env or a callable of env, fragment of the message)
CASES = [
    ("overwrite_foreign_files",
     lambda e: _train(e.foreign, "--overwrite", *MLP),
     "zoo did not write (a.txt, b.txt, c.txt, d.txt, e.txt and 2 more)"),
    ("overwrite_data_inside",
     lambda e: _train(e.with_data, "--overwrite", "--data", f"npz:{e.with_data}/x.npz", *MLP),
     "The data is inside run_dir"),
    ("single_class",
     lambda e: _train(_fresh(e, "single"), "--data", f"npz:{e.data}/single.npz", *MLP),
     "single class (every label is 0)"),
    ("num_classes_1_softmax",
     lambda e: _train(_fresh(e, "nc1"), "--arg", "num_classes=1", *MLP),
     "Received: num_classes=1"),
    ("label_1e9",
     lambda e: _train(_fresh(e, "huge"), "--data", f"npz:{e.data}/huge.npz", *MLP),
     "largest label, 1000000000, implies 1000000001 classes but there are only 60 examples"),
    ("split_too_small",
     lambda e: _train(_fresh(e, "tiny"), "--data", f"npz:{e.data}/tiny.npz", *MLP),
     "The test split has 2 examples (test_split=0.2 of 10 examples); at least 5"),
    ("csv_empty_label",
     lambda e: _train(_fresh(e, "empty"), "--data", f"csv:{e.data}/empty_label.csv", *MLP),
     "label_column='label' has 1 empty label(s) (the first at "),
    ("csv_ragged_row",
     lambda e: _train(_fresh(e, "ragged"), "--data", f"csv:{e.data}/ragged.csv", *MLP),
     "ragged.csv line 3 has 4 fields but the header has 3"),
    ("mse_on_classifier",
     lambda e: _train(_fresh(e, "mse"), "--loss", "mse", *MLP),
     "loss='mse' is a regression loss"),
    ("binary_loss_on_softmax",
     lambda e: _train(_fresh(e, "bce"), "--loss", "binary_crossentropy", *MLP),
     "loss='binary_crossentropy' needs a single sigmoid output"),
    ("sparse_loss_on_perceptron",
     lambda e: ["train", "perceptron", "--out", str(_fresh(e, "perc")), "--data",
                f"npz:{e.data}/binary.npz", "--loss", "sparse_categorical_crossentropy",
                "--epochs", "1", "--verbose", "0", "--no-export"],
     "loss='sparse_categorical_crossentropy' needs one output per class"),
    ("train_test_widths",
     lambda e: _train(_fresh(e, "widths"), "--data", f"npz:{e.data}/widths.npz", *MLP),
     "examples of shape (6,) but the training inputs (5,)"),
    ("evaluate_labels_out_of_range",
     lambda e: ["evaluate", e.run, "--data", f"npz:{e.data}/labels50.npz"],
     "labels up to 49, but the run's model predicts 10 classes"),
    ("evaluate_batch_size_0",
     lambda e: lambda: zoo.evaluate(e.run, batch_size=0),
     "batch_size must be a positive integer. Received: batch_size=0"),
    ("corrupt_image",
     lambda e: _train(_fresh(e, "images"), "--data", f"folder:{e.data}/images", *MLP),
     "broken.png cannot be decoded as an image"),
    ("run_dir_under_a_file",
     lambda e: _train(e.data / "ragged.csv" / "run", *MLP),
     "ragged.csv (a part of run_dir) is a file, not a directory"),
    ("run_dir_unwritable",
     lambda e: _train(_unwritable(e), *MLP),
     "run_dir cannot be written"),
    ("backup_metadata_damaged",
     lambda e: _resume(e, "bad_metadata"),
     "training_metadata.json cannot be read), so it cannot resume; pass overwrite=True "
     "(--overwrite)"),
    ("backup_callback_state_damaged",
     lambda e: _resume(e, "bad_state"),
     "callbacks.json cannot be read), so it cannot resume"),
    ("arg_not_a_literal",
     lambda e: _train(_fresh(e, "literal"), "--arg", "hidden_units=[", "--epochs", "1"),
     "hidden_units: '[' is not a Python literal"),
    ("arg_not_a_boolean",
     lambda e: _train(_fresh(e, "bn"), "--arg", "batch_norm=maybe", *MLP),
     "batch_norm must be True or False. Received: batch_norm='maybe'"),
    ("augment_string_is_one_name",
     lambda e: lambda: zoo.train("mlp", augment="flp", run_dir=str(_fresh(e, "aug")),
                                 epochs=1, verbose=0),
     "Unknown augmentation(s) ['flp']"),
    ("lr_1e308_fails_the_run",
     lambda e: _train(_fresh(e, "lr"), "--lr", "1e308", *MLP),
     "Training diverged"),
    # --overwrite follows one rule (zoo.runs.check_replaceable) in every command.
    ("tune_overwrite_users_folder",
     lambda e: _tune(e.users, "--overwrite"),
     "directory holds a folder zoo did not write (notes.txt, thesis.tex), not a search "
     "directory; overwrite=True (--overwrite) would delete it"),
    ("tune_overwrite_training_run",
     lambda e: _tune(e.run, "--overwrite"),
     "directory holds a run directory, not a search directory; overwrite=True"),
    ("train_overwrite_users_folder",
     lambda e: _train(e.users, "--overwrite", *MLP),
     "holds no run (no config.json): it holds a folder zoo did not write (notes.txt, "
     "thesis.tex)"),
    ("export_overwrite_users_folder",
     lambda e: ["export", e.run, "--format", "saved_model", "--out", e.users, "--overwrite"],
     "out holds a folder zoo did not write (notes.txt, thesis.tex), not a SavedModel or an "
     "exported model file"),
    ("export_overwrite_the_run_itself",
     lambda e: ["export", e.run, "--out", e.run, "--overwrite"],
     "out is the run being exported, which overwrite=True (--overwrite) would delete"),
    ("export_overwrite_the_runs_parent",
     lambda e: ["export", e.project / "run", "--out", e.project, "--overwrite"],
     "out holds the run being exported, which overwrite=True (--overwrite) would delete"),
    ("export_overwrite_the_working_directory",
     lambda e: ["export", e.run, "--out", os.getcwd(), "--overwrite"],
     "out is the working directory, which overwrite=True"),
    # An export that cannot verify says so.
    ("export_without_inputs",
     lambda e: ["export", e.hostile["inputs_missing"]],
     "The export cannot be verified: the run has no export_inputs.npz"),
    ("export_inputs_corrupt",
     lambda e: ["export", e.hostile["inputs_corrupt"]],
     "File is damaged (BadZipFile"),
    # Hostile or damaged run files: one line naming the file, no hang, no MemoryError.
    ("config_is_a_fifo",
     lambda e: ["evaluate", e.hostile["config_fifo"]],
     "File is a FIFO, not a regular file; it is not read"),
    ("model_is_a_fifo",
     lambda e: ["evaluate", e.hostile["model_fifo"]],
     "File is a FIFO, not a regular file; it is not read"),
    ("model_links_to_dev_zero",
     lambda e: ["evaluate", e.hostile["model_dev_zero"]],
     "File is a symbolic link (to /dev/zero)"),
    ("model_zip_bomb",
     lambda e: ["evaluate", e.hostile["zip_bomb"]],
     "times its size): a zip bomb, not loaded"),
    ("model_zip_without_config",
     lambda e: ["evaluate", e.hostile["zip_no_config"]],
     "Model file is damaged and cannot be loaded"),
    ("metrics_json_a_list_export",
     lambda e: ["export", e.hostile["metrics_list"], "--overwrite"],
     "File is damaged (it holds a JSON list, not an object)"),
    ("metrics_json_a_list_train",
     lambda e: _train(e.hostile["metrics_list"], *MLP),
     "run_dir holds a finished run whose metrics.json is damaged (File is damaged (it holds "
     "a JSON list, not an object)"),
    ("config_json_nested_deeply",
     lambda e: ["evaluate", e.hostile["config_deep"]],
     "File is damaged (JSON nested too deeply)"),
    ("config_json_over_10_mb",
     lambda e: ["evaluate", e.hostile["config_huge"]],
     "File is too large (11534338 bytes; at most 10485760 are read)"),
    ("config_json_without_input_shape",
     lambda e: ["evaluate", e.hostile["config_no_input_shape"]],
     "config.json is damaged: it records no input_shape"),
    ("config_json_recipe_a_string",
     lambda e: ["evaluate", e.hostile["config_recipe_string"]],
     "config.json is damaged: recipe must be an object. Received: recipe='adam'"),
    ("config_json_seed_a_string",
     lambda e: ["evaluate", e.hostile["config_seed_string"]],
     "config.json is damaged: seed must be an integer. Received: seed='3'"),
    ("config_json_model_kwargs_a_list",
     lambda e: ["export", e.hostile["config_kwargs_list"], "--overwrite"],
     "config.json is damaged: model_kwargs must be an object. Received: model_kwargs=[1]"),
    ("lock_is_a_symlink",
     lambda e: _train(e.hostile["lock_link"], *MLP),
     "run_dir/.lock is a symbolic link"),
    ("resume_history_is_a_symlink",
     lambda e: _resume_dir(e.hostile["resume_history_link"]),
     "run_dir holds a symbolic link (history.csv -> "),
    ("tune_space_is_a_device",
     lambda e: _tune(_fresh(e, "space"), "--space", "/dev/zero"),
     "File is a device, not a regular file; it is not read: /dev/zero"),
    ("tune_space_nested_deeply",
     lambda e: _tune(_fresh(e, "space"), "--space", e.data / "deep_space.json"),
     "File is damaged (JSON nested too deeply)"),
    ("retrain_best_damaged_search",
     lambda e: ["tune", e.data / "damaged_search", "--retrain-best"],
     "The search directory cannot be read: File is damaged (not valid JSON"),
    ("finetune_sha256_without_weights",
     lambda e: ["finetune", "resnet20", "--out", _fresh(e, "sha"), "--weights-sha256", "a" * 64,
                "--epochs", "1"],
     "weights_sha256 checks a weights file (--weights FILE.h5); it does not apply to "
     "weights=None"),
    ("finetune_search_overwrite_users_folder",
     lambda e: ["finetune", "resnet20", "--tune", "2", "--out", e.users, "--overwrite",
                "--epochs", "1"],
     "directory holds a folder zoo did not write (notes.txt, thesis.tex), not a search "
     "directory"),
    ("resume_backup_is_a_symlink",
     lambda e: _resume_dir(e.hostile["resume_backup_link"]),
     "run_dir holds a symbolic link (backup -> "),
]


def _tune(out, *argv):
    return ["tune", "mlp", "--out", str(out), "--max-trials", "1", "--max-epochs", "1", *argv]


def _resume_dir(run_dir):
    return ["train", "mlp", "--out", str(run_dir), "--arg", "hidden_units=[8]",
            "--epochs", "3", "--verbose", "0", "--no-export"]


@pytest.mark.parametrize("case, make, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(env, case, make, fragment, capsys):
    before = {p: open(p, "rb").read() for p in (env.foreign / "metrics.json",
                                                env.with_data / "x.npz")}
    action = make(env)
    if callable(action):
        with pytest.raises((ValueError, TypeError)) as info:
            action()
        assert fragment in str(info.value)
    else:
        try:
            code = cli.main([str(a) for a in action])
        except SystemExit as exit_:  # argparse's errors: one line too
            code = exit_.code
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2, err
        assert "Traceback" not in err
        assert len(lines) == 1 and fragment in lines[0], err
    # Nothing was lost, no lock was left behind, and a refused fresh run left no folder.
    assert {p: open(p, "rb").read() for p in before} == before
    assert (env.foreign / "notes").read_text() == "keep me"
    for kept in (env.users / "notes.txt", env.users / "thesis.tex", env.outside,
                 env.project / "report.docx", env.project / "run" / "model.keras"):
        assert kept.read_bytes() == b"keep me" or kept.name == "model.keras", kept
    for folder in (env.foreign, env.users, env.project, env.root / "run"):
        assert not (folder / ".lock").exists(), folder
    fresh = [p.name for p in env.fresh.iterdir()] if env.fresh.exists() else []
    assert fresh in ([], ["lr"]), fresh  # a diverged run is kept, marked failed


def test_only_what_zoo_writes_counts_as_a_run(tmp_path):
    """Training, export, fine-tuning and killed writes' leftovers are the package's; not more."""
    from zoo import runs
    for name in ("config.json", "metrics.json", "history.csv", "model.keras", "curves.png",
                 "model_card.json", "export_inputs.npz", "finetune_state.json",
                 "phase_2.weights.h5", "model.tflite", "model.onnx", "latent_space.png",
                 "model.partial123.keras", "notes.txt", "logs", "phase_x.weights.h5"):
        (tmp_path / name).write_text("")
    for name in ("checkpoints", "backup", "saved_model", "export", "samples", ".partial-ab12",
                 "my_data"):
        (tmp_path / name).mkdir()
    assert runs.foreign_files(str(tmp_path)) == ["logs", "my_data/", "notes.txt",
                                                 "phase_x.weights.h5"]


@pytest.fixture(scope="module")
def uninterrupted(env):
    """The final weights of the same call never stopped (trained once per module)."""
    return zoo.train("mlp", "digits", run_dir=str(env.root / "uninterrupted"),
                     **RESUMED).model.get_weights()


def _assert_resumes_as_if_never_stopped(run_dir, expected):
    """The same call on `run_dir` resumes, trains epoch 3 only, ends on the same weights."""
    result = zoo.train("mlp", "digits", run_dir=str(run_dir), **RESUMED)
    assert result.resumed and result.history["epoch"] == [0.0, 1.0, 2.0]
    got = result.model.get_weights()
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_a_backup_killed_while_saved_resumes_from_the_previous_one(env, uninterrupted,
                                                                     tmp_path):
    """Latest backup metadata cut short (kill -9 mid-write): resume from *.bkp, same weights."""
    run_dir = tmp_path / "killed"
    shutil.copytree(env.interrupted, run_dir)
    (run_dir / "backup" / "training_metadata.json").write_text('{"ep')
    history = (run_dir / "history.csv").read_text().splitlines(True)
    (run_dir / "history.csv").write_text("".join(history[:-1]))  # its epoch was not logged
    _assert_resumes_as_if_never_stopped(run_dir, uninterrupted)


def test_a_kill_between_the_backup_weights_and_their_metadata_resumes_faithfully(
        env, uninterrupted, tmp_path):
    """Keras copies the backup to *.bkp, writes the new weights, then the metadata: killed
    in between, the weights are an epoch ahead of the metadata; resume from *.bkp."""
    run_dir = tmp_path / "killed"
    shutil.copytree(env.interrupted, run_dir)
    backup = run_dir / "backup"
    other = (backup / "latest.weights.h5.bkp").read_bytes()  # other (older) weights
    for name in ("latest.weights.h5", "training_metadata.json"):
        shutil.copyfile(backup / name, backup / (name + ".bkp"))
    (backup / "latest.weights.h5").write_bytes(other)  # "the next epoch's" weights, no metadata
    from zoo import runs
    assert runs.backup_state(str(run_dir)) == "previous"
    _assert_resumes_as_if_never_stopped(run_dir, uninterrupted)


# Above Linux's largest process id: a writer that is gone.
_DEAD = 4194305


def test_leftovers_of_killed_writes_are_cleaned_by_the_next_command(env, tmp_path):
    """Temporary files of writes killed midway go once a command holds the run; a folder
    moved aside while being replaced comes back where the new one never arrived."""
    from zoo import runs
    run_dir = tmp_path / "run"
    shutil.copytree(env.run, run_dir)
    leftovers = [f"metrics.json.partial{_DEAD}", f"model.partial{_DEAD}.keras",
                 f"model_card.json.partial{_DEAD}", ".partial-x1y2",
                 f"checkpoints/best.partial{_DEAD}.keras"]
    for name in leftovers:
        (run_dir / name).parent.mkdir(exist_ok=True)
        (run_dir / name).write_text("half written")
    live = f"history.csv.partial{os.getppid()}"  # a live writer's: kept
    (run_dir / live).write_text("being written")
    aside = run_dir / f"saved_model.old-{_DEAD}"
    aside.mkdir()
    (aside / "saved_model.pb").write_text("the old export")
    assert runs.foreign_files(str(run_dir)) == []
    with runs.held(str(run_dir)):  # what every command that writes a run does first
        assert (run_dir / ".lock").exists()
    assert not (run_dir / ".lock").exists()
    assert not [n for n in leftovers if (run_dir / n).exists()]
    assert (run_dir / live).exists()
    assert (run_dir / "saved_model" / "saved_model.pb").read_text() == "the old export"
    assert not aside.exists()


def test_a_replaced_folder_is_there_at_every_moment(tmp_path):
    """zoo.io.replace_folder swaps in one step; a swap killed midway is finished by the next."""
    from zoo import io as zio
    target = tmp_path / "saved_model"
    for version in ("one", "two"):
        new = tmp_path / f".partial-{version}"
        new.mkdir()
        (new / "saved_model.pb").write_text(version)
        zio.replace_folder(str(new), str(target))
        assert (target / "saved_model.pb").read_text() == version
        assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model"]
    # Killed (where no atomic swap exists) after moving the old one aside: it comes back.
    os.rename(target, tmp_path / f"saved_model.old-{_DEAD}")
    zio.restore_moved_aside(str(target))
    assert (target / "saved_model.pb").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model"]


def test_a_run_or_search_directory_in_use_is_refused(env, tmp_path, capsys):
    """Another process holds the lock (a training, a search): tune and export refuse."""
    import subprocess
    import sys
    search_dir, run_dir = tmp_path / "search", tmp_path / "run"
    shutil.copytree(env.run, run_dir)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom zoo import runs\n"
         "for p in sys.argv[1:]: runs.lock_run_dir(p)\nprint('locked', flush=True)\n"
         "time.sleep(120)", str(search_dir), str(run_dir)],
        stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        assert holder.stdout.readline().strip() == "locked"
        for argv, fragment in (
                (_tune(search_dir), f"directory is in use by process {holder.pid}"),
                (["export", run_dir, "--overwrite"],
                 f"run_dir is in use by process {holder.pid}")):
            assert cli.main([str(a) for a in argv]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and fragment in err, err
        assert sorted(p.name for p in search_dir.iterdir()) == [".lock"]
        assert not (run_dir / "saved_model").exists()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("name, kwargs, fragment", [
    ("mlp", {"hidden_units": [4_000_000_000]},
     "would have 300,000,000,010 parameters (1,118 GiB of float32 weights), more than the "
     "limit of 2,147,483,648; use a smaller hidden_units"),
    ("conv_autoencoder", {"latent_dim": 2 ** 31}, "use a smaller latent_dim"),
    ("perceptron", {"input_shape": (100000, 100000, 3)},
     "input_shape holds 30000000000 values per example, more than the limit"),
    ("lstm_classifier", {"num_layers": 10 ** 9}, "num_layers may be at most 2000"),
    ("transformer_classifier", {"num_layers": 10 ** 7}, "num_layers may be at most 2000"),
    ("mlp", {"hidden_units": [8] * 200_000}, "hidden_units has 200000 entries"),
    ("mlp", {"l1": 1e30}, "l1 must be a number in [0.0, 1.0]. Received: l1=1e+30"),
    ("mlp", {"name": ""}, "name must be a non-empty string"),
    ("lenet5", {"classifier_activation": "nope"},
     "(Could not interpret activation function identifier: nope). Received: "
     "classifier_activation='nope'"),
    ("mlp", {"hidden_units": 0.5}, "Received: hidden_units=0.5"),
])
def test_builder_arguments_beyond_memory_or_unnamed_are_refused(name, kwargs, fragment):
    """Refused before any weight is allocated, naming the argument (no ResourceExhaustedError)."""
    with pytest.raises((ValueError, TypeError)) as info:
        zoo.build(name, **kwargs)
    assert fragment in str(info.value)


def test_build_takes_the_models_own_name_argument():
    assert zoo.build("mlp", name="x", hidden_units=(4,)).name == "x"


def test_a_kill_before_the_epochs_row_leaves_no_gap_in_the_history(env, uninterrupted, tmp_path):
    """Killed after epoch 2's backup but before its history.csv row (during the best
    checkpoint, say): resume from the previous backup; the history has every epoch once."""
    run_dir = tmp_path / "killed"
    shutil.copytree(env.interrupted, run_dir)
    history = (run_dir / "history.csv").read_text().splitlines(True)
    (run_dir / "history.csv").write_text("".join(history[:-1]))
    from zoo import runs
    assert runs.backup_state(str(run_dir)) == "previous"
    _assert_resumes_as_if_never_stopped(run_dir, uninterrupted)
    epochs = [line.split(",")[0] for line in (run_dir / "history.csv").read_text().splitlines()]
    assert epochs == ["epoch", "0", "1", "2"]


def test_a_kill_after_the_epochs_row_leaves_no_repeat_in_the_history(env, uninterrupted,
                                                                       tmp_path):
    """history.csv got a row the backup never did (epoch 3 logged, then killed): the
    resumed epoch is logged once."""
    run_dir = tmp_path / "killed"
    shutil.copytree(env.interrupted, run_dir)
    with open(run_dir / "history.csv", "a") as f:
        f.write("2,0.5,1.5,0.5,1.5\r\n")
    _assert_resumes_as_if_never_stopped(run_dir, uninterrupted)
    epochs = [line.split(",")[0] for line in (run_dir / "history.csv").read_text().splitlines()]
    assert epochs == ["epoch", "0", "1", "2"]


def test_the_same_command_on_its_finished_run_is_done(env, tmp_path, capsys):
    """Re-run after a kill that came once the run had finished (say while the backup was
    removed): done, exit 0, nothing changed, the finished run's stray backup cleaned."""
    run_dir = tmp_path / "run"
    shutil.copytree(env.run, run_dir)
    (run_dir / "backup").mkdir()
    (run_dir / "backup" / "latest.weights.h5").write_text("half removed")
    before = (run_dir / "model.keras").read_bytes()
    argv = ["train", "mlp", "--out", str(run_dir), "--arg", "hidden_units=[8]", "--epochs", "1",
            "--verbose", "0", "--no-export"]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert err == "" and "done: run_dir already holds a finished run of this very call" in out
    assert (run_dir / "model.keras").read_bytes() == before
    assert not (run_dir / "backup").exists() and not (run_dir / ".lock").exists()


def test_only_the_packages_own_leftovers_are_leftovers(tmp_path):
    """A user's file that merely looks like a temporary name is never deleted."""
    from zoo import runs
    assert runs.is_leftover("config.json.partial12") and runs.is_leftover(".partial-x")
    assert runs.is_leftover("model.partial12.keras") and runs.is_leftover("saved_model.old-3")
    assert runs.is_leftover("phase_2.partial7.weights.h5")
    assert runs.is_leftover("phase_2.weights.h5.partial7")
    assert not runs.is_leftover("notes.partial5.txt") and not runs.is_leftover("photos.old-2")
    (tmp_path / "notes.partial5.txt").write_text("keep me")
    assert runs.kind_of(str(tmp_path)) == ("folder", ["notes.partial5.txt"])


# ================================================================== zoo tune (search cases)
# --space checked entry by entry before the first trial; the search's own outcome in one
# line instead of KerasTuner's tracebacks; a kill while oracle.json is saved; a finished
# --retrain-best re-run; a string where a builder takes a list.


def _one_error_line(capsys, *fragments):
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out + err, (out, err)
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("entry, fragment", [
    ({"learning_rate": {"min": 1e-4, "max": 1e-2, "step": -1}},
     "entry 'learning_rate': step must be a positive number (or null). Received: "),
    ({"units_1": {"min": 32, "max": 64, "step": -2}}, "entry 'units_1': step must be a positive"),
    ({"optimizer": []}, "entry 'optimizer': the list of choices is empty"),
    ({"learning_rate": {"min": 1e-4}},
     "entry 'learning_rate': a range needs 'min' and 'max' (optionally step, sampling, "
     "default); this one has no 'max'"),
    ({"learning_rate": {"min": 1e-4, "max": 1e-2, "stp": 1}}, "unknown key(s) ['stp']"),
    ({"learning_rate": {"min": 1e-2, "max": 1e-4}}, "min is greater than max"),
    ({"dropout": {"min": 0.0, "max": 0.3, "step": 5}}, "step leaves only min in the range"),
    ({"learning_rate": {"min": 1e-4, "max": 1e-2, "sampling": "cubic"}},
     "sampling must be one of linear, log, reverse_log"),
    ({"dropout": [0.1, {"a": 1}]}, "entry 'dropout': choices must be numbers, strings or bools"),
    ({"nope": 3}, ": override(s) ['nope'] name no hyperparameter of this model"),
])
def test_a_space_file_is_checked_before_the_first_trial(tmp_path, capsys, entry, fragment):
    import json
    space = tmp_path / "space.json"
    space.write_text(json.dumps(entry))
    out = tmp_path / "search"
    assert cli.main(_tune(out, "--space", str(space), "--verbose", "0")) == 2
    _one_error_line(capsys, f"Search space file {space}", fragment)
    assert not out.exists()


def test_every_configuration_over_max_params_is_the_searchs_one_line(tmp_path, capsys):
    """No trial can train: the outcome in one line, exit 2 (was: a KerasTuner traceback per
    trial and exit 0)."""
    out = tmp_path / "search"
    assert cli.main(_tune(out, "--max-params", "1", "--max-trials", "2", "--verbose", "0")) == 2
    _one_error_line(capsys, "zoo tune: every configuration exceeds max_params=1 (the smallest "
                            "has ", "parameters): no trial was trained")
    assert (out / "trials.csv").exists()  # the search's own record is kept


def test_a_first_trial_that_diverges_is_the_searchs_one_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    # 600 examples: several of the recipe's batches of 128 (one step alone keeps the
    # smoothed loss finite; the next overflows).
    np.savez(tmp_path / "huge.npz", x=(rng.normal(size=(600, 5)) * 1e30).astype("float32"),
             y=np.arange(600) % 3)
    out = tmp_path / "search"
    assert cli.main(_tune(out, "--data", f"npz:{tmp_path / 'huge.npz'}", "--verbose", "0")) == 2
    _one_error_line(capsys, "zoo tune: no trial completed: trial 0 diverged: loss became "
                            "NaN/inf at epoch 1")


def test_a_kill_while_the_oracle_is_saved_accounts_for_every_trial_once(tmp_path, monkeypatch):
    """Killed after trial 1's trial.json, before oracle.json knows it (KerasTuner's
    create_trial writes them in that order): the resumed search runs trial 1 once, with the
    values an uninterrupted search gives it, and nothing stays "running"."""
    import tuning
    from tuning import tuners

    data = (np.random.default_rng(0).normal(size=(60, 6)).astype("float32"),
            np.arange(60) % 3)
    kwargs = dict(tuner="random", max_trials=3, max_epochs=1, seed=3, max_params=1,
                  early_stopping=None, verbose=0, report=False, tensorboard=False)
    save = tuners._ZooOracle.save

    def killed_while_saving(oracle):
        trial = oracle.trials.get("1")
        if trial is not None and trial.status == "RUNNING" and "1" not in oracle.end_order:
            raise KeyboardInterrupt("kill -9 while oracle.json is saved")
        save(oracle)

    monkeypatch.setattr(tuners._ZooOracle, "save", killed_while_saving)
    with pytest.raises(KeyboardInterrupt):
        tuning.search("mlp", data, directory=str(tmp_path / "a"), **kwargs)
    monkeypatch.setattr(tuners._ZooOracle, "save", save)
    kt_dir = tmp_path / "a" / "kt"
    assert '"RUNNING"' in (kt_dir / "trial_1" / "trial.json").read_text()  # the kill's state
    resumed = tuning.search("mlp", data, directory=str(tmp_path / "a"), **kwargs)
    straight = tuning.search("mlp", data, directory=str(tmp_path / "b"), **kwargs)
    assert [r["trial_id"] for r in resumed.rows] == ["0", "1", "2"]
    assert [r["status"] for r in resumed.rows] == ["skipped"] * 3
    assert [r["hp"] for r in resumed.rows] == [r["hp"] for r in straight.rows]
    assert sorted(p.name for p in kt_dir.iterdir() if p.is_dir()) == [
        "trial_0", "trial_1", "trial_2"]


def test_a_finished_retrain_best_run_again_is_done(tmp_path):
    """The same retrain on its finished run: done (RunFinished, which the CLI answers with
    exit 0), nothing changed, no lock left (export off to keep the test short)."""
    import tuning
    from zoo import runs
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "small.npz", x=rng.normal(size=(60, 5)).astype("float32"),
             y=np.arange(60) % 3)
    out = tmp_path / "search"
    tuning.search("mlp", f"npz:{tmp_path / 'small.npz'}", directory=str(out), max_trials=1,
                  max_epochs=1, model_kwargs={"hidden_units": (8,)}, verbose=0, report=False,
                  tensorboard=False)
    tuning.retrain_best(str(out), export=False, verbose=0)
    model = (out / "best_run" / "model.keras").read_bytes()
    with pytest.raises(runs.RunFinished, match="done: run_dir already holds a finished run "
                                               "of this very call") as info:
        tuning.retrain_best(str(out), export=False, verbose=0)
    assert info.value.exit_code == 0
    assert (out / "best_run" / "model.keras").read_bytes() == model
    assert not (out / ".lock").exists() and not (out / "best_run" / ".lock").exists()


@pytest.mark.parametrize("argv", [
    ["train", "mlp", "--out", "{out}", "--arg", "hidden_units=abc", "--epochs", "1"],
    ["tune", "mlp", "--out", "{out}", "--arg", "hidden_units=abc", "--max-trials", "1"],
])
def test_a_string_where_the_builder_takes_a_list_names_the_argument(tmp_path, capsys, argv):
    out = tmp_path / "out"
    assert cli.main([a.format(out=out) for a in argv]) == 2
    _one_error_line(capsys, "hidden_units takes a list of integers such as [128, 64] (or one "
                            "of them), not a string. Received: hidden_units='abc'")
    assert not out.exists()


def test_a_bare_zoo_prints_its_usage(capsys):
    assert cli.main([]) == 2
    assert capsys.readouterr().out.startswith("usage: zoo")


# ================================================================== augmentation vs model/data
# An augmentation the model or the examples cannot take is refused by name before any
# tf.data map is traced (was: graph errors from inside tf.function).


def test_augmentations_a_model_or_its_examples_cannot_take_are_refused_by_name():
    from zoo import augment
    with pytest.raises(ValueError, match=r"model 'perceptron' has a single sigmoid output .*"
                                         r"Received: augment=\['mixup'\]"):
        augment.check_for_model(["mixup"], zoo.get_spec("perceptron"),
                                loss="binary_crossentropy")
    with pytest.raises(ValueError, match=r"loss='mse' cannot train on.*augment=\['cutmix'\]"):
        augment.check_for_model(["cutmix"], zoo.get_spec("mlp"), loss="mse")
    assert augment.check_for_model(["mixup", "flip"], zoo.get_spec("mlp")) == ("mixup", "flip")
    with pytest.raises(ValueError, match=r"the examples have shape \(5,\).*"
                                         r"Received: augment=\['flip'\]"):
        augment.check_example_shape(["flip"], (5,))
    with pytest.raises(ValueError, match=r"examples have shape \(5,\)"):
        augment.make_augmenter(["mixup"], num_classes=3, example_shape=(5,))
    # (N, H, W) batches (digits for a vector model) are flipped per image, not as one
    # (H=N, W, C) image: every example is itself or its own mirror image.
    images = np.random.default_rng(0).random((6, 8, 8)).astype("float32")
    flipped = np.asarray(augment.make_augmenter(["flip"], seed=1)(images, None, seed=3)[0])
    assert flipped.shape == images.shape
    assert all(np.array_equal(a, b) or np.array_equal(a, b[:, ::-1])
               for a, b in zip(flipped, images))
    assert not np.array_equal(flipped, images)  # seed 3 mirrors some of the 6


@pytest.mark.parametrize("argv, fragment", [
    (["train", "mlp", "--data", "npz:{data}/binary.npz", "--augment", "flip"],
     "but the examples have shape (5,): train without augmentation (CLI: leave out --augment). "
     "Received: augment=['flip']"),
    (["train", "perceptron", "--data", "npz:{data}/binary.npz", "--augment", "mixup"],
     "model 'perceptron' has a single sigmoid output (binary labels)"),
])
def test_an_augmentation_the_model_cannot_take_is_one_line(env, tmp_path, capsys, argv,
                                                           fragment):
    out = tmp_path / "run"
    argv = [a.format(data=env.data) for a in argv]
    assert cli.main([*argv, "--out", str(out), "--epochs", "1", "--verbose", "0",
                     "--no-export"]) == 2
    _one_error_line(capsys, fragment)
    assert not out.exists()


def test_a_weights_file_of_another_shape_is_one_line_without_keras_warnings(tmp_path, capsys):
    """Was: ~80 Keras UserWarnings ("Skipping nested container ...") and a message holding the
    variable's values; now one line naming --weights, the layer and both shapes."""
    import warnings
    path = tmp_path / "resnet32.weights.h5"
    zoo.build("resnet32", input_shape=(8, 8, 3), include_top=False).save_weights(str(path))
    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = cli.main(["finetune", "resnet20", "--weights", str(path), "--out", str(out),
                         "--epochs", "1", "--head-init", "random", "--verbose", "0"])
    assert code == 2
    line = _one_error_line(capsys, "zoo finetune: error: weights file", "does not fit the "
                           "backbone resnet20: the first layer that does not match is "
                           "'conv3_block1_1_conv': it expects weights of shape (3, 3, 16, 32), "
                           "the file holds (3, 3, 16, 16)", f"Received: weights='{path}'")
    assert len(line) < 600, line  # no dump of the variable's values
    assert not [w for w in caught if "keras" in (w.filename or "")], [
        str(w.message)[:100] for w in caught]
    assert not out.exists()


@pytest.mark.parametrize("edit, fragment", [
    (lambda record: record["model_kwargs"].update(hidden_units=[4_000_000_000]),
     "more than the limit of 2,147,483,648; use a smaller hidden_units"),
    (lambda record: record.update(model_kwargs=[1]),
     "The search directory's trial record is damaged: model_kwargs must be a JSON object"),
])
def test_a_best_trial_edited_beyond_reason_is_one_line(tmp_path, capsys, edit, fragment):
    """Was: a TensorFlow OOM traceback (4e9 units) / a Python error about dict updates."""
    import json
    import tuning
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "small.npz", x=rng.normal(size=(60, 5)).astype("float32"),
             y=np.arange(60) % 3)
    out = tmp_path / "search"
    tuning.search("mlp", f"npz:{tmp_path / 'small.npz'}", directory=str(out), max_trials=1,
                  max_epochs=1, model_kwargs={"hidden_units": (8,)}, verbose=0, report=False,
                  tensorboard=False)
    record_file = out / "kt" / "trial_0" / "zoo_trial.json"
    record = json.loads(record_file.read_text())
    edit(record)
    record_file.write_text(json.dumps(record))
    assert cli.main(["tune", str(out), "--retrain-best", "--verbose", "0"]) == 2
    _one_error_line(capsys, fragment)
    assert not (out / "best_run").exists() and not (out / ".lock").exists()
