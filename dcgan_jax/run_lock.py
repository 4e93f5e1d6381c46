"""One run per workdir: a lock file naming the process that holds it.

Two runs writing one workdir would interleave checkpoints and metrics. A lock
left behind by a killed run is stale when its process no longer exists on this
host, and is then taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".lock"


class WorkdirLockedError(RuntimeError):
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
