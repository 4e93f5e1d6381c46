import contextlib
import os
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

# The tests compile the same tiny model many times, in this process and in subprocesses
# (which inherit these); XLA's CPU compile dominates their time, so cache it. Set before jax loads.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(Path(tempfile.gettempdir()) / "dcgan_jax_tests_xla_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dcgan_jax.gan.config import default_config, flatten  # noqa: E402
from dcgan_jax.gan.data import DATA_DIR_ENV  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def python(*args: str, timeout: int = 300, **kwargs) -> subprocess.CompletedProcess:
    """``python ARGS...`` with this interpreter, from the repository's root (``cwd=`` to change it),
    its output captured as text."""
    kwargs.setdefault("cwd", REPO)
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )


def trees_equal(a, b) -> bool:
    """Bit-for-bit equality of two pytrees' leaves."""
    if jax.tree.structure(a) != jax.tree.structure(b):
        return False
    return all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def tiny_config(**train_overrides):
    """A DCGAN small enough to compile and train in seconds on synthetic data."""
    config = default_config()
    config.dataset.name = "synthetic"
    config.dataset.num_synthetic = 128
    config.model.base_width = 8
    config.model.latent_dim = 16
    config.train.batch_size = 16
    config.train.num_steps = 6
    config.train.log_every = 2
    config.train.sample_every = 3
    config.train.checkpoint_every = 3
    config.train.num_samples = 16
    config.eval.every = 0
    config.train.update(train_overrides)
    return config


def restore_full_state(workdir, config):
    """The newest checkpoint of a 28x28 run in ``workdir`` as a GanState."""
    from dcgan_jax.gan import loop, models
    from dcgan_jax.run import checkpoints

    target = loop.initial_state(config, models.build(config.model, (28, 28, 1)), (28, 28, 1))
    return checkpoints.Checkpointer(workdir, create=False).restore(target)


def tiny_flags(**train_overrides) -> list[str]:
    """``launch.py --experiment=fashion_dcgan`` flags that turn it into :func:`tiny_config`."""
    from dcgan_jax.run.cli import load_experiment

    base = flatten(load_experiment("fashion_dcgan", REPO / "experiments"))
    tiny = flatten(tiny_config(**train_overrides))
    return [f"--config.{name}={value}" for name, value in tiny.items() if base[name] != value]


def shared_dataset_dir(name: str) -> Path:
    """``$DCGAN_JAX_DATA_DIR/<name>`` or a skip that says how to provide it."""
    root = os.environ.get(DATA_DIR_ENV)
    if not root:
        pytest.skip(
            f"set {DATA_DIR_ENV} to a folder holding {name}/ with the IDX .gz files to run this "
            "test"
        )
    folder = Path(root) / name
    if not folder.is_dir():
        pytest.skip(f"{folder} does not exist ({DATA_DIR_ENV}={root})")
    return folder


@contextlib.contextmanager
def tmpfs(folder: Path, size: str):
    """A filesystem of its own at ``folder`` (tmpfs of ``size``, e.g. "4m"; needs the right to
    mount, as root in a container has), unmounted afterwards; or a skip that says why it cannot be
    had."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def absl_info():
    """absl's verbosity at INFO, as a command sets it, for a test that reads INFO lines logged
    outside ``train`` (which restores the verbosity it found); restored after."""
    from absl import logging

    before = logging.get_verbosity()
    logging.set_verbosity(logging.INFO)
    yield
    logging.set_verbosity(before)


def traced_peak(compute):
    """(``compute()``, the peak of the memory Python allocated for it, in bytes: NumPy's arrays
    included)."""
    tracemalloc.start()
    try:
        result = compute()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
