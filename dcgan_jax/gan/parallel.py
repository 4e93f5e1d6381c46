"""A one-axis data-parallel mesh over every device of every process: ``jax.jit`` with
``NamedSharding`` splits the batch and replicates the state, so BatchNorm statistics and gradients
are the global batch's whatever the device count (docs/distributed.md)."""

from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices: list | None = None) -> Mesh:
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh, leading_axes: int = 0) -> NamedSharding:
    """Splits the batch axis, which follows ``leading_axes`` unsplit axes."""
    return NamedSharding(mesh, PartitionSpec(*([None] * leading_axes), DATA_AXIS))


def global_array(
    local_rows: np.ndarray, sharding: NamedSharding, global_shape: tuple[int, ...]
) -> jax.Array:
    """A global array assembled from each process's own rows (no copy of other processes' data)."""
    return jax.make_array_from_process_local_data(sharding, local_rows, global_shape)


def to_host(tree: Any) -> Any:
    """NumPy copies of replicated arrays; works when other processes hold devices too."""
    return jax.tree.map(
        lambda x: np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) else x), tree
    )


def compile_lowered(lowered, cpu_options: dict[str, str]):
    """``lowered.compile()``, with XLA's ``cpu_options`` on the CPU where this XLA knows them."""
    if jax.default_backend() == "cpu":
        try:
            return lowered.compile(compiler_options=cpu_options)
        except jax.errors.JaxRuntimeError as e:
            if "option" not in str(e):
                raise
            logging.warning(
                "Compiling without %s, which this XLA does not take: %s", cpu_options, e
            )
    return lowered.compile()
