"""How a run is held, stopped and judged: the workdir lock (a stale one, whose process is gone, is
taken over), stop signals agreed on by every process, the time budget, the divergence policy and
``status.json`` (where a run stopped and why, what a sweep reads)."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
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

from dcgan_jax.gan import RunError
from dcgan_jax.run import writers

LOCK_NAME = ".lock"


class WorkdirError(RunError, OSError):
    """A workdir or output folder that cannot be created or written; the message names the flag."""


class WorkdirLockedError(RunError, RuntimeError):
    """Another live run holds the workdir."""


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Exists, owned by someone else.
        pass
    return True


def _try_create(path, owner):
    try:
        with open(path, "x") as f:
            json.dump(owner, f)
    except FileExistsError:
        return False
    return True


def run_folder(workdir: str | Path | None) -> Path:
    """``workdir`` as a path, ``~`` expanded; empty or None (an unset variable) is an error, never
    the current folder, where a run would spread its files."""
    if not str(workdir or "").strip():
        raise WorkdirError("--workdir is empty (an unset shell variable?): name the run's folder")
    return Path(workdir).expanduser()


def check_writable_folder(folder: Path, flag: str) -> None:
    """Creates ``folder`` if needed; a file in its place, or a folder this process cannot write (a
    read-only mount, no permission), is a WorkdirError naming ``flag``, before any work is done."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise WorkdirError(
            f"{flag}={folder}: a file is in the way (a folder is needed); choose another {flag}"
        ) from None
    except OSError as e:
        raise WorkdirError(
            f"{flag}={folder}: cannot create it ({e.strerror}); choose another {flag}"
        ) from None
    try:  # os.access says yes to root on some read-only folders: try for real.
        probe = folder / f".write_probe_{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise WorkdirError(
            f"{flag}={folder}: cannot write there ({e.strerror}); choose another {flag}"
        ) from None


def folder_change(folder: Path, started: os.stat_result) -> str | None:
    """Why ``folder`` is no longer the folder whose ``stat`` was ``started`` (moved away or removed,
    a file or another folder in its place), or None: a run would write into the new one, or into
    one that Orbax's save made anew."""
    try:
        same = os.path.samestat(folder.stat(), started)
    except OSError as e:
        return e.strerror
    return None if same else "it is no longer the folder the run started in (moved or replaced)"


@contextlib.contextmanager
def hold(workdir: str | Path, stops: StopRequests) -> Iterator[Path]:
    """Holds ``workdir/.lock`` for the duration; raises WorkdirLockedError if a live run holds
    it. ``stops``: a stop signal while the lock is made acts once it is made, and removes it."""
    path = Path(workdir) / LOCK_NAME
    owner = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        with stops.deferred(), _one_at_a_time(path):
            while not _try_create(path, owner):
                _clear_stale(path, owner, workdir)
        yield path
    finally:
        # Removed when it holds this process's record. On a folder gone read-only it stays, stale
        # (its process gone): the next run takes it over, and the error that stopped this one is
        # the one reported.
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()) == owner:
                path.unlink()


@contextlib.contextmanager
def _one_at_a_time(path):
    """Only one process at a time reads, clears or makes the lock at ``path``: else, of two runs
    started together, one can take the other's lock, still empty, for a dead run's, and both run."""
    with open(path.with_name(f"{path.name}.guard"), "a") as guard:
        # Released when the file closes, or its process dies. A file system without locks (Lustre's
        # default, NFS without its lock service): the lock file alone.
        with contextlib.suppress(OSError):
            fcntl.flock(guard, fcntl.LOCK_EX)
        yield


