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


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def digits_lenet_run(tmp_path_factory):
    """One short lenet5 run on digits, shared by the export and CLI-free tests."""
    from zoo.training import train
    run_dir = tmp_path_factory.mktemp("runs") / "lenet5"
    return train("lenet5", data="digits", epochs=2, run_dir=str(run_dir), verbose=0)
