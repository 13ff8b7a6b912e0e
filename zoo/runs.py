"""The run directory: its typed config, atomic files, check/claim, and `load_run`.

A run directory holds everything later steps need (evaluate, export, resume,
fine-tune, retrain a trial):

    config.json history.csv metrics.json curves.png model.keras
    checkpoints/best.keras backup/ (only while interrupted) logs/
    saved_model/ model_card.json export_inputs.npz

This module owns those files: training and export both import it and
nothing else writes them by hand.  It never imports TensorFlow at import
time; `load_run` imports Keras and every custom object of the zoo
(`zoo.models.layers`) before `keras.saving.load_model`, so a run reloads in
a fresh process whatever family wrote it.

A run is finished once `metrics.json` exists; it is written last (after
`model.keras`), so a kill at any moment leaves either an interrupted run
(which resumes) or a finished one with its model.

What `overwrite=True` may delete is one rule for every command
(`check_replaceable`: train, fine-tune, tune, export): only a run, search or
export this package wrote and holding nothing else, never the run being
exported, the data, or the working, home or root directory.  Every command
that writes a run or search directory holds its lock (`lock_run_dir`,
`held`), and cleans what writes killed midway left there (`clean_leftovers`).
Run files are read only as regular files inside the run (no link, FIFO or
device; `zoo.io.open_regular`), within size limits.

`open_run` is the lifecycle every writer of a run shares (`zoo.train`,
`transfer.finetune`, `tuning.retrain_best` through `zoo.train`): lock,
claim once the model is built, always unlock; `zoo.training.finish_run`
writes the finished run inside it.
"""

import contextlib
import csv
import dataclasses
import io
import json
import numbers
import os
import re
import shutil
import stat
import time
from typing import Optional

from zoo import io as zio
from zoo.registry import Recipe

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
MODEL_FILE = "model.keras"
CARD_FILE = "model_card.json"
BACKUP_DIR = "backup"
LOCK_FILE = ".lock"
SAMPLE_FILE = "export_inputs.npz"
# What must match for an interrupted run to resume with a new call.
RESUME_KEYS = ("model", "data", "model_kwargs", "recipe", "seed", "data_options", "classes")
# Everything the package writes at the top of a run directory: training
# (zoo.training, zoo.callbacks), export (zoo.export), fine-tuning
# (transfer.finetuning) and the generative tasks' sample grids.  Only these
# may be deleted by overwrite=True; anything else is the user's.
RUN_FILES = frozenset({
    CONFIG_FILE, METRICS_FILE, HISTORY_FILE, MODEL_FILE, CARD_FILE, SAMPLE_FILE, LOCK_FILE,
    "curves.png", "latent_space.png", "finetune_state.json", "model.tflite", "model.onnx",
    "split.json", "skipped_images.txt"})
RUN_DIRS = frozenset({"checkpoints", BACKUP_DIR, "logs", "saved_model", "export", "samples"})
# phase_N.weights.h5 (fine-tuning); what a write killed midway leaves is
# recognised by `is_leftover`.
_RUN_PATTERN = re.compile(r"phase_\d+\.weights\.h5")
# What `tuning` writes at the top of a search directory (zoo never imports
# tuning, so the names are listed here; tuning.results defines the same).
SEARCH_FILE = "search.json"
SEARCH_FILES = frozenset({SEARCH_FILE, "trials.csv", "best_hyperparameters.json", "report.html",
                          "clock.json", LOCK_FILE})
SEARCH_DIRS = frozenset({"kt", "best_run"})
# A KerasTuner project folder (transfer.tune_finetune's search directory).
KERAS_TUNER_FILE = "oracle.json"
_KERAS_TUNER_PATTERN = re.compile(r"oracle\.json|tuner\d*\.json|trial_\w+|finetune_trials\.json")
# A SavedModel folder (`model.export`, `tf.saved_model.save`).
SAVED_MODEL_FILE = "saved_model.pb"
SAVED_MODEL_NAMES = frozenset({SAVED_MODEL_FILE, "fingerprint.pb", "keras_metadata.pb",
                               "variables", "assets", "assets.extra"})
# Single-file exports (zoo.export): .keras, TFLite and ONNX.
ARTIFACT_SUFFIXES = (".keras", ".tflite", ".onnx")
_KIND_NAMES = {"run": "a run directory", "search": "a search directory",
               "saved_model": "a SavedModel", "artifact": "an exported model file",
               "folder": "a folder zoo did not write", "file": "a file zoo did not write",
               "link": "a symbolic link"}
# Sources whose argument is a path (zoo.data.PREFIXES, less tfds:NAME).
_PATH_PREFIXES = ("folder", "npz", "csv", "fashion_mnist")


class RunError(ValueError):
    """A run directory cannot be used as asked (missing, unfinished, damaged)."""


class RunFinished(RunError):
    """The run directory already holds this very run, finished: nothing is left to do.

    The command line answers it as done (exit 0): what a user re-running a
    command that was killed after the run finished expects.
    """

    exit_code = 0


# ------------------------------------------------------------------ atomic files


# Writes go through zoo.io (one atomic-write and durability policy); these
# names stay here because run code and tests patch `runs.write_json`.
atomic_write = zio.atomic_write
write_json = zio.write_json


