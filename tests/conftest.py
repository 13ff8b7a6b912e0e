"""Shared test setup: offline, quiet, CPU, non-interactive plots."""

import os

# Set before TensorFlow/Keras are imported by any test module.
os.environ.setdefault("ZOO_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """The `heavy` tests first (stable order otherwise).

    pytest-xdist's worksteal hands each worker a contiguous share and lets an
    idle one take the rest of another's queue: with the long tests at the front
    they are spread early and the last minutes are short tests on both workers,
    instead of one worker finishing a 60-120 s test alone.
    """
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def digits_lenet_run(tmp_path_factory):
    """One short lenet5 run on digits, shared by the export and CLI-free tests."""
    from zoo.training import train
    run_dir = tmp_path_factory.mktemp("runs") / "lenet5"
    return train("lenet5", data="digits", epochs=2, run_dir=str(run_dir), verbose=0)
