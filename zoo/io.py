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

import errno
import json
import math
import os
import re
import shutil
import stat

PARTIAL = ".partial"  # infix of every temporary file; run cleanup recognises it
# The largest JSON file read (config.json, metrics.json, a --space file, ...):
# the package's own are a few kB; a bigger one is damaged or hostile.
MAX_JSON_BYTES = 10 * 2 ** 20
# What a write killed midway leaves: "NAME.partialPID[suffix]" files (this
# module) and ".partial-XXXX" scratch folders (exports).
# A folder being replaced is renamed "NAME.old-PID" for a moment (zoo.export).
LEFTOVER = re.compile(r"(?P<stem>.+)\.partial(?P<pid>\d+)(?P<suffix>.*)|\.partial-.+"
                       r"|(?P<old>.+)\.old-(?P<old_pid>\d+)")


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


def open_regular(path, mode="r", *, max_bytes=None, follow=False, **kwargs):
    """`open(path, mode)` for reading, only if `path` is a regular file (no FIFO, device, link).

    A FIFO would block `open` forever and a device (/dev/zero) would be read
    until memory runs out, so the file is opened non-blocking and checked
    with `fstat` before a byte is read.  A symbolic link is refused unless
    `follow` (a run's files never are links: one pointing outside would make
    the package read or write elsewhere).

    Args:
        path: the file.
        mode: "r" or "rb" (plus `open`'s keyword arguments). Defaults to "r".
        max_bytes: refuse a larger file. Defaults to None (no limit).
        follow: follow a symbolic link in the last component. Defaults to False.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: naming `path`, for anything else it may not be read as.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FileNotFoundError(f"File not found: {path}") from None
    except OSError as err:
        if os.path.islink(path):
            raise ValueError(f"File is a symbolic link (to {os.path.realpath(path)}), not a "
                             f"regular file; it is not read: {path}") from None
        raise ValueError(f"File cannot be read ({err.strerror or err}): {path}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = ("a folder" if stat.S_ISDIR(info.st_mode) else
                    "a FIFO" if stat.S_ISFIFO(info.st_mode) else
                    "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)
                    else "not a regular file")
            raise ValueError(f"File is {kind}, not a regular file; it is not read: {path}")
        if max_bytes is not None and info.st_size > max_bytes:
            raise ValueError(f"File is too large ({info.st_size} bytes; at most {max_bytes} "
                             f"are read): {path}")
        os.set_blocking(fd, True)
        return open(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


_REQUIRED = object()


def read_json(path, default=_REQUIRED, *, max_bytes=MAX_JSON_BYTES, follow=False):
    """The JSON value in `path` (a regular file of at most `max_bytes`).

    Args:
        path: the file.
        default: returned when the file is missing, unreadable or not valid
            JSON. Without it those cases raise (`FileNotFoundError`, or
            `ValueError` naming the file).
        max_bytes: refuse a larger file. Defaults to `MAX_JSON_BYTES` (10 MB).
        follow: read through a symbolic link. Defaults to False.
    """
    try:
        with open_regular(path, max_bytes=max_bytes, follow=follow) as f:
            return json.load(f)
    except FileNotFoundError:
        if default is not _REQUIRED:
            return default
        raise
    except RecursionError:  # json's recursive parser on a deeply nested file
        if default is not _REQUIRED:
            return default
        raise ValueError(f"File is damaged (JSON nested too deeply): {path}") from None
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        if default is not _REQUIRED:
            return default
        if str(err).endswith(f": {path}"):  # open_regular's own message
            raise
        raise ValueError(f"File is damaged (not valid JSON: {err}): {path}") from None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def remove_leftovers(folder, *, recursive=True, only=None):
    """Clean what writes killed midway left in `folder`; returns the paths handled.

    Only the package's own temporary names count: "NAME.partialPID..." whose
    process is gone (or is this one: the caller holds the folder's lock, so
    none of its writes is under way) and ".partial-*" scratch folders are
    deleted; "NAME.old-PID" (a folder moved aside while being replaced) is
    deleted, or moved back to NAME where NAME is missing.  Call it only on a
    folder whose lock you hold.  Links are never followed.

    Args:
        folder: the folder.
        recursive: clean its subfolders too. Defaults to True.
        only: a test of a leftover's name (the caller's own names only), or
            None for every leftover. Defaults to None.
    """
    removed = []
    for top, dirs, files in os.walk(folder):
        for name in list(dirs) + files:
            match = LEFTOVER.fullmatch(name)
            if not match or (only is not None and not only(name)):
                continue
            pid = match.group("pid") or match.group("old_pid")
            if pid is not None and int(pid) != os.getpid() and _alive(int(pid)):
                continue
            path = os.path.join(top, name)
            target = os.path.join(top, match.group("old")) if match.group("old") else None
            if target is not None and not os.path.lexists(target):
                # Killed between moving the old folder aside and moving the new
                # one in: the old one is still the current one.
                os.replace(path, target)
                removed.append(path)
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
                dirs.remove(name)
            else:
                try:
                    os.remove(path)
                except OSError:
                    continue
            removed.append(path)
        if not recursive:
            break
    return removed


def _exchange(first, second):
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE).

    Python has no binding for it (os.replace cannot replace a non-empty
    folder), so libc's is called through ctypes.  Returns False where the
    system or file system does not support it.
    """
    import ctypes
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second),
                 rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), second)


def restore_moved_aside(path):
    """Finish a folder replacement of `path` a killed process left half done.

    "PATH.old-PID" of a process that is gone is moved back to `path` where
    `path` is missing, and deleted otherwise.
    """
    parent, base = os.path.split(os.path.abspath(path))
    if not os.path.isdir(parent):
        return
    for name in sorted(os.listdir(parent)):
        match = LEFTOVER.fullmatch(name)
        if not match or match.group("old") != base:
            continue
        pid = int(match.group("old_pid"))
        if pid != os.getpid() and _alive(pid):
            continue
        aside = os.path.join(parent, name)
        if not os.path.lexists(path):
            os.replace(aside, path)
        else:
            shutil.rmtree(aside, ignore_errors=True)


def replace_folder(temporary, path):
    """Move the folder `temporary` to `path`; a folder already at `path` is replaced.

    `path` holds the old folder or the new one at every moment: the two are
    swapped in one atomic step where the system allows (Linux), then the old
    one (now "PATH.old-PID") is deleted.  Elsewhere the old folder is moved
    aside first, and a kill between the two renames is undone by the next
    call (`restore_moved_aside`).
    """
    restore_moved_aside(path)
    if not (os.path.isdir(path) and not os.path.islink(path)):
        return replace(temporary, path)
    aside = f"{path}.old-{os.getpid()}"
    if _exchange(temporary, path):
        fsync_path(os.path.dirname(os.path.abspath(path)))
        os.replace(temporary, aside)  # a name a later call recognises if killed below
    else:
        os.replace(path, aside)
        replace(temporary, path)
    shutil.rmtree(aside, ignore_errors=True)
    return path