def read_json(path):
    """The JSON object in `path`; a damaged, missing or non-object file raises `RunError` naming it.

    Run files are read only as regular files inside the run (no link, FIFO
    or device) of at most `zoo.io.MAX_JSON_BYTES`.
    """
    try:
        value = zio.read_json(path)
    except FileNotFoundError:
        raise RunError(f"File not found: {path}") from None
    except ValueError as err:
        raise RunError(str(err)) from None
    if not isinstance(value, dict):
        raise RunError(f"File is damaged (it holds a JSON {type(value).__name__}, not an "
                       f"object): {path}")
    return value


# history.csv has a row per epoch; a bigger file is not a run's.
MAX_HISTORY_BYTES = 64 * 2 ** 20


def read_history(path):
    """history.csv as {column: [floats]} (empty dict if absent).

    A row per epoch: a row whose epoch repeats one before it (an epoch
    trained again after a kill) replaces that one, so the history has
    neither gaps from the log nor repeats.
    """
    if not os.path.lexists(path):
        return {}
    try:
        with zio.open_regular(path, newline="", max_bytes=MAX_HISTORY_BYTES) as f:
            rows = list(csv.DictReader(f))
    except (ValueError, UnicodeDecodeError, csv.Error) as err:
        raise RunError(f"{err}" if str(err).endswith(path) else
                       f"File is damaged ({err}): {path}") from None
    by_epoch = {}
    for index, row in enumerate(rows):
        by_epoch[row.get("epoch") if row.get("epoch") not in (None, "") else f"row{index}"] = row
    rows = list(by_epoch.values())
    history = {}
    for row in rows:
        for key, value in row.items():
            if key is None:
                continue
            try:
                number = float(value) if value not in ("", None) else None
            except ValueError:
                number = None
            history.setdefault(key, []).append(number)
    return history


