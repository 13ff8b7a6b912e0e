"""`--workers K`: rehearse multi-worker training with K local processes.

    zoo train resnet20 --data fashion_mnist --strategy multi_worker --workers 2

`run_local_workers` starts K copies of a command on this machine, each with
a generated TF_CONFIG (free ports on 127.0.0.1, chief = worker 0), and waits:

- the chief's output goes to this terminal; the others' to log files in a
  temporary folder (shown when one fails, removed on success);
- when a worker dies, the others are stopped at once (no process waits
  forever on a collective with a dead peer) and the run ends with an error
  naming the worker; the chief's BackupAndRestore backup stays, so the
  same command resumes the run;
- when the chief finishes, workers still running after a grace period are
  stopped; Ctrl-C stops them all;
- every worker dies with this process (PR_SET_PDEATHSIG on Linux), so even
  `kill -9` of the launcher leaves no orphans.

No TensorFlow is imported here: the launcher only starts processes.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from zoo.cluster import free_ports, local_tf_config, start_child, stop_all

# Seconds workers may keep running once the chief has finished.
GRACE_SECONDS = 30.0
# Set in the processes started here (their worker index), so they do not launch again.
LOCAL_WORKER_ENV = "ZOO_LOCAL_WORKER"


class WorkerError(RuntimeError):
    """A local worker process failed; the others were stopped."""


def _tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def _describe(code):
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def run_local_workers(command, workers, *, env=None, grace=GRACE_SECONDS, poll=0.2):
    """Run `command` as `workers` local multi-worker processes; raise if any fails.

    Args:
        command: the argv of one worker, e.g.
            `[sys.executable, "-m", "zoo.cli", "train", "mlp", "--workers", "2"]`;
            each copy gets TF_CONFIG and ZOO_LOCAL_WORKER=<index> in its
            environment (so it does not launch again).
        workers: number of processes (>= 1).
        env: base environment. Defaults to `os.environ`.
        grace: seconds the other workers may run once the chief is done.
            Defaults to 30.
        poll: seconds between checks. Defaults to 0.2.

    Returns:
        0 once every worker has exited successfully.

    Raises:
        WorkerError: a worker failed (its exit code and the tail of its
            log); all workers are stopped before this is raised.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1. Received: workers={workers!r}")
    if isinstance(command, str) or not command:
        raise TypeError(f"command must be a non-empty list of arguments. "
                        f"Received: command={command!r}")
    base = dict(os.environ if env is None else env)
    ports = free_ports(workers)
    logs = tempfile.mkdtemp(prefix="zoo-workers-")
    processes, log_paths, handles = [], [], []
    failed = None
    try:
        for index in range(workers):
            child_env = {**base, "TF_CONFIG": json.dumps(local_tf_config(ports, index)),
                         LOCAL_WORKER_ENV: str(index)}
            if index == 0:
                out, path = None, None  # the chief talks to this terminal
            else:
                path = os.path.join(logs, f"worker_{index}.log")
                out = open(path, "w")
                handles.append(out)
            log_paths.append(path)
            processes.append(start_child(command, env=child_env, stdout=out,
                                         stderr=subprocess.STDOUT if out else None))
        chief_done_at = None
        while True:
            codes = [process.poll() for process in processes]
            failures = [(index, code) for index, code in enumerate(codes)
                        if code not in (None, 0)]
            if failures:
                failed = failures[0]
                break
            if all(code == 0 for code in codes):
                break
            if codes[0] == 0:
                chief_done_at = chief_done_at or time.monotonic()
                if time.monotonic() - chief_done_at > grace:
                    break  # the chief finished and wrote the run; stragglers are stopped
            time.sleep(poll)
    finally:  # also on Ctrl-C: no worker outlives the launcher
        stop_all(processes)
        for handle in handles:
            handle.close()
    if failed is None:
        shutil.rmtree(logs, ignore_errors=True)
        return 0
    index, code = failed
    role = "the chief (worker 0)" if index == 0 else f"worker {index}"
    where = f"; its log: {log_paths[index]}" if log_paths[index] else ""
    tail = _tail(log_paths[index]) if log_paths[index] else ""
    raise WorkerError(
        f"{role} of {workers} {_describe(code)}; stopped the other workers{where}. "
        f"Run the same command again to resume from the last backup."
        + (f"\n--- last lines of {role}'s output ---\n{tail}" if tail else ""))


def check_workers(workers, strategy):
    """Validate `--workers` against `--strategy`; returns the strategy to use."""
    if workers is None:
        return strategy
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1. Received: workers={workers!r}")
    if strategy not in (None, "multi_worker"):
        raise ValueError(f"workers starts local multi_worker processes; it needs "
                         f"strategy='multi_worker' (or no strategy). Received: "
                         f"workers={workers}, strategy={strategy!r}")
    return "multi_worker"


def relaunch_command(argv):
    """The argv of one `zoo` CLI worker for the CLI arguments `argv` (without `zoo`)."""
    return [sys.executable, "-m", "zoo.cli", *argv]


def maybe_run_local_workers(args, argv=None):
    """The CLI hook: run `argv` as `args.workers` local workers, or return None.

    Returns None when `--workers` was not given or this process already is
    one of the workers; otherwise the exit code (0), after every worker has
    finished.  `WorkerError` (a RuntimeError) reports a failed worker.
    """
    workers = getattr(args, "workers", None)
    if workers is None or os.environ.get(LOCAL_WORKER_ENV) is not None:
        return None
    check_workers(workers, getattr(args, "strategy", None))
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_local_workers(relaunch_command(argv), workers)
