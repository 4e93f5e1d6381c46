"""Devices and processes: a one-axis data-parallel mesh over every device of every process.

``jax.jit`` with ``NamedSharding`` (rather than the maintenance-mode ``jax.pmap``):
the batch is split along its batch axis, the training state is replicated, and
XLA inserts the cross-device reductions, so BatchNorm statistics and gradients
are those of the global batch whatever the device or process count. The
training set is replicated on every device, and each device gathers its own
rows of a batch; with several processes (``jax.distributed``) every process
loads the dataset and computes the same batch indices.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dcgan_jax.config import RunError

DATA_AXIS = "data"


class DistributedError(RunError, RuntimeError):
    """A process could not join its multi-process run."""


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: int = 300,
) -> bool:
    """Joins a multi-process run when flags ask for one or SLURM started several tasks.

    Returns whether it did. Must run before any other JAX call. A coordinator that
    cannot be reached within ``timeout_s`` seconds is an error, not a hang.
    """
    explicit = coordinator_address is not None or num_processes is not None or process_id is not None
    if not explicit and int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return False
    if explicit and None in (coordinator_address, num_processes, process_id):
        raise DistributedError(
            "a multi-process run needs all of --coordinator_address, --num_processes and --process_id "
            f"(got {coordinator_address}, {num_processes}, {process_id}); under SLURM give none of them"
        )
    if explicit and process_id != 0:
        # XLA aborts the process (no Python error) when it cannot reach the coordinator; say why first.
        _wait_for_coordinator(coordinator_address, process_id, timeout_s)
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id, initialization_timeout=timeout_s)
    except Exception as e:  # XLA reports an unreachable coordinator as a generic error.
        where = coordinator_address or "the address SLURM provides"
        raise DistributedError(
            f"process {process_id} could not join the run coordinated at {where} within {timeout_s} s: {e}"
        ) from e
    return True


def _wait_for_coordinator(address: str, process_id: int, timeout_s: float) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise DistributedError(f"--coordinator_address={address}: expected host:port")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=min(5.0, timeout_s)):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise DistributedError(
                    f"process {process_id} could not join the run coordinated at {address} within {timeout_s} s "
                    f"({e}); is process 0 running, and is the address reachable from this host?"
                ) from e
            time.sleep(0.5)


def make_mesh(devices: list | None = None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh, leading_axes: int = 0) -> NamedSharding:
    """Splits the batch axis, which follows ``leading_axes`` unsplit axes."""
    return NamedSharding(mesh, PartitionSpec(*([None] * leading_axes), DATA_AXIS))


def global_array(local_rows: np.ndarray, sharding: NamedSharding, global_shape: tuple[int, ...]) -> jax.Array:
    """A global array assembled from each process's own rows (no copy of other processes' data)."""
    return jax.make_array_from_process_local_data(sharding, local_rows, global_shape)


def to_host(tree: Any) -> Any:
    """NumPy copies of replicated arrays; works when other processes hold devices too."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) else x), tree)
