"""Processes, ports and TF_CONFIG: the one place for a cluster's plumbing.

Used by `zoo.launch` (local multi-worker training), `zoo.distribute` (the
multi-worker strategy's TF_CONFIG checks) and `tuning.distributed` (the
tuning chief and its workers).

- ports: `free_port`, `free_ports` (picked on 127.0.0.1), `split_address`,
  `check_port_free` (a clear error instead of a hang), `wait_for_address`;
- processes: `start_child` (a child that dies with this process),
  `die_with_parent`, `stop_all`;
- TF_CONFIG: `parse_tf_config` (validated before TensorFlow sees it),
  `cluster_tasks`, `local_tf_config`, `connect_timeout`.

No TensorFlow is imported here.
"""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

from zoo import checks

LOCALHOST = "127.0.0.1"
# Seconds a task waits for the other tasks' addresses to accept connections
# (ZOO_CONNECT_TIMEOUT overrides it).
CONNECT_TIMEOUT = 120.0
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
_JOBS = ("chief", "worker", "evaluator", "ps")


# ------------------------------------------------------------------ ports


def free_ports(n, host=LOCALHOST):
    """`n` distinct free TCP ports on `host` (held open together, then released)."""
    n = checks.positive_int("n", n)
    probes = []
    try:
        for _ in range(n):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probes.append(probe)
            probe.bind((host, 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def free_port(host=LOCALHOST):
    """A free TCP port on `host`."""
    return free_ports(1, host)[0]


def split_address(address, *, what="address"):
    """("host", port) of a "host:port" string; `ValueError` naming `what` otherwise."""
    host, sep, port = str(address).rpartition(":")
    if not isinstance(address, str) or not sep or not host or not port.isdigit() \
            or not 0 < int(port) < 65536:
        raise ValueError(f"{what} must hold 'host:port' addresses. Received: {address!r}")
    return host.strip("[]"), int(port)


def _is_local(host):
    return host in _LOOPBACK_NAMES or host == socket.gethostname()


def check_port_free(address, *, what="this task",
                    advice="stop the process holding it or choose another port"):
    """Raise `ValueError` if this machine's `address` ("host:port") is already bound.

    Local names are probed on 127.0.0.1 (a port bound on all interfaces is
    busy there too); an address that is not this machine's is its owner's
    to check; port 0 (pick one later) is never busy.

    Args:
        address: "host:port" this process is about to serve on.
        what: who serves there, for the message. Defaults to "this task".
        advice: what the user should do, for the message. Defaults to
            "stop the process holding it or choose another port".
    """
    if str(address).endswith(":0"):
        return
    host, port = split_address(address, what=what)
    probe_host = LOCALHOST if _is_local(host) else host
    family = socket.AF_INET6 if ":" in probe_host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.bind((probe_host, port))
    except OSError as err:
        if err.errno == errno.EADDRNOTAVAIL or isinstance(err, socket.gaierror):
            return  # another machine's address
        raise ValueError(f"Port {port} of {what} at {host}:{port} is already in use "
                         f"({err.strerror}); {advice}. Received: address={address!r}") from None
    finally:
        probe.close()


def wait_for_address(address, *, timeout=None, what="the chief"):
    """Wait until `address` accepts TCP connections; `ValueError` naming it after `timeout` s."""
    timeout = CONNECT_TIMEOUT if timeout is None else checks.positive_float("timeout", timeout)
    host, port = split_address(address)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=2.0):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise ValueError(f"Could not reach {what} at {address} within {timeout:g} s; "
                                 f"check that it is running, the address in TF_CONFIG and "
                                 f"the firewall. Received: address={address!r}") from None
            time.sleep(0.2)


def connect_timeout():
    """Seconds to wait for the other tasks: ZOO_CONNECT_TIMEOUT, else `CONNECT_TIMEOUT`."""
    text = os.environ.get("ZOO_CONNECT_TIMEOUT")
    if text is None:
        return CONNECT_TIMEOUT
    try:
        return checks.positive_float("ZOO_CONNECT_TIMEOUT", float(text))
    except ValueError:
        raise ValueError(f"ZOO_CONNECT_TIMEOUT must be a positive number of seconds. "
                         f"Received: ZOO_CONNECT_TIMEOUT={text!r}") from None


# ------------------------------------------------------------------ processes


def die_with_parent():  # pragma: no cover  (runs in the child)
    """A `preexec_fn`: Linux sends this child SIGTERM when its parent dies, however it dies."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: Ctrl-C and normal exits still stop them
        pass


def start_child(command, **popen_kwargs):
    """`subprocess.Popen(command, ...)` of a child that dies with this process (on Linux)."""
    if sys.platform.startswith("linux"):
        popen_kwargs.setdefault("preexec_fn", die_with_parent)
    return subprocess.Popen(list(command), **popen_kwargs)


def stop_all(processes, *, timeout=10.0):
    """SIGTERM every live process, then SIGKILL those still alive after `timeout` s."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ------------------------------------------------------------------ TF_CONFIG


def parse_tf_config(text):
    """Validate a TF_CONFIG string and return it as a dict.

    Raises `ValueError` naming the missing or malformed key, before TensorFlow
    sees it (TensorFlow's own errors for a bad TF_CONFIG are a KeyError or a
    hang).

    Args:
        text: the JSON text of TF_CONFIG.

    Returns:
        {"cluster": {job: ["host:port", ...]}, "task": {"type": job, "index": i}}.
    """
    try:
        config = json.loads(text)
    except (TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err}). Received: TF_CONFIG={text!r}") \
            from None
    if not isinstance(config, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object with 'cluster' and 'task'. "
                         f"Received: TF_CONFIG={text!r}")
    for key in ("cluster", "task"):
        if key not in config:
            raise ValueError(f"TF_CONFIG has no '{key}' key; it needs 'cluster' (job -> "
                             f"addresses) and 'task' (type, index). Received: TF_CONFIG={text!r}")
    _check_cluster(config["cluster"])
    _check_task(config["task"], config["cluster"])
    return config


