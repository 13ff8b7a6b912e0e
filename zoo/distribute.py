"""Distribution strategies by name, and batch arithmetic.

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

Processes, ports and TF_CONFIG live in `zoo.cluster`; the distribution
flags (`--workers`, `--per-replica-batch`, `--scale-lr`) in `zoo.cli`.
This module imports no TensorFlow at import time.
"""

import os

from zoo import checks
from zoo.cluster import check_port_free, cluster_tasks, connect_timeout, parse_tf_config, \
    wait_for_address

STRATEGIES = ("default", "cpu", "one_device", "mirrored", "multi_worker", "tpu")

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


def _multi_worker_strategy():
    import tensorflow as tf
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise ValueError("strategy='multi_worker' needs a cluster: set TF_CONFIG on every "
                         "machine, or pass --workers K (workers=K) for K local processes. "
                         "Received: TF_CONFIG unset")
    config = parse_tf_config(text)
    task = config["task"]
    own_address = config["cluster"][task["type"]][task["index"]]
    check_port_free(own_address, what=f"{task['type']} {task['index']} in TF_CONFIG")
    timeout = connect_timeout()
    # The server starts here; the first collective (the variables' initial
    # broadcast) then blocks until every task is up, so wait for their
    # addresses first and fail with the one that does not answer.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    for job, index, address in cluster_tasks(config):
        if address != own_address:
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
    effective_rate = learning_rate
    if scale_lr:
        effective_rate = checks.positive_float("learning_rate", learning_rate) * global_batch \
            / reference
    return {"global_batch_size": global_batch, "per_replica_batch_size": global_batch // replicas,
            "replicas": replicas, "learning_rate": effective_rate, "scale_lr": bool(scale_lr),
            "reference_batch_size": reference}