def _clear_stale(path, owner, workdir):
    """Removes the lock at ``path`` when its process is gone; WorkdirLockedError while it may
    live."""
    # {} when damaged: half-written by a process killed while creating it.
    holder = writers.read_record(path, {"pid": int, "host": str})
    same_host = holder.get("host") == owner["host"]
    if same_host and holder.get("pid", 0) > 0 and _alive(holder["pid"]):  # 0, -1: groups.
        raise WorkdirLockedError(
            f"{workdir} is in use by process {holder['pid']} on {holder['host']} since "
            f"{holder.get('started')} (lock file {path}); stop that run or choose another "
            "--workdir. If no run of this workdir is alive (the number now belongs to another "
            f"process, after a restart), the lock is stale: delete {path}"
        )
    if holder and not same_host:
        raise WorkdirLockedError(
            f"{workdir} is locked by process {holder.get('pid')} on host {holder.get('host')} "
            f"since {holder.get('started')} (lock file {path}); if that run is dead, delete the "
            "lock file"
        )
    path.unlink(missing_ok=True)  # Stale: its process is gone.


class Interrupted(BaseException):
    """The run was stopped by a signal, after its final checkpoint (or before training: nothing to
    save). Commands exit ``128 + signum``, so a scheduler never takes a pre-empted run for a
    finished one. A BaseException, as KeyboardInterrupt: raised from the handler during set-up, it
    must pass every ``except Exception`` (a restore would call a healthy checkpoint damaged, a cache
    reader would rebuild its cache)."""

    def __init__(self, signal_name: str, signum: int, message: str):
        super().__init__(message)
        self.signal_name, self.exit_status = signal_name, 128 + signum


class CutShort(BaseException):
    """A stop signal during work that :attr:`StopRequests.cuttable` marks: it is abandoned."""


# Schedulers and kill, Ctrl-C, a closed terminal or ssh session: each a request to stop with a
# checkpoint.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class StopRequests:
    """The :data:`STOP_SIGNALS` received. Before training, with nothing to save, the handler stops
    the set-up at once (a wait on a download included); :meth:`check` between phases catches a
    signal a library swallowed. In training it only records, and the loop stops at the end of a
    step, or cuts short work that ``cuttable`` marks (raising :class:`CutShort`)."""

    def __init__(self):
        self.received: list[str] = []
        self.training = False
        self.deferring = False
        self.cuttable = False

    def __call__(self, signum, frame) -> None:
        self.received.append(signal.Signals(signum).name)
        if self.training:
            logging.warning("%s received: stopping with a final checkpoint.", self.received[-1])
        if self.cuttable:
            raise CutShort
        self.check()

    def check(self) -> None:
        if self.received and not self.training and not self.deferring:
            name = self.received[0]
            message = f"{name} received before training started; nothing was trained or saved"
            logging.warning("%s", message)
            raise Interrupted(name, signal.Signals[name].value, message)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Signals only recorded for the duration (a step that must not stop half done), then
        acted on."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        self.check()

    def start_training(self) -> None:
        self.check()
        self.training = True


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequests]:
    """:class:`StopRequests` handling the :data:`STOP_SIGNALS` for the duration (off the main
    thread, where Python installs no handler, signals keep their default). A signal the process was
    started ignoring stays ignored: ``nohup`` (SIGHUP) and a shell's background job (SIGINT) ask
    that a closed terminal or a Ctrl-C to the shell not stop the run."""
    requests = StopRequests()
    if threading.current_thread() is not threading.main_thread():
        yield requests
        return
    handled = [sig for sig in STOP_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN]
    previous = {sig: signal.signal(sig, requests) for sig in handled}
    try:
        yield requests
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclasses.dataclass(frozen=True)
class Stop:
    signal: str | None = None  # The signal that stops the run (and the process it reached).
    out_of_time: bool = False
    signum: int = 0

    def __bool__(self) -> bool:
        return self.signal is not None or self.out_of_time

    @property
    def ended(self) -> str:
        """How the run ended, as status.json records it."""
        return "signal" if self.signal else "time_limit" if self.out_of_time else "finished"


