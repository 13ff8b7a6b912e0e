"""Distribution strategy resolution by name.

    cpu           OneDeviceStrategy on /cpu:0
    one_device    OneDeviceStrategy on the first GPU, else the CPU
    mirrored      MirroredStrategy over all GPUs, or over the logical CPU
                  devices set up by `configure_cpu_devices` (for tests)
    multi_worker  MultiWorkerMirroredStrategy from TF_CONFIG
    tpu           TPUStrategy from a TPUClusterResolver
"""

from zoo import checks

STRATEGIES = ("default", "cpu", "one_device", "mirrored", "multi_worker", "tpu")


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


def get_strategy(strategy=None):
    """A `tf.distribute.Strategy` from a name, a strategy object, or None (default)."""
    import tensorflow as tf
    if strategy is None or strategy == "default":
        return tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    checks.choice("strategy", strategy, STRATEGIES)
    if strategy == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if strategy == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if strategy == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if strategy == "multi_worker":
        # Keras 3 `fit` fails under this strategy (keras-team/keras#20585:
        # "PerReplica ... unsupported type"); only custom loops work.
        raise ValueError("strategy='multi_worker' is not supported by Keras 3 model.fit "
                         "(keras issue 20585); use 'mirrored' on one machine.")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.NotFoundError) as err:
        raise ValueError(f"strategy='tpu' but no TPU is reachable from this machine: {err}") \
            from err
    return tf.distribute.TPUStrategy(resolver)