def save_model(model, path):
    """`model.save` atomically (a kill mid-write never leaves a truncated .keras)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return atomic_write(path, model.save, suffix=".keras")


# ------------------------------------------------------------------ typed config


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


@dataclasses.dataclass
class RunConfig:
    """config.json of a run, typed.

    `registered` says whether `model` names a registered spec; `base_model`
    is the registered spec the model came from (the model itself for a
    registered run, the backbone's spec for a fine-tuned one, None for a
    user's own `keras.Model`).  Keys this class does not know (written by a
    newer version, or by tuning/transfer) are kept in `extra` and written
    back unchanged.
    """

    model: str
    data: str = "digits"
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    recipe: dict = dataclasses.field(default_factory=dict)
    seed: int = 0
    data_options: dict = dataclasses.field(default_factory=dict)
    classes: Optional[list] = None
    strategy: Optional[str] = None
    deterministic: bool = False
    task: str = "classification"
    registered: bool = True
    base_model: Optional[str] = None
    input_shape: Optional[list] = None
    input_kind: Optional[str] = None
    num_classes: Optional[int] = None
    class_names: Optional[list] = None
    loss: Optional[str] = None
    num_examples: dict = dataclasses.field(default_factory=dict)
    jit_compile: bool = False
    mixed_precision: object = False  # False (float32), "float16" or "bfloat16"
    started: Optional[str] = None
    extra: dict = dataclasses.field(default_factory=dict)

    def to_dict(self):
        d = {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)
             if f.name != "extra"}
        return {**_jsonable(self.extra), **d}

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        if not isinstance(d, dict) or "model" not in d:
            raise RunError(f"config.json is not a run configuration (no 'model' key): {d!r:.200}")
        kwargs = {k: v for k, v in d.items() if k in known}
        extra = {k: v for k, v in d.items() if k not in known}
        kwargs.setdefault("registered", True)
        for key, value in kwargs.items():
            _check_field(key, value)
        return cls(**kwargs, extra=extra)

    def resume_view(self):
        """What must be equal for a new call to resume this run.

        A recipe recorded before `Recipe` gained a field (e.g. `ema_momentum`)
        ran with that field's default, so the missing field reads as the
        default; a recorded value is never replaced.
        """
        d = self.to_dict()
        view = {k: d.get(k) for k in RESUME_KEYS}
        if isinstance(view["recipe"], dict):
            view["recipe"] = {**Recipe().to_dict(), **view["recipe"]}
        return view


# The JSON type of each config.json field ("?" after it: null allowed too).
_FIELD_TYPES = {
    "model": "str", "data": "str", "model_kwargs": "dict", "recipe": "dict", "seed": "int",
    "data_options": "dict", "classes": "list?", "strategy": "str?", "deterministic": "bool",
    "task": "str", "registered": "bool", "base_model": "str?", "input_shape": "shape",
    "input_kind": "str?", "num_classes": "int?", "class_names": "list?", "loss": "str?",
    "num_examples": "dict", "jit_compile": "bool", "mixed_precision": "precision",
    "started": "str?"}
# The mixed-precision compute dtypes a run can train in (`zoo.training.plan`).
PRECISIONS = ("float16", "bfloat16")
_JSON_TYPES = {"str": str, "dict": dict, "list": (list, tuple), "bool": bool,
               "int": numbers.Integral}


def _check_field(key, value):
    """Refuse a config.json field of the wrong JSON type (a damaged or hand-edited file)."""
    kind = _FIELD_TYPES.get(key, "")
    if value is None and kind.endswith("?"):
        return
    if kind == "precision":  # true was float16 before bfloat16 existed
        ok = isinstance(value, bool) or value in PRECISIONS
        wanted = 'false, "float16" or "bfloat16"'
    elif kind == "shape":
        ok = isinstance(value, (list, tuple)) and value and all(
            d is None or (isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0)
            for d in value)
        wanted = "a list of positive integers"
    else:
        expected = _JSON_TYPES.get(kind.rstrip("?"))
        if expected is None:
            return
        ok = isinstance(value, expected) and (expected is bool or not isinstance(value, bool))
        wanted = {"str": "a string", "dict": "an object", "list": "a list", "bool": "true or "
                  "false", "int": "an integer"}[kind.rstrip("?")]
    if not ok:
        raise RunError(f"{CONFIG_FILE} is damaged: {key} must be {wanted}. "
                       f"Received: {key}={value!r:.100}")


def read_config(run_dir):
    """The `RunConfig` of `run_dir` (a damaged config.json raises `RunError` naming it)."""
    return RunConfig.from_dict(read_json(os.path.join(run_dir, CONFIG_FILE)))


def write_config(run_dir, config):
    return write_json(os.path.join(run_dir, CONFIG_FILE), config.to_dict())


# ------------------------------------------------------------------ check / claim


def is_finished(run_dir):
    return os.path.exists(os.path.join(run_dir, METRICS_FILE))


def _failed(run_dir):
    """The reason a finished run failed (its metrics.json says so), or None."""
    try:
        metrics = read_json(os.path.join(run_dir, METRICS_FILE))
    except RunError:
        return None
    return metrics.get("reason") or "failed" if metrics.get("status") == "failed" else None


def _contents(run_dir):
    return [name for name in os.listdir(run_dir) if name != LOCK_FILE]


# Locks this process holds, by absolute folder: {path: (fd of its .lock, .lock's inode)}.
_LOCKS = {}


def lock_run_dir(run_dir, *, argument="run_dir"):
    """Hold an exclusive lock on `run_dir` for this process (creates the folder).

    A second process writing the same run (or search) directory fails at
    once instead of corrupting the first one's files.  The lock is an `flock`
    on run_dir/.lock, released by `unlock_run_dir` (which removes the file)
    or when the process ends, however it ends (kill -9 included).  Taking it
    again in the same process is a no-op.  `.lock` is never written through
    a link, and nothing is written to it before the lock is held.  Once held,
    what writes killed midway left in a folder that holds a run or a search
    is cleaned (`clean_leftovers`).

    Args:
        run_dir: the folder.
        argument: its name in messages. Defaults to "run_dir".

    Returns:
        True if this call created `run_dir`.
    """
    import fcntl

    run_dir = os.path.abspath(run_dir)
    if run_dir in _LOCKS:
        return False
    received = f"Received: {argument}={run_dir!r}"
    created = not os.path.exists(run_dir)
    path = os.path.join(run_dir, LOCK_FILE)
    try:
        os.makedirs(run_dir, exist_ok=True)
    except (NotADirectoryError, FileExistsError):
        blocker = _file_in_the_way(run_dir)
        where = f"{argument} exists and" if blocker == run_dir else \
            f"{blocker} (a part of {argument})"
        raise RunError(f"{argument} cannot be created: {where} is a file, not a directory. "
                       f"{received}") from None
    except PermissionError:
        raise RunError(f"{argument} cannot be written (permission denied). {received}") from None
    except OSError as err:  # a read-only file system, a full disk ...
        raise RunError(f"{argument} cannot be written ({err.strerror or err}). "
                       f"{received}") from None
    for _ in range(100):  # another process may remove .lock between our open and flock
        fd = _open_lock_file(path, argument, received)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunError(f"{argument} is in use by {owner}; wait for it to finish or choose "
                           f"another {argument}. {received}") from None
        inode = os.fstat(fd).st_ino
        try:
            current = os.stat(path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            current = None
        if current == inode:
            break
        os.close(fd)  # the holder removed the file we locked: lock the new one
    else:
        raise RunError(f"{argument}/.lock keeps changing; another process is taking the "
                       f"lock. {received}")
    os.ftruncate(fd, 0)
    os.write(fd, f"process {os.getpid()}\n".encode())
    _LOCKS[run_dir] = (fd, inode)
    clean_leftovers(run_dir)
    return created


def _open_lock_file(path, argument, received):
    flags = (os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_CLOEXEC", 0))
    try:
        fd = os.open(path, flags, 0o644)
    except PermissionError:
        raise RunError(f"{argument} cannot be written (permission denied). {received}") from None
    except OSError as err:
        if os.path.islink(path):
            raise RunError(f"{argument}/{LOCK_FILE} is a symbolic link (to "
                           f"{os.path.realpath(path)}); zoo never writes through it. Remove "
                           f"the link. {received}") from None
        raise RunError(f"{argument} cannot be written ({err.strerror or err}). "
                       f"{received}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RunError(f"{argument}/{LOCK_FILE} is not a regular file; remove it. {received}")
    return fd


def clean_leftovers(folder):
    """Clean what writes killed midway left in a run or search directory whose lock we hold.

    Temporary files ("NAME.partialPID...") and scratch exports (".partial-*")
    are deleted, a folder moved aside while being replaced ("NAME.old-PID")
    is deleted or, where NAME is missing, moved back (see
    `zoo.io.remove_leftovers`).  Only the top of the folder and the
    package's own subfolders are searched, and only in a folder that holds a
    run (config.json) or a search (search.json): never a user's folder.
    """
    if not any(os.path.isfile(os.path.join(folder, marker))
               for marker in (CONFIG_FILE, SEARCH_FILE)):
        return []
    removed = zio.remove_leftovers(folder, recursive=False, only=is_leftover)
    backup = os.path.join(folder, BACKUP_DIR)
    if is_finished(folder) and not _failed(folder) and os.path.isdir(backup) \
            and not os.path.islink(backup):
        shutil.rmtree(backup, ignore_errors=True)  # killed while `finish_run_dir` removed it
        removed.append(backup)
    for name in sorted(RUN_DIRS | SEARCH_DIRS):
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            removed += zio.remove_leftovers(path)
    return removed


def holding_run_dir(function):
    """Decorate a function of `run_dir` (its first argument) that changes a finished run:
    it runs holding the run's lock (`held`), so it never races a trainer or another export."""
    import functools

    @functools.wraps(function)
    def wrapper(run_dir, *args, **kwargs):
        with held(run_dir):
            return function(run_dir, *args, **kwargs)
    return wrapper