def agreed_stop(signals: list[str], started: float, max_seconds: float) -> Stop:
    """Whether to stop now, as every process sees it: one process's signal or clock stops them all
    at the same step; a process stopping alone would leave the others waiting in a collective."""
    out_of_time = max_seconds > 0 and time.monotonic() - started >= max_seconds
    local = np.array([signal.Signals[signals[0]].value if signals else 0, out_of_time], np.int32)
    alone = jax.process_count() == 1
    everyone = local[None] if alone else np.asarray(multihost_utils.process_allgather(local))
    out_of_time = bool(everyone[:, 1].any())
    received = [(process, int(sig)) for process, (sig, _) in enumerate(everyone) if sig]
    if not received:
        return Stop(None, out_of_time)
    process, signum = received[0]
    where = "" if alone else f" (to process {process})"
    return Stop(f"{signal.Signals(signum).name}{where}", out_of_time, signum)


class TrainingDiverged(RunError, RuntimeError):
    """Non-finite losses or parameters; the message names the step, networks and metrics, and what
    was kept."""

    def __init__(self, message: str, step: int = 0):
        super().__init__(message)
        self.step = step


@dataclasses.dataclass(frozen=True)
class Divergence:
    # The first step whose metrics (or, failing that, the step whose parameters) are non-finite.
    step: int
    problems: list[str]
    learning_rates: tuple[float, float]  # G's and D's when it diverged.

    def __str__(self) -> str:
        return f"step {self.step}: non-finite {'; '.join(self.problems)}"


def divergence_advice(config, divergence: Divergence) -> str:
    """The field most likely at fault (a non-finite penalty, a weight far above its usual range,
    else the learning rate), and a policy not already in force."""
    loss, train = config.loss, config.train
    if any(p.startswith("r1_penalty") for p in divergence.problems) or loss.r1_gamma > 100:
        field = f"--config.loss.r1_gamma (now {loss.r1_gamma:g}; 0.1 to 100 is usual)"
    elif any(p.startswith("gradient_penalty") for p in divergence.problems) or loss.gp_weight > 100:
        field = f"--config.loss.gp_weight (now {loss.gp_weight:g}; 10 is usual)"
    else:
        field = f"--config.optimizer.learning_rate (now {config.optimizer.learning_rate:g})"
    if train.on_divergence == "restore":
        policy = (
            "allow more restores than "
            f"--config.train.max_divergence_restores={train.max_divergence_restores}"
        )
    else:
        policy = (
            "set --config.train.on_divergence=restore to go on from the last good checkpoint "
            "with lower rates"
        )
    return f"Lower {field}, or {policy}."


STATUS_FILE = "status.json"


STATUS_TYPES = {"step": int, "num_steps": int, "ended": str, "wall_seconds": (int, float)}


def read_status(workdir: str | Path) -> dict:
    return writers.read_record(Path(workdir) / STATUS_FILE, STATUS_TYPES)


def nothing_to_do(workdir: str | Path, num_steps: int) -> bool:
    """Whether a sweep's rerun of the run in ``workdir`` to ``num_steps`` steps would train nothing
    it wants: the run is at those steps, or it ended out of time or diverged (a rerun would spend
    its budget again, or diverge again)."""
    status = read_status(workdir)
    return status.get("ended") in ("time_limit", "diverged") or status.get("step", 0) >= num_steps


def write_status(
    workdir: Path, num_steps: int, step: int, ended: str, seconds: float, *, detail: str = ""
) -> None:
    """``status.json``: the step, how the run ended (``finished``, ``time_limit``, ``signal``,
    ``diverged``) and its wall time over all sessions. Only a signal leaves it unfinished: a
    time-limited or diverged run would only spend its budget or diverge again
    (:func:`nothing_to_do`)."""
    status = {
        "step": step,
        "num_steps": num_steps,
        "ended": ended,
        "finished": step >= num_steps or ended != "signal",
        "stopped_by": detail if ended == "signal" else None,
        "detail": detail,
        "wall_seconds": read_status(workdir).get("wall_seconds", 0.0) + seconds,
    }
    writers.write_json(workdir / STATUS_FILE, status)
