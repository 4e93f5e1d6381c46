"""The device mesh and shardings: data-parallel over a one-axis mesh of all devices.

``jax.jit`` with ``NamedSharding`` (rather than the maintenance-mode ``jax.pmap``):
the batch is split along its leading axis, the training state is replicated, and
XLA inserts the cross-device reductions, so batch statistics and gradients are
those of the global batch whatever the device count.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices: list | None = None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh, leading_axes: int = 0) -> NamedSharding:
    """Splits the batch axis, which follows ``leading_axes`` unsplit axes."""
    return NamedSharding(mesh, PartitionSpec(*([None] * leading_axes), DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """A global batch must split evenly over the devices; names the nearest sizes that do."""
    n = mesh.size
    if batch_size % n:
        lower, upper = batch_size // n * n, (batch_size // n + 1) * n
        options = " or ".join(str(b) for b in (lower, upper) if b > 0)
        raise ValueError(f"--config.train.batch_size={batch_size} does not split over {n} devices; use {options}")
