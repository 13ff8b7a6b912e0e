"""One place for files the package writes: atomic writes and JSON.

Every file a run, a search, a callback or an export writes goes through
`atomic_write`: the content is written to a temporary file beside the target
(`NAME.partialPID`), flushed to disk, then renamed over the target, so a
reader (or a rerun after kill -9) sees the old file or the new one, never
half of one.

Durability policy (one for the whole package): a file written here is
fsync'd before the rename and its folder after it, so a finished write
survives a power cut too, not only a killed process. The cost is a few
milliseconds per file; the package writes a handful of files per epoch.
"""

import json
import math
import os

PARTIAL = ".partial"  # infix of every temporary file; run cleanup recognises it


def json_safe(obj):
    """A JSON-ready copy of `obj`.

    Tuples become lists, dict keys strings, numpy scalars Python numbers, and
    non-finite floats (NaN, inf) `None`: bare NaN is not JSON.
    """
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and not isinstance(obj, (str, bytes)):
        try:
            return json_safe(obj.item())  # numpy scalars and 0-d arrays
        except (TypeError, ValueError):
            return obj
    return obj


def temporary_path(path, *, suffix=""):
    """The temporary name `atomic_write` uses for `path` in this process.

    Args:
        path: the final path.
        suffix: ending the temporary name keeps (some writers check it, e.g.
            ".keras", ".weights.h5" or ".png"). Defaults to "".
    """
    stem = path[:-len(suffix)] if suffix and path.endswith(suffix) else path
    return f"{stem}{PARTIAL}{os.getpid()}{suffix}"


def fsync_path(path):
    """Flush a written file (or a folder's entries) to disk; silently skipped where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace(temporary, path):
    """Rename `temporary` onto `path` with the package's durability policy."""
    if os.path.isfile(temporary):
        fsync_path(temporary)
    os.replace(temporary, path)
    fsync_path(os.path.dirname(os.path.abspath(path)))
    return path


def atomic_write(path, write, *, suffix=""):
    """Call `write(temporary_path)`, then move it onto `path` (never a half file).

    A failure in `write` removes the temporary file and leaves `path` as it was.

    Args:
        path: the final path.
        write: function of the temporary path that writes the content.
        suffix: ending the temporary name keeps. Defaults to "".
    """
    temporary = temporary_path(path, suffix=suffix)
    try:
        write(temporary)
        replace(temporary, path)
    finally:
        if os.path.lexists(temporary):
            os.remove(temporary)
    return path


def write_text(path, text, *, newline=None):
    """Write `text` to `path` atomically."""
    def write(temporary):
        with open(temporary, "w", newline=newline) as f:
            f.write(text)
    return atomic_write(path, write)


def write_json(path, obj, *, indent=2, sort_keys=True):
    """Write `obj` as JSON atomically; non-finite floats are written as null."""
    text = json.dumps(json_safe(obj), indent=indent, sort_keys=sort_keys, default=str,
                      allow_nan=False)
    return write_text(path, text + "\n")


_REQUIRED = object()


def read_json(path, default=_REQUIRED):
    """The JSON value in `path`.

    Args:
        path: the file.
        default: returned when the file is missing, unreadable or not valid
            JSON. Without it those cases raise (`FileNotFoundError`, or
            `ValueError` naming the file).
    """
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        if default is not _REQUIRED:
            return default
        raise
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        if default is not _REQUIRED:
            return default
        raise ValueError(f"File is damaged (not valid JSON: {err}): {path}") from None