def _file_in_the_way(path):
    """`path` or the first of its parents that exists and is not a directory."""
    parts = []
    while path and path not in parts:
        parts.append(path)
        path = os.path.dirname(path)
    for candidate in reversed(parts):
        if os.path.exists(candidate) and not os.path.isdir(candidate):
            return candidate
    return parts[0]


def unlock_run_dir(run_dir, *, remove_if_empty=False):
    """Release this process's lock on `run_dir` and remove its .lock; optionally remove a
    folder it left empty."""
    run_dir = os.path.abspath(run_dir)
    held = _LOCKS.pop(run_dir, None)
    if held is None:
        return
    fd, inode = held
    path = os.path.join(run_dir, LOCK_FILE)
    try:
        # Removed while still locked, so no one can lock the old file after us.
        if os.stat(path, follow_symlinks=False).st_ino == inode:
            os.remove(path)
    except OSError:
        pass
    os.close(fd)
    if remove_if_empty and os.path.isdir(run_dir) and not _contents(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)


@contextlib.contextmanager
def held(folder, *, argument="run_dir"):
    """Hold `folder`'s lock for the block if it exists and this process does not hold it yet.

    For commands that change an existing run (an export, an evaluation that
    writes): a folder that does not exist is left to the command to refuse.
    """
    folder = os.path.abspath(folder)
    if folder in _LOCKS or not os.path.isdir(folder):
        yield
        return
    lock_run_dir(folder, argument=argument)
    try:
        yield
    finally:
        unlock_run_dir(folder)


def is_leftover(name):
    """Whether `name` is what a write of the package's own files, killed midway, leaves.

    "config.json.partial123", "model.partial123.keras" (a file the package
    writes, see `zoo.io.temporary_path`), "saved_model.old-123" (one of its
    folders moved aside) and ".partial-*" (an export's scratch folder); a
    user's "notes.partial5.txt" is not.
    """
    match = zio.LEFTOVER.fullmatch(name)
    if not match:
        return False
    if match.group("stem") is not None:
        final = match.group("stem") + match.group("suffix")
        return final in RUN_FILES | SEARCH_FILES or _RUN_PATTERN.fullmatch(final) is not None
    if match.group("old") is not None:
        return match.group("old") in RUN_DIRS | SEARCH_DIRS
    return True


def foreign_files(run_dir):
    """Names at the top of `run_dir` that the package did not write (sorted)."""
    foreign = []
    for name in sorted(os.listdir(run_dir)):
        path = os.path.join(run_dir, name)
        is_dir = os.path.isdir(path) and not os.path.islink(path)
        ours = (name in RUN_DIRS if is_dir else name in RUN_FILES) or bool(
            _RUN_PATTERN.fullmatch(name)) or is_leftover(name)
        if not ours:
            foreign.append(name + ("/" if is_dir else ""))
    return foreign


def _names(names, limit=5):
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def data_path(data):
    """The absolute file or folder a data argument reads ("csv:PATH" ...), or None."""
    if not isinstance(data, str):
        return None
    prefix, sep, rest = data.partition(":")
    if not sep or prefix not in _PATH_PREFIXES or not rest:
        return None
    return os.path.abspath(os.path.expanduser(rest))


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def kind_of(path):
    """What `path` holds as the package sees it: (kind, names zoo did not write there).

    kind is None (nothing there), "empty" (a folder holding nothing but the
    package's lock or leftovers), "run" (config.json), "search"
    (search.json), "saved_model" (saved_model.pb), "artifact" (a .keras,
    .tflite or .onnx file), "link", "file" (any other file) or "folder" (a
    folder with none of those markers, every name in it foreign).
    """
    if not os.path.lexists(path):
        return None, []
    if os.path.islink(path):
        return "link", []
    if not os.path.isdir(path):
        return ("artifact" if path.endswith(ARTIFACT_SUFFIXES) else "file"), []
    names = sorted(os.listdir(path))
    ours = [n for n in names if n == LOCK_FILE or is_leftover(n)]
    if len(ours) == len(names):
        return "empty", []
    if CONFIG_FILE in names:
        return "run", foreign_files(path)
    if SEARCH_FILE in names:
        allowed = (SEARCH_FILES, SEARCH_DIRS)
        kind = "search"
    elif KERAS_TUNER_FILE in names:  # a KerasTuner project (transfer.tune_finetune)
        allowed = ([n for n in names if _KERAS_TUNER_PATTERN.fullmatch(n)],) * 2
        kind = "search"
    elif SAVED_MODEL_FILE in names:
        allowed = (SAVED_MODEL_NAMES, SAVED_MODEL_NAMES)
        kind = "saved_model"
    else:
        allowed, kind = (frozenset(), frozenset()), "folder"
    foreign = []
    for name in names:
        full = os.path.join(path, name)
        is_dir = os.path.isdir(full) and not os.path.islink(full)
        if not ((name in allowed[1] if is_dir else name in allowed[0]) or name in ours):
            foreign.append(name + ("/" if is_dir else ""))
    return kind, foreign


