"""Joining a multi-process run (``jax.distributed``, before any other JAX call) with bounded waits
and one error line for each way it fails, and the check that every process was started with the
same flags."""

import os
import socket
import threading
import time
import zlib
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

from dcgan_jax.gan import RunError
from dcgan_jax.gan.config import flatten
from dcgan_jax.run import writers


class DistributedError(RunError, RuntimeError):
    """A process could not join its multi-process run."""


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: int = 300,
) -> bool:
    """Joins a multi-process run when flags ask for one or SLURM started several tasks (before any
    other JAX call); returns whether it did. An unreachable coordinator is an error, not a hang."""
    explicit = (
        coordinator_address is not None or num_processes is not None or process_id is not None
    )
    if not explicit and int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return False
    if explicit and None in (coordinator_address, num_processes, process_id):
        raise DistributedError(
            "a multi-process run needs all of --coordinator_address, --num_processes and "
            "--process_id "
            f"(got {coordinator_address}, {num_processes}, {process_id}); under SLURM give none "
            "of them"
        )
    if explicit and not 0 <= process_id < num_processes:
        raise DistributedError(
            f"--process_id={process_id}: a process of {num_processes} is numbered 0 .. "
            f"{num_processes - 1}"
        )
    if explicit and process_id != 0:
        # XLA aborts the process (no Python error) when it cannot reach the coordinator; say why
        # first.
        _wait_for_coordinator(coordinator_address, process_id, timeout_s)
    where = coordinator_address or "the address SLURM provides"
    late = (
        f"process {process_id} could not join the run coordinated at {where} within {timeout_s} s"
    )
    # XLA aborts the process when the others do not all come (the coordinator alone, a process
    # whose peers died): the error line comes first, from a watchdog a little before XLA's limit.
    absent = f"{late}: not all {num_processes or 'the'} processes came; start each with the same"
    watchdog = threading.Timer(
        timeout_s, writers.fail, [f"{absent} --coordinator_address and --num_processes"]
    )
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(
            coordinator_address, num_processes, process_id, initialization_timeout=timeout_s + 30
        )
    except Exception as e:  # XLA reports an unreachable coordinator as a generic error.
        raise DistributedError(f"{late}: {e}") from e
    finally:
        watchdog.cancel()
    return True


def check_same_run(config, workdir: Path) -> None:
    """A DistributedError naming the flags whose values differ between the processes of a run (a
    command edited for one of them): they would train different runs in lockstep, and JAX would
    stop them with an assertion or leave them waiting in a collective."""
    if jax.process_count() == 1:
        return
    flags = {"--workdir": str(workdir.absolute())}
    flags |= {f"--config.{field}": value for field, value in flatten(config).items()}
    hashes = np.array([zlib.crc32(repr(value).encode()) for value in flags.values()], np.int64)
    everyone = np.asarray(multihost_utils.process_allgather(hashes))
    differing = [
        flag for flag, column in zip(flags, everyone.T, strict=True) if min(column) < max(column)
    ]
    if differing:
        mine = ", ".join(f"{flag}={flags[flag]}" for flag in differing)
        raise DistributedError(
            f"the processes of this run were started with different {', '.join(differing)} "
            f"(process {jax.process_index()}: {mine}); start every process with the same flags"
        )


def _wait_for_coordinator(address, process_id, timeout_s):
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
                    f"process {process_id} could not join the run coordinated at {address} within "
                    f"{timeout_s} s "
                    f"({e}); is process 0 running, and is the address reachable from this host?"
                ) from e
            time.sleep(0.5)
