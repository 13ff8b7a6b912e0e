"""Distribution strategies by name, TF_CONFIG checks, and the distribution flags.

    default       whatever strategy is in scope (none: one device)
    cpu           OneDeviceStrategy on /cpu:0
    one_device    OneDeviceStrategy on the first GPU, else the CPU
    mirrored      MirroredStrategy over all GPUs, or over the logical CPU
                  devices set up by `configure_cpu_devices` (for tests)
    multi_worker  MultiWorkerMirroredStrategy from TF_CONFIG (a real cluster)
                  or from `--workers K` (K local processes, `zoo.launch`)
    tpu           TPUStrategy from a TPUClusterResolver

`multi_worker` and `tpu` train with the custom loop of `zoo.distributed_loop`
(Keras 3 `fit` fails under them); every other strategy uses `model.fit`.

Batch semantics: a batch size (`--batch-size`, a recipe's) is the GLOBAL
batch, Keras's convention; each replica gets global / replicas.
`--per-replica-batch N` makes the global batch N x replicas instead, and
`--scale-lr` applies the linear scaling rule (Goyal et al. 2017) to the
learning rate.  `batch_plan` does the arithmetic; `zoo.training.plan`
records the result in config.json.

This module imports no TensorFlow at import time: the CLI uses its argument
helpers for `--help`.
"""

import json
import os
import socket
import time

from zoo import checks

STRATEGIES = ("default", "cpu", "one_device", "mirrored", "multi_worker", "tpu")
# Seconds a worker waits for the other tasks' addresses to accept connections.
CONNECT_TIMEOUT = 120.0
# Set by `zoo.launch` in the processes it starts (their worker index).
LOCAL_WORKER_ENV = "ZOO_LOCAL_WORKER"

# One strategy object per name and process: a MultiWorkerMirroredStrategy or
# TPUStrategy can be created only once per process (it starts a server).
_STRATEGIES = {}


def configure_cpu_devices(n):
    """Split the CPU into `n` logical devices; must run before TensorFlow starts its runtime."""
    import tensorflow as tf
    n = checks.positive_int("n", n)
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError as err:
        raise RuntimeError("configure_cpu_devices must be called before TensorFlow "
                           "initialises its devices (before any tensor is created).") from err
    return [d.name for d in tf.config.list_logical_devices("CPU")]


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
    cluster, task = config["cluster"], config["task"]
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f"TF_CONFIG 'cluster' must map job names to lists of 'host:port'. "
                         f"Received: cluster={cluster!r}")
    for job, addresses in cluster.items():
        if job not in ("chief", "worker", "evaluator", "ps") or not isinstance(addresses, list) \
                or not addresses:
            raise ValueError(f"TF_CONFIG cluster job '{job}' must be chief or worker with a "
                             f"non-empty list of 'host:port'. Received: {job}={addresses!r}")
        for address in addresses:
            split_address(address, what=f"TF_CONFIG cluster['{job}']")
    if "chief" in cluster and len(cluster["chief"]) != 1:
        raise ValueError(f"TF_CONFIG cluster may have one chief. Received: "
                         f"chief={cluster['chief']!r}")
    if not isinstance(task, dict):
        raise ValueError(f"TF_CONFIG 'task' must be an object with 'type' and 'index'. "
                         f"Received: task={task!r}")
    for key in ("type", "index"):
        if key not in task:
            raise ValueError(f"TF_CONFIG 'task' has no '{key}' key. Received: task={task!r}")
    if task["type"] not in cluster:
        raise ValueError(f"TF_CONFIG task type '{task['type']}' is not a job of the cluster "
                         f"({', '.join(cluster)}). Received: task={task!r}")
    index = task["index"]
    if isinstance(index, bool) or not isinstance(index, int) or not \
            0 <= index < len(cluster[task["type"]]):
        raise ValueError(f"TF_CONFIG task index must be an integer in [0, "
                         f"{len(cluster[task['type']])}) for job '{task['type']}'. "
                         f"Received: index={index!r}")
    return config


def split_address(address, *, what="address"):
    """("host", port) of a "host:port" string; ValueError naming `what` otherwise."""
    host, sep, port = str(address).rpartition(":")
    if not isinstance(address, str) or not sep or not host or not port.isdigit() \
            or not 0 < int(port) < 65536:
        raise ValueError(f"{what} must hold 'host:port' addresses. Received: {address!r}")
    return host.strip("[]"), int(port)


def cluster_tasks(config):
    """[(job, index, address)] of a parsed TF_CONFIG, the chief first."""
    order = sorted(config["cluster"], key=lambda job: (job != "chief", job))
    return [(job, i, address) for job in order if job in ("chief", "worker")
            for i, address in enumerate(config["cluster"][job])]


def _is_local(host):
    return host in ("127.0.0.1", "localhost", "::1", socket.gethostname())