def check_replaceable(path, kinds, *, argument, keep=()):
    """Refuse to delete or replace `path` unless it is the package's own and nothing else.

    The one rule every `overwrite=True` (`--overwrite`) follows (train,
    fine-tune, tune, export): `path` may be replaced only when it does not
    exist, is empty, or is one of `kinds` (see `kind_of`) written by this
    package and holding nothing else; never the working, home or root
    directory or a folder above one, and never a path in `keep` or a folder
    above one (the run being exported, the data being trained on).  Every
    refusal names what would be lost.

    Args:
        path: what overwriting would delete.
        kinds: the kinds it may be ("run", "search", "saved_model", "artifact").
        argument: the argument's name in messages ("run_dir", "out", ...).
        keep: (path, description) pairs that must survive, e.g.
            (run_dir, "the run being exported"). Defaults to ().

    Raises:
        RunError: naming what would be lost.
    """
    path = os.path.abspath(path)
    received = f"Received: {argument}={path!r}"
    if not os.path.lexists(path):
        return
    protected = [(os.getcwd(), "the working directory"), (os.path.expanduser("~"),
                 "the home directory"), ("/", "the root directory"), *keep]
    for other, what in protected:
        if other is None or not _inside(other, path):
            continue
        where = "is" if os.path.realpath(other) == os.path.realpath(path) else "holds"
        raise RunError(f"{argument} {where} {what}, which overwrite=True (--overwrite) would "
                       f"delete; choose another {argument}. {received}")
    kind, foreign = kind_of(path)
    if kind == "empty":
        return
    allowed = " or ".join(_KIND_NAMES[k] for k in kinds)
    if kind not in kinds:
        lost = f" ({_names(foreign)})" if foreign else ""
        raise RunError(f"{argument} holds {_KIND_NAMES[kind]}{lost}, not {allowed}; "
                       f"overwrite=True (--overwrite) would delete it. Choose another "
                       f"{argument}. {received}")
    if foreign:
        raise RunError(f"{argument} holds files that zoo did not write ({_names(foreign)}); "
                       f"overwrite=True would delete them. Move them out or choose another "
                       f"{argument}. {received}")


def _check_overwrite(run_dir, config):
    """Refuse overwrite=True where emptying `run_dir` would delete what is not the run's."""
    source = data_path(config.data)
    if source is not None and _inside(source, run_dir):
        raise RunError(f"The data is inside run_dir, which overwrite=True would empty "
                       f"first; move the data out or choose another run_dir. Received: "
                       f"data={config.data!r}, run_dir={run_dir!r}")
    check_replaceable(run_dir, ("run",), argument="run_dir")


