"""How a run is held, stopped and judged, apart from what it computes.

- One run per workdir: a lock file naming the process that holds it. Two runs
  writing one workdir would interleave checkpoints and metrics. A lock left by a
  killed run is stale when its process no longer exists on this host, and is
  then taken over.
- Stop requests: SIGTERM and SIGINT become a request the loop honours at the end
  of a step, and every process of a multi-process run agrees on the step.
- The time budget (``train.max_seconds``).
- The divergence policy (``train.on_divergence``): stop, or go back to the last
  good checkpoint with lower learning rates.
- ``status.json``: where a run stopped and why, what a sweep reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from dcgan_jax.config import RunError

LOCK_NAME = ".lock"


class WorkdirLockedError(RunError, RuntimeError):
    """Another live run holds the workdir."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Exists, owned by someone else.
        return True
    return True


def _try_create(path: Path, owner: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(owner, f)
    return True


@contextlib.contextmanager
def hold(workdir: str | Path) -> Iterator[Path]:
    """Holds ``workdir/.lock`` for the duration; raises WorkdirLockedError if a live run holds it."""
    path = Path(workdir) / LOCK_NAME
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    while not _try_create(path, owner):
        try:
            holder = json.loads(path.read_text())
        except (OSError, ValueError):
            holder = {}  # Unreadable: half-written by a process killed while creating it.
        same_host = holder.get("host") == owner["host"]
        if same_host and isinstance(holder.get("pid"), int) and _alive(holder["pid"]):
            raise WorkdirLockedError(
                f"{workdir} is in use by process {holder['pid']} on {holder['host']} since {holder.get('started')} "
                f"(lock file {path}); stop that run or choose another --workdir"
            )
        if holder and not same_host:
            raise WorkdirLockedError(
                f"{workdir} is locked by process {holder.get('pid')} on host {holder.get('host')} since "
                f"{holder.get('started')} (lock file {path}); if that run is dead, delete the lock file"
            )
        path.unlink(missing_ok=True)  # Stale: its process is gone.
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def stop_requests() -> Iterator[list[str]]:
    """Turns SIGTERM (schedulers, ``kill``) and SIGINT (Ctrl-C) into a request the loop honours at
    the end of a step, so that it can write a final checkpoint. Yields the list of signal names
    received (empty off the main thread, where Python cannot install handlers)."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def request_stop(signum, frame):
        received.append(signal.Signals(signum).name)
        logging.warning("%s received: stopping with a final checkpoint.", received[-1])

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclasses.dataclass(frozen=True)
class Stop:
    signal: str | None = None  # The signal that stops the run (and the process it reached).
    out_of_time: bool = False

    def __bool__(self) -> bool:
        return self.signal is not None or self.out_of_time


def agreed_stop(signals: list[str], started: float, max_seconds: float) -> Stop:
    """Whether to stop now, as every process sees it: one process's signal or clock stops them all
    at the same step; a process stopping alone would leave the others waiting in a collective."""
    out_of_time = max_seconds > 0 and time.monotonic() - started >= max_seconds
    if jax.process_count() == 1:
        return Stop(signals[0] if signals else None, out_of_time)
    local = np.array([signal.Signals[signals[0]].value if signals else 0, out_of_time], np.int32)
    everyone = np.asarray(multihost_utils.process_allgather(local))
    received = [(process, int(sig)) for process, (sig, _) in enumerate(everyone) if sig]
    name = f"{signal.Signals(received[0][1]).name} (to process {received[0][0]})" if received else None
    return Stop(name, bool(everyone[:, 1].any()))


class TrainingDiverged(RunError, RuntimeError):
    """Non-finite losses or parameters; the message names the step, networks and metrics, and what was kept."""


@dataclasses.dataclass(frozen=True)
class Divergence:
    step: int  # The first step whose metrics (or, failing that, the step whose parameters) are non-finite.
    problems: list[str]
    learning_rates: tuple[float, float]  # G's and D's when it diverged.

    def __str__(self) -> str:
        return f"step {self.step}: non-finite {'; '.join(self.problems)}"


def check_restore_allowed(train_config, divergence: Divergence, restores_done: int, kept: str) -> None:
    """The policy of ``train.on_divergence``: TrainingDiverged unless it says restore and restores
    are left. ``kept`` says which checkpoint is the last good state."""
    if train_config.on_divergence == "restore" and restores_done < train_config.max_divergence_restores:
        return
    why = (
        ""
        if train_config.on_divergence == "stop"
        else (f" after {restores_done} restores (train.max_divergence_restores={train_config.max_divergence_restores})")
    )
    raise TrainingDiverged(
        f"training diverged at {divergence}{why}. {kept} Lower --config.optimizer.learning_rate, or set "
        "--config.train.on_divergence=restore to go on from the last good checkpoint with lower learning rates."
    )


def lowered_rates(train_config, divergence: Divergence, stored: tuple[float, float]) -> tuple[float, float]:
    """G's and D's learning rates to go on with from the last good checkpoint: lower than both its
    rates and those that diverged (a checkpoint may predate an earlier restore of this run)."""
    factor = train_config.divergence_lr_factor
    return tuple(min(s, d) * factor for s, d in zip(stored, divergence.learning_rates, strict=True))


STATUS_FILE = "status.json"


def read_status(workdir: str | Path) -> dict:
    path = Path(workdir) / STATUS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def write_status(workdir: Path, num_steps: int, step: int, stop: Stop, seconds: float) -> None:
    """``status.json``: where the run stopped and why, and its wall time over all its sessions (what a
    sweep reads to skip finished runs and to tabulate)."""
    status = {
        "step": step,
        "num_steps": num_steps,
        # A run stopped by its time budget is finished too: rerunning it would only spend another budget.
        "finished": step >= num_steps or stop.signal is None,
        "stopped_by": stop.signal,
        "wall_seconds": read_status(workdir).get("wall_seconds", 0.0) + seconds,
    }
    (workdir / STATUS_FILE).write_text(json.dumps(status, indent=2) + "\n")