def check_port_free(address, *, what="this task"):
    """Raise `ValueError` if a local `address` ("host:port") is already bound.

    Only loopback is probed (a port bound on all interfaces is busy on
    127.0.0.1 too); addresses of other hosts are theirs to check.
    """
    host, port = split_address(address)
    if not _is_local(host):
        return
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind(("127.0.0.1", port))
    except OSError as err:
        raise ValueError(f"Port {port} of {what} ({address} in TF_CONFIG) is already in use "
                         f"({err.strerror}); stop the process holding it or choose another "
                         f"port. Received: address={address!r}") from None
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


def _connect_timeout():
    text = os.environ.get("ZOO_CONNECT_TIMEOUT")
    if text is None:
        return CONNECT_TIMEOUT
    try:
        return checks.positive_float("ZOO_CONNECT_TIMEOUT", float(text))
    except ValueError:
        raise ValueError(f"ZOO_CONNECT_TIMEOUT must be a positive number of seconds. "
                         f"Received: ZOO_CONNECT_TIMEOUT={text!r}") from None


def _multi_worker_strategy():
    import tensorflow as tf
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise ValueError("strategy='multi_worker' needs a cluster: set TF_CONFIG on every "
                         "machine, or pass --workers K (workers=K) for K local processes. "
                         "Received: TF_CONFIG unset")
    config = parse_tf_config(text)
    task = config["task"]
    me = config["cluster"][task["type"]][task["index"]]
    check_port_free(me, what=f"{task['type']} {task['index']}")
    timeout = _connect_timeout()
    # The server starts here; the first collective (the variables' initial
    # broadcast) then blocks until every task is up, so wait for their
    # addresses first and fail with the one that does not answer.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    for job, index, address in cluster_tasks(config):
        if address != me:
            wait_for_address(address, timeout=timeout, what=f"{job} {index}")
    return strategy


def _tpu_strategy():
    import tensorflow as tf
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.NotFoundError) as err:
        raise ValueError(f"strategy='tpu' but no TPU is reachable from this machine: {err}") \
            from err
    return tf.distribute.TPUStrategy(resolver)


def get_strategy(strategy=None):
    """A `tf.distribute.Strategy` from a name, a strategy object, or None (default).

    Named strategies are made once per process (a multi-worker or TPU
    strategy cannot be made twice).
    """
    import tensorflow as tf
    if strategy is None or strategy == "default":
        return tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    checks.choice("strategy", strategy, STRATEGIES)
    if strategy in _STRATEGIES:
        return _STRATEGIES[strategy]
    if strategy == "cpu":
        made = tf.distribute.OneDeviceStrategy("/cpu:0")
    elif strategy == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        made = tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    elif strategy == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        made = tf.distribute.MirroredStrategy(devices)
    elif strategy == "multi_worker":
        made = _multi_worker_strategy()
    else:
        made = _tpu_strategy()
    _STRATEGIES[strategy] = made
    return made


# Families that cannot train under some strategies: (strategies, why).
UNSUPPORTED = {
    "gan": (("mirrored", "multi_worker", "tpu"),
            "the generator's optimizer is built inside the first distributed step, which "
            "tf.distribute refuses (Keras's own fit fails the same way)"),
}


def _strategy_name(strategy):
    if strategy is None or isinstance(strategy, str):
        return strategy or "default"
    names = {"MirroredStrategy": "mirrored", "MultiWorkerMirroredStrategy": "multi_worker",
             "CollectiveAllReduceStrategy": "multi_worker", "TPUStrategy": "tpu",
             "OneDeviceStrategy": "one_device"}
    return names.get(type(strategy).__name__, type(strategy).__name__)


def check_family(family, strategy, *, model=None):
    """Raise `ValueError` if models of `family` cannot train under `strategy`."""
    refused, why = UNSUPPORTED.get(family, ((), ""))
    name = _strategy_name(strategy)
    if name in refused:
        allowed = ", ".join(s for s in STRATEGIES if s not in refused)
        raise ValueError(f"Model {model or family!r} (family {family}) cannot train under "
                         f"strategy={name!r}: {why}. Strategies it supports: {allowed}. "
                         f"Received: strategy={name!r}")


def uses_custom_loop(strategy):
    """Whether `strategy` trains with `zoo.distributed_loop` instead of `model.fit`.

    Keras 3 `model.fit` fails under MultiWorkerMirroredStrategy
    (keras-team/keras issue 20585: "Attempt to convert a value (PerReplica...)
    with an unsupported type") and is reported broken under TPUStrategy on
    TPU VMs (keras-team/keras issue 19448).  Once they are fixed, switching
    back to `fit` is one line: return False here.
    """
    import tensorflow as tf
    return isinstance(strategy, (tf.distribute.MultiWorkerMirroredStrategy,
                                 tf.distribute.TPUStrategy))