def check_run_dir(run_dir, config, *, overwrite=False):
    """Whether `run_dir` resumes an interrupted run; raises where it may not be used.

    An interrupted run (config.json and backup/ but no metrics.json) with the
    same configuration resumes (a damaged backup is refused, naming the file);
    anything else already there is refused unless `overwrite=True`.  Even then
    a run directory that holds files zoo did not write (see `RUN_FILES`) or
    the data being trained on is refused, since overwriting empties it.
    Changes nothing on disk (see `claim_run_dir`).

    Args:
        run_dir: the run directory (absolute).
        config: the new run's `RunConfig`.
        overwrite: allow replacing what is there. Defaults to False.
    """
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise RunError(f"run_dir exists and is not a directory. Received: run_dir={run_dir!r}")
    blocker = _file_in_the_way(os.path.abspath(run_dir))
    if not os.path.exists(run_dir) and os.path.exists(blocker):
        raise RunError(f"run_dir cannot be created: {blocker} (a part of run_dir) is a file, "
                       f"not a directory. Received: run_dir={run_dir!r}")
    if os.path.abspath(run_dir) in (os.path.abspath(os.getcwd()), os.path.expanduser("~"), "/"):
        raise RunError(f"run_dir may not be the working, home or root directory (overwriting "
                       f"would delete it). Received: run_dir={run_dir!r}")
    if not os.path.isdir(run_dir) or kind_of(run_dir)[0] == "empty":
        return False
    if overwrite and os.path.exists(os.path.join(run_dir, CONFIG_FILE)):
        _check_overwrite(run_dir, config)
        return False
    if not os.path.exists(os.path.join(run_dir, CONFIG_FILE)):
        # Never deleted, even with overwrite: it may hold the user's data.
        kind, foreign = kind_of(run_dir)
        what = _KIND_NAMES[kind] + (f" ({_names(foreign)})" if foreign else "")
        raise RunError(f"run_dir is not empty and holds no run (no config.json): it holds "
                       f"{what}, which overwrite=True would delete; choose an empty or new "
                       f"folder. Received: run_dir={run_dir!r}")
    _check_links(run_dir)
    if is_finished(run_dir) and _failed(run_dir):
        raise RunError(f"run_dir holds a failed run ({_failed(run_dir)}); pass overwrite=True "
                       f"(--overwrite) to train it again. Received: run_dir={run_dir!r}")
    if is_finished(run_dir):
        try:
            read_json(os.path.join(run_dir, METRICS_FILE))
        except RunError as err:
            raise RunError(f"run_dir holds a finished run whose {METRICS_FILE} is damaged "
                           f"({err}); pass overwrite=True (--overwrite) to train it again. "
                           f"Received: run_dir={run_dir!r}") from None
    if is_finished(run_dir) and _same_run(run_dir, config):
        raise RunFinished(f"done: run_dir already holds a finished run of this very call "
                          f"(the same model, data, arguments, recipe and seed); nothing to do. Pass "
                          f"overwrite=True (--overwrite) to train it again. Received: "
                          f"run_dir={run_dir!r}")
    if is_finished(run_dir):
        raise RunError(f"run_dir already holds a finished run; pass overwrite=True "
                       f"(--overwrite) to replace it or choose another run_dir. Received: "
                       f"run_dir={run_dir!r}")
    if (os.path.exists(os.path.join(run_dir, MODEL_FILE))
            and not os.path.isdir(os.path.join(run_dir, BACKUP_DIR))):
        raise RunError(f"run_dir holds a trained model but no {METRICS_FILE} and no backup/ "
                       f"(a damaged finished run?); pass overwrite=True (--overwrite) to "
                       f"retrain it. Received: run_dir={run_dir!r}")
    previous = read_config(run_dir).resume_view()
    current = config.resume_view()
    changed = [k for k in RESUME_KEYS if previous.get(k) != current.get(k)]
    if changed:
        raise RunError(f"run_dir holds an interrupted run with a different configuration "
                       f"({', '.join(changed)} differ); resume it with the same arguments, "
                       f"or pass overwrite=True. Received: run_dir={run_dir!r}")
    return backup_state(run_dir) != "none"


def _same_run(run_dir, config):
    """Whether `run_dir`'s model.keras and config.json are those of `config`'s run."""
    try:
        previous = read_config(run_dir)
    except RunError:
        return False
    return (os.path.isfile(os.path.join(run_dir, MODEL_FILE))
            and previous.resume_view() == config.resume_view())


def _check_links(run_dir):
    """Refuse a run directory where a run file or folder is a link (resume would write
    through it, outside the run, or delete what it points at)."""
    for top, dirs, files in os.walk(run_dir):
        for name in dirs + files:
            path = os.path.join(top, name)
            if os.path.islink(path):
                raise RunError(f"run_dir holds a symbolic link ({os.path.relpath(path, run_dir)} "
                               f"-> {os.readlink(path)}); a run's files must be inside it, so it "
                               f"is not resumed. Remove the link, or pass overwrite=True. "
                               f"Received: run_dir={run_dir!r}")


# Keras BackupAndRestore's files (double_checkpoint keeps the previous ones as *.bkp)
# and zoo.callbacks.CallbackState's.
BACKUP_METADATA = "training_metadata.json"
BACKUP_WEIGHTS = "latest.weights.h5"
CALLBACK_STATE = "callbacks.json"


