"""A quiet start for the `zoo` command: TensorFlow's known start-up lines filtered out.

TensorFlow's C++ runtime writes a few informational lines to file
descriptor 2 while `import tensorflow` loads its shared libraries, before it
has read `TF_CPP_MIN_LOG_LEVEL` (absl's "before InitializeLog" notice, the
oneDNN note, the CPU-feature note, and, for the GPU build on a machine
without one, the CUDA-plugin registration notes). Python's logging and
warnings filters cannot reach them, so while TensorFlow loads, fd 2 goes into
a pipe; a thread passes every line on except those known ones. Anything else
(a real error, a user's own output) is written to the terminal as it comes.

`zoo.export` uses the same filter while TFLite's converter quantizes (it
reports its settings on fd 2).

`--debug` or ZOO_DEBUG=1 turns all of this off.
"""

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import threading

DEBUG_ENV = "ZOO_DEBUG"

# Each is a whole line TensorFlow prints at start-up on a healthy machine.
_GLOG = r"[IWE]\d{4} [\d:.]+\s+\d+ "
STARTUP_NOISE = [re.compile(pattern) for pattern in (
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    _GLOG + r"port\.cc:\d+\] oneDNN custom operations are on\.",
    _GLOG + r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized to use",
    r"To enable the following instructions: .* rebuild TensorFlow with the appropriate "
    r"compiler flags\.",
    # The GPU build ([gpu] extra) on a machine without a GPU or CUDA driver:
    _GLOG + r"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine",
    _GLOG + r"cuda_(dnn|fft|blas)\.cc:\d+\] Unable to register cu(DNN|FFT|BLAS) factory",
    _GLOG + r"(computation_placer|cuda_executor)\.cc:\d+\] .*already registered",
    # TFLite's quantizer (converting with --quantize) reports its settings:
    r"fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, "
    r"output_inference_type: \w+$",
)]


def is_noise(line):
    """Whether `line` (text, no newline) is one of TensorFlow's known start-up lines."""
    return any(pattern.match(line) for pattern in STARTUP_NOISE)


def _forward(read_fd, write_fd):
    """Copy lines from `read_fd` to `write_fd` until end of file, dropping known noise."""
    pending = b""
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while True:
            chunk = pipe.read(65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = [line + b"\n" for line in lines
                    if not is_noise(line.decode("utf-8", "replace"))]
            if kept:
                os.write(write_fd, b"".join(kept))
    if pending and not is_noise(pending.decode("utf-8", "replace")):
        os.write(write_fd, pending)


def _flush_c_streams():
    try:
        import ctypes
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no C library to ask (not Linux/macOS)
        pass


class _StderrFilter:
    """File descriptor 2 (C++ and Python alike) through `is_noise` from `start` to `stop`."""

    def __init__(self):
        self._lock = threading.Lock()
        self._saved = None
        self._thread = None

    def start(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._thread = threading.Thread(target=_forward, args=(read_fd, self._saved),
                                        daemon=True, name="zoo-stderr-filter")
        self._thread.start()
        return self

    def stop(self):
        with self._lock:
            if self._saved is None:
                return
            with contextlib.suppress(ValueError, OSError):
                sys.stderr.flush()
            _flush_c_streams()  # a C library's buffered writes to stderr land in the pipe
            os.dup2(self._saved, 2)  # closes the pipe's only write end: the thread reads to its end
            self._thread.join(timeout=10)
            os.close(self._saved)
            self._saved = None


@contextlib.contextmanager
def filtered_stderr():
    """Within the block, file descriptor 2 (C++ and Python alike) passes through `is_noise`."""
    stderr_filter = _StderrFilter().start()
    try:
        yield
    finally:
        stderr_filter.stop()


class _QuietLoader(importlib.abc.Loader):
    """The `tensorflow` package's own loader, run with fd 2 filtered."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        # The module keeps its real loader (resource readers, reloads).
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        with filtered_stderr():
            self.loader.exec_module(module)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` once, the normal way, and has it load quietly."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def debug_requested(flag=False):
    """Whether the user asked to see everything (`--debug` or ZOO_DEBUG=1)."""
    return bool(flag) or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")


def quiet_tensorflow(debug=False):
    """Prepare the process for a quiet TensorFlow start (call before anything imports it).

    Without `debug`: C++ log lines below ERROR are hidden (TF_CPP_MIN_LOG_LEVEL
    unless the user set it) and the known start-up lines are filtered while
    `tensorflow` loads. With `debug`: nothing is hidden, and child processes
    (distributed workers) are told so through ZOO_DEBUG.
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if debug:
        os.environ[DEBUG_ENV] = "1"
        return
    # 3 also hides C++ "E0000" lines that successful runs print (grappler's
    # remapper, oneDNN notes); real failures still surface as Python errors.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules and not any(
            isinstance(finder, _QuietTensorFlowFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())


MISSING_TENSORFLOW = ("TensorFlow is not installed; install zoo-keras with an extra that "
                      "brings it: pip install 'zoo-keras[cpu]' (or 'zoo-keras[gpu]' on a "
                      "machine with an NVIDIA GPU)")


def tensorflow_missing(err):
    """Whether `err` is the ModuleNotFoundError of a missing `tensorflow` package."""
    return isinstance(err, ModuleNotFoundError) and err.name == "tensorflow"