def is_chief(strategy=None):
    """Whether this process writes the run directory (always, outside multi-worker)."""
    if strategy is None or isinstance(strategy, str):
        return is_chief_task(strategy)
    extended = getattr(strategy, "extended", None)
    return bool(getattr(extended, "should_checkpoint", True))


def is_chief_task(strategy=None):
    """`is_chief` from a strategy name and TF_CONFIG, without TensorFlow.

    The chief is the "chief" task, or worker 0 in a cluster without one.
    """
    if strategy != "multi_worker" or not os.environ.get("TF_CONFIG"):
        return True
    config = parse_tf_config(os.environ["TF_CONFIG"])
    task = config["task"]
    if task["type"] == "chief":
        return True
    return task["type"] == "worker" and task["index"] == 0 and "chief" not in config["cluster"]


# ------------------------------------------------------------------ batch semantics


def batch_plan(*, batch_size, replicas, per_replica_batch=None, scale_lr=False,
               learning_rate=None, reference_batch=None):
    """Global and per-replica batch and the effective learning rate.

    Args:
        batch_size: the global batch (the recipe's or `--batch-size`).
        replicas: replicas in sync (devices x workers).
        per_replica_batch: batch per replica; the global batch becomes
            per_replica_batch x replicas. Defaults to None.
        scale_lr: multiply the learning rate by global / `reference_batch`
            (linear scaling rule). Defaults to False.
        learning_rate: the recipe's learning rate (for `reference_batch`). Defaults to None.
        reference_batch: the batch `learning_rate` was chosen for; defaults to `batch_size`.

    Returns:
        {"global_batch_size", "per_replica_batch_size", "replicas",
         "learning_rate" (effective), "scale_lr"}.
    """
    replicas = checks.positive_int("replicas", replicas)
    batch_size = checks.positive_int("batch_size", batch_size)
    per_replica_batch = checks.positive_int("per_replica_batch", per_replica_batch,
                                            allow_none=True)
    if per_replica_batch is not None:
        global_batch = per_replica_batch * replicas
    else:
        global_batch = batch_size
        if global_batch % replicas:
            raise ValueError(f"The global batch size must be divisible by the number of "
                             f"replicas ({replicas}), since each replica gets global / "
                             f"replicas examples; choose a multiple of {replicas} or pass "
                             f"per_replica_batch (--per-replica-batch). Received: "
                             f"batch_size={global_batch}, replicas={replicas}")
    reference = reference_batch or batch_size
    lr = learning_rate
    if scale_lr:
        lr = checks.positive_float("learning_rate", learning_rate) * global_batch / reference
    return {"global_batch_size": global_batch, "per_replica_batch_size": global_batch // replicas,
            "replicas": replicas, "learning_rate": lr, "scale_lr": bool(scale_lr),
            "reference_batch_size": reference}


# ------------------------------------------------------------------ CLI helpers (no TensorFlow)


def add_distribute_arguments(parser):
    """Add --workers, --per-replica-batch and --scale-lr to an argparse parser."""
    def positive(text):
        import argparse
        try:
            return checks.positive_int("value", int(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") \
                from None

    def workers(text):
        import argparse
        try:
            return int(text)  # range checked by distribute_options (one message)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None

    group = parser.add_argument_group("distribution")
    group.add_argument("--workers", type=workers, metavar="K",
                       help="rehearse multi_worker on this machine: K local worker processes "
                            "on 127.0.0.1 with a generated TF_CONFIG (chief = worker 0)")
    group.add_argument("--per-replica-batch", type=positive, metavar="N",
                       help="batch per replica; the global batch becomes N x replicas "
                            "(default: --batch-size is the global batch)")
    group.add_argument("--scale-lr", action="store_true",
                       help="linear scaling rule: learning rate x global batch / the "
                            "recipe's batch")


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


def distribute_options(args):
    """`zoo.train` / `plan` keyword arguments from `add_distribute_arguments` flags.

    Validates --workers (>= 1, only with multi_worker, which it implies) and
    that --per-replica-batch and --batch-size are not both given.
    """
    workers = getattr(args, "workers", None)
    strategy = check_workers(workers, getattr(args, "strategy", None))
    per_replica = getattr(args, "per_replica_batch", None)
    if per_replica is not None and getattr(args, "batch_size", None) is not None:
        raise ValueError(f"Pass either --batch-size (the global batch) or --per-replica-batch, "
                         f"not both. Received: batch_size={args.batch_size}, "
                         f"per_replica_batch={per_replica}")
    options = {"per_replica_batch": per_replica, "scale_lr": bool(getattr(args, "scale_lr", False))}
    if strategy is not None:
        options["strategy"] = strategy
    return options


def in_local_worker():
    """Whether this process is one of the workers `zoo.launch` started."""
    return LOCAL_WORKER_ENV in os.environ