def _backup_epoch(path):
    """The epoch a backup metadata file records, or None when missing or damaged."""
    try:
        with open(path) as f:
            epoch = json.load(f)["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ok = isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0
    return epoch if ok else None


def _weights_readable(path):
    if not os.path.isfile(path):
        return False
    try:
        import h5py
        with h5py.File(path, "r"):
            return True
    except (OSError, ValueError):
        return False


def backup_state(run_dir):
    """How an interrupted run's backup/ can be resumed: "latest", "previous" or "none".

    "none": no epoch was ever backed up (killed while saving the first), so
    the run starts over.  "previous": the latest backup is damaged (killed
    while Keras rewrote it) but the previous one (*.bkp) matches history.csv,
    or the latest weights were written but not yet their metadata; the run
    resumes from *.bkp (`claim_run_dir` puts it back).  Anything else
    damaged raises `RunError` naming the file.
    """
    backup = os.path.join(run_dir, BACKUP_DIR)
    metadata = os.path.join(backup, BACKUP_METADATA)
    weights = os.path.join(backup, BACKUP_WEIGHTS)
    if not os.path.isdir(backup) or not any(
            os.path.exists(p) for p in (metadata, metadata + ".bkp")):
        return "none"
    damaged = None
    state = os.path.join(backup, CALLBACK_STATE)
    if os.path.exists(state):
        try:
            read_json(state)
        except RunError:
            damaged = state
    epoch = _backup_epoch(metadata)
    previous = _backup_epoch(metadata + ".bkp")
    if damaged is None and epoch is not None and _weights_readable(weights):
        # Keras saves by copying both files to *.bkp, writing the weights, then
        # the metadata: equal epochs mean a kill between the last two, when the
        # weights may be an epoch ahead of the metadata; the *.bkp pair agrees.
        if previous == epoch and _weights_readable(weights + ".bkp"):
            return "previous"
        # Killed after the backup but before history.csv got the epoch's row
        # (the checkpoint and the log come after the backup): resume from the
        # previous backup, so that no epoch is missing from the history.
        rows = len(read_history(os.path.join(run_dir, HISTORY_FILE)).get("epoch", []))
        if rows < epoch and previous == rows and _weights_readable(weights + ".bkp"):
            return "previous"
        return "latest"
    rows = len(read_history(os.path.join(run_dir, HISTORY_FILE)).get("epoch", []))
    if (damaged is None and previous is not None and previous == rows
            and _weights_readable(weights + ".bkp")):
        return "previous"
    damaged = damaged or (metadata if epoch is None else weights)
    raise RunError(f"run_dir holds an interrupted run whose backup is damaged ({damaged} "
                   f"cannot be read), so it cannot resume; pass overwrite=True (--overwrite) "
                   f"to start the run over. Received: run_dir={run_dir!r}")


def trim_history(path, epochs):
    """Keep history.csv's rows of the first `epochs` epochs, once each (a resume logs the rest).

    A kill after an epoch's row was logged but before its backup repeats that
    epoch on resume; without this, history.csv would hold it twice.
    """
    if not os.path.isfile(path) or os.path.islink(path):
        return
    with zio.open_regular(path, newline="", max_bytes=MAX_HISTORY_BYTES) as f:
        table = list(csv.reader(f))
    if not table or "epoch" not in table[0]:
        return
    column = table[0].index("epoch")
    kept = {}
    for row in table[1:]:
        try:
            epoch = int(float(row[column]))
        except (IndexError, ValueError):
            continue
        if epoch < epochs:
            kept[epoch] = row
    rows = [table[0]] + [kept[e] for e in sorted(kept)]
    if rows == table:
        return
    text = io.StringIO()
    csv.writer(text).writerows(rows)  # "\r\n", as Keras's CSVLogger writes
    zio.write_text(path, text.getvalue(), newline="")


def empty_folder(folder):
    """Delete everything in `folder` but its lock file (links themselves, never their targets).

    Only after `check_replaceable` allowed it, with the folder's lock held.
    """
    for name in _contents(folder):
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def claim_run_dir(run_dir, *, resumed):
    """Create `run_dir`, emptying it first unless resuming (`check_run_dir` allowed it).

    The lock file (see `lock_run_dir`) stays, so the lock is held throughout.
    """
    if not resumed and os.path.isdir(run_dir):
        empty_folder(run_dir)
    if resumed and backup_state(run_dir) == "previous":
        backup = os.path.join(run_dir, BACKUP_DIR)
        for name in (BACKUP_WEIGHTS, BACKUP_METADATA):
            shutil.copyfile(os.path.join(backup, name + ".bkp"), os.path.join(backup, name))
    if resumed:
        trim_history(os.path.join(run_dir, HISTORY_FILE), completed_epochs(run_dir))
    os.makedirs(run_dir, exist_ok=True)


@dataclasses.dataclass
class OpenRun:
    """A run directory held by `open_run`: claimed once the run is ready to start.

    Under multi-worker only the chief (`chief=True`) locks and writes the
    directory; the other workers train alongside and write nothing.
    """

    run_dir: str
    chief: bool = True
    created: bool = False

    def claim(self, config, *, resumed):
        """Start the run: stamp `config.started`; the chief claims the folder, writes config.json.

        Called once the model is built, so a refused argument costs nothing
        already on disk.  `resumed` is what `check_run_dir` returned.
        """
        config.started = time.strftime("%Y-%m-%dT%H:%M:%S")
        if self.chief:
            claim_run_dir(self.run_dir, resumed=resumed)
        self.write_config(config)

    def write_config(self, config):
        """(Re)write config.json (the chief only)."""
        if self.chief:
            write_config(self.run_dir, config)


@contextlib.contextmanager
def open_run(run_dir, *, chief=True):
    """Hold `run_dir` for the block: the lifecycle `train`, `finetune` and `retrain_best` share.

        with runs.open_run(run_dir, chief=is_chief(strategy)) as run:
            run_plan = training.plan(..., run_dir=run_dir)   # checks run_dir (may refuse)
            model = training.build_model(run_plan)
            run.claim(run_plan.config, resumed=run_plan.resumed)
            training.fit(run_plan, model, run_dir=run_dir, resume=run_plan.resumed)
            training.finish_run(run_plan, model, run)       # evaluate, save, metrics.json

    The chief locks `run_dir` (see `lock_run_dir`) and the lock is released
    however the block ends; a folder this call created and left empty (an
    argument refused while planning) is removed again.

    Args:
        run_dir: the run directory (made absolute).
        chief: whether this process writes the directory. Defaults to True.

    Yields:
        An `OpenRun`.
    """
    run_dir = os.path.abspath(run_dir)
    created = lock_run_dir(run_dir) if chief else False
    try:
        yield OpenRun(run_dir=run_dir, chief=chief, created=created)
    finally:
        unlock_run_dir(run_dir, remove_if_empty=created)


def completed_epochs(run_dir):
    """Epochs an interrupted run's backup holds (Keras BackupAndRestore metadata), or 0."""
    path = os.path.join(run_dir, BACKUP_DIR, BACKUP_METADATA)
    if not os.path.exists(path):
        return 0
    try:
        return int(read_json(path).get("epoch", 0))
    except (RunError, TypeError, ValueError):
        return 0


def finish_run_dir(run_dir):
    """After metrics.json: drop the backup (the run is finished) and release the lock."""
    shutil.rmtree(os.path.join(run_dir, BACKUP_DIR), ignore_errors=True)
    unlock_run_dir(run_dir)


# ------------------------------------------------------------------ loading


# A .keras archive is stored uncompressed (Keras writes ZIP_STORED): members
# that inflate to far more than the file's size are a zip bomb.  Keras's own
# guard starts at 4 GiB per member; ours counts the whole archive.
ZIP_EXPANSION_LIMIT = 20
ZIP_FLOOR_BYTES = 64 * 2 ** 20


def check_model_file(path, *, follow=False):
    """Refuse a model file that is not a regular file, or a .keras zip that inflates too far.

    Args:
        path: a .keras (zip) or .h5 file.
        follow: accept a symbolic link (a user's own file). Defaults to False.

    Raises:
        RunError: naming `path`.
    """
    import zipfile
    try:
        with zio.open_regular(path, "rb", follow=follow) as f:
            size = os.fstat(f.fileno()).st_size
            if not zipfile.is_zipfile(f):
                return
            try:
                with zipfile.ZipFile(f) as archive:
                    inflated = sum(info.file_size for info in archive.infolist())
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError):
                raise RunError(f"Model file is damaged and cannot be loaded: {path}") from None
    except FileNotFoundError:
        raise RunError(f"File not found: {path}") from None
    except RunError:
        raise
    except ValueError as err:
        raise RunError(str(err)) from None
    if inflated > ZIP_FLOOR_BYTES and inflated > ZIP_EXPANSION_LIMIT * max(size, 1):
        raise RunError(f"Model file inflates to {inflated} bytes from {size} (more than "
                       f"{ZIP_EXPANSION_LIMIT} times its size): a zip bomb, not loaded: {path}")