def _check_cluster(cluster):
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f"TF_CONFIG 'cluster' must map job names to lists of 'host:port'. "
                         f"Received: cluster={cluster!r}")
    for job, addresses in cluster.items():
        if job not in _JOBS or not isinstance(addresses, list) or not addresses:
            raise ValueError(f"TF_CONFIG cluster job '{job}' must be chief or worker with a "
                             f"non-empty list of 'host:port'. Received: {job}={addresses!r}")
        for address in addresses:
            split_address(address, what=f"TF_CONFIG cluster['{job}']")
    if "chief" in cluster and len(cluster["chief"]) != 1:
        raise ValueError(f"TF_CONFIG cluster may have one chief. Received: "
                         f"chief={cluster['chief']!r}")


def _check_task(task, cluster):
    if not isinstance(task, dict):
        raise ValueError(f"TF_CONFIG 'task' must be an object with 'type' and 'index'. "
                         f"Received: task={task!r}")
    for key in ("type", "index"):
        if key not in task:
            raise ValueError(f"TF_CONFIG 'task' has no '{key}' key. Received: task={task!r}")
    if task["type"] not in cluster:
        raise ValueError(f"TF_CONFIG task type '{task['type']}' is not a job of the cluster "
                         f"({', '.join(cluster)}). Received: task={task!r}")
    index, size = task["index"], len(cluster[task["type"]])
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size:
        raise ValueError(f"TF_CONFIG task index must be an integer in [0, {size}) for job "
                         f"'{task['type']}'. Received: index={index!r}")


def cluster_tasks(config):
    """[(job, index, address)] of a parsed TF_CONFIG's chief and workers, the chief first."""
    order = sorted(config["cluster"], key=lambda job: (job != "chief", job))
    return [(job, index, address) for job in order if job in ("chief", "worker")
            for index, address in enumerate(config["cluster"][job])]


def local_tf_config(ports, index):
    """TF_CONFIG for worker `index` of a cluster of local workers on `ports` (worker 0: chief)."""
    return {"cluster": {"worker": [f"{LOCALHOST}:{port}" for port in ports]},
            "task": {"type": "worker", "index": int(index)}}