def load_model(path):
    """`keras.saving.load_model` with every zoo custom object registered first.

    `safe_mode` stays on: a `.keras` file with a Lambda layer is refused.
    A missing or damaged file raises `RunError` naming it.
    """
    import keras

    import zoo.models.layers  # noqa: F401  (registers the zoo's custom objects)
    import zoo.schedules  # noqa: F401  (and the schedules: OneCycle)
    import zoo.losses  # noqa: F401  (and losses)
    if not os.path.lexists(path):
        raise RunError(f"File not found: {path}")
    check_model_file(path)
    try:
        return keras.saving.load_model(path)
    except (OSError, EOFError) as err:
        raise RunError(f"Model file is damaged and cannot be loaded ({err}): {path}") from None
    except (KeyError, RecursionError, TypeError, AttributeError) as err:
        # A member missing (config.json), nested too deep or of the wrong type.
        raise RunError(f"Model file is damaged and cannot be loaded ({type(err).__name__}: "
                       f"{str(err)[:200]}): {path}") from None
    except ValueError as err:
        message = str(err)
        if "zip" in message.lower() or "File not found" in message:
            raise RunError(f"Model file is damaged and cannot be loaded: {path}") from None
        raise
    except Exception as err:  # zipfile.BadZipFile and h5py errors have no common base
        if type(err).__name__ in ("BadZipFile", "LargeZipFile"):
            raise RunError(f"Model file is damaged and cannot be loaded: {path}") from None
        raise


def load_run(run_dir):
    """(RunConfig, keras model) of a finished run directory."""
    run_dir = os.path.abspath(run_dir)
    if not os.path.isdir(run_dir):
        raise RunError(f"run_dir holds no finished run (it does not exist or is not a directory). "
                       f"Received: run_dir={run_dir!r}")
    path = os.path.join(run_dir, MODEL_FILE)
    if not os.path.exists(path) and _failed(run_dir):
        raise RunError(f"run_dir holds a failed run ({_failed(run_dir)}); its last good model "
                       f"is checkpoints/best.keras. Received: run_dir={run_dir!r}")
    if not os.path.exists(path):
        raise RunError(f"run_dir holds no finished run (no {MODEL_FILE}). "
                       f"Received: run_dir={run_dir!r}")
    config = read_config(run_dir)
    if config.input_shape is None:
        raise RunError(f"{CONFIG_FILE} is damaged: it records no input_shape. "
                       f"Received: run_dir={run_dir!r}")
    return config, load_model(path)


def spec_of(config):
    """The `ModelSpec` a run's data pipeline and hooks follow.

    A registered run gets its own spec; any other run (a user's model, a
    fine-tuned backbone) gets a spec made from what config.json records.
    """
    from zoo.registry import custom_spec, get_spec, list_models
    if config.registered and config.model in list_models():
        return get_spec(config.model)
    return custom_spec(config.model, input_shape=tuple(config.input_shape or ()),
                       task=config.task, input_kind=config.input_kind)
