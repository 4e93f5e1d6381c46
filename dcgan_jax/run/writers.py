"""Where metrics and logs go: the console, ``train.log``, ``metrics.jsonl`` and TensorBoard event
files (tensorboardX: no TensorFlow), and the metrics gathered over a log interval."""

import contextlib
import errno
import json
import logging as std_logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import jax
import numpy as np
from absl import logging

from dcgan_jax.gan import loop, parallel


def write_atomically(path: Path, text: str) -> Path:
    """``text`` into ``path`` by a new file renamed into place: a reader sees all or nothing, a
    crash leaves the old file, and a link at ``path`` is replaced, never written through."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_text(text)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def write_json(path: Path, record: object) -> Path:
    """``record`` as indented JSON into ``path``, by :func:`write_atomically`."""
    return write_atomically(path, json.dumps(record, indent=2) + "\n")


def fail(message: str) -> NoReturn:
    """The one error line, and exit 2 at once: our work is done or saved by now, and a library's
    threads (TFDS retrying a download for minutes, XLA waiting for processes) must not hold the
    process at exit."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(2)


_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW


def out_of_space(error: BaseException | None) -> bool:
    """Whether ``error`` or one it came from is a full disk (or quota), however the library wrapped
    it."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(error) or "Disk quota exceeded" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def append_line(path: Path, line: str) -> None:
    """``line`` appended to ``path``, one of the run's own files: a link there is refused
    (ELOOP)."""
    with os.fdopen(os.open(path, _APPEND_FLAGS, 0o644), "a") as f:
        f.write(line + "\n")


def read_metrics(path: str | Path, values: tuple[type, ...] = (int, float)) -> list[dict]:
    """The rows of a run's ``metrics.jsonl`` (none when absent), or of another of its JSON-lines
    records whose ``values`` are of other types; a line that is not such a row with an integer step,
    as a crash or a full disk can leave one cut short, is skipped with a warning."""
    path = Path(path)
    text = path.read_text(errors="replace") if path.exists() else ""
    lines = [line for line in text.splitlines() if line.strip()]
    rows = []
    for line in lines:
        with contextlib.suppress(ValueError):
            row = json.loads(line)
            if (
                isinstance(row, dict)
                and isinstance(row.get("step"), int)
                and all(isinstance(value, values) for value in row.values())
            ):
                rows.append(row)
    if skipped := len(lines) - len(rows):
        logging.warning("%s: skipped %d lines that are not metrics rows", path, skipped)
    return rows


def read_record(path: Path, types: dict[str, type | tuple[type, ...]]) -> dict:
    """A JSON object the run wrote (``status.json``, ``eval/provenance.json``), {} when absent; a
    damaged one (not an object, or a key of ``types`` holding another type) is taken as absent,
    with a warning."""
    if not path.exists():
        return {}
    with contextlib.suppress(OSError, ValueError):
        record = json.loads(path.read_text())
        if isinstance(record, dict) and all(
            isinstance(record[key], kind) for key, kind in types.items() if key in record
        ):
            return record
    logging.warning("%s is damaged (not the JSON object the run writes); taken as absent", path)
    return {}


class Interval:
    """The metrics of the dispatches since the last log line, and their time (compilation and
    evaluation excluded)."""

    def __init__(self):
        self.pending: list[dict] = []  # The metrics of each dispatch, stacked per step.
        self.start = time.monotonic()
        self.rate = float("nan")

    def add(self, metrics: dict, compile_s: float) -> None:
        for value in jax.tree.leaves(metrics):
            # Ready by the next log line, which then waits on nothing else.
            value.copy_to_host_async()
        self.pending.append(metrics)
        self.exclude(compile_s)

    def exclude(self, seconds: float) -> None:
        self.start += seconds

    def flush(self) -> dict[str, np.ndarray]:
        """The interval's metrics, fetched at once (the only wait on the device between logs),
        stacked per step; sets :attr:`rate` (steps/s) and starts the next interval."""
        fetched = parallel.to_host(self.pending)
        stacked = {name: np.concatenate([m[name] for m in fetched]) for name in fetched[0]}
        # Steps: the rows of any metric; every step has a d_loss.
        self.rate = len(stacked["d_loss"]) / (time.monotonic() - self.start)
        self.pending, self.start = [], time.monotonic()
        return stacked


class MetricsWriter:
    def __init__(self, workdir: str | Path, resume_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.metrics_path = Path(workdir) / "metrics.jsonl"
        self._tensorboard = None
        if not enabled:
            return
        if resume_step and self.metrics_path.exists():
            # Rows after the checkpoint we resume from were recomputed; keep one copy of each step.
            rows = read_metrics(self.metrics_path)
            kept = "".join(json.dumps(row) + "\n" for row in rows if row["step"] <= resume_step)
            write_atomically(self.metrics_path, kept)
        from tensorboardX import SummaryWriter

        # TensorBoard hides the earlier sessions' events from this step on, as metrics.jsonl drops
        # them: a resumed run's curves, not the abandoned steps' and the redone ones' interleaved.
        purge = resume_step + 1 if resume_step else None
        self._tensorboard = SummaryWriter(str(Path(workdir) / "tensorboard"), purge_step=purge)

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        append_line(self.metrics_path, json.dumps({"step": step, **scalars}))
        for name, value in scalars.items():
            self._tensorboard.add_scalar(name, value, step)

    def write_image(self, step: int, name: str, grid: np.ndarray) -> None:
        if self.enabled:
            self._tensorboard.add_image(name, grid, step, dataformats="HWC")

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def format_log_line(
    step: int, num_steps: int, scalars: dict[str, float], seconds_left: float | None = None
) -> str:
    """One log line; the ETA is the time to ``num_steps`` or, when sooner, ``seconds_left`` of a
    time limit (``train.max_seconds``)."""
    parts = [
        f"step {step}/{num_steps}",
        f"d_loss {scalars['d_loss']:.4f}",
        f"g_loss {scalars['g_loss']:.4f}",
        f"D acc real {scalars['d_real_acc']:.1%} fake {scalars['d_fake_acc']:.1%}",
        f"D(x) {scalars['d_real']:.3f} D(G(z)) {scalars['d_fake']:.3f}",
    ]
    if "g_grad_norm" in scalars:  # The health monitors.
        parts.append(f"|grad| G {scalars['g_grad_norm']:.3g} D {scalars['d_grad_norm']:.3g}")
    parts += [f"{label} {scalars[key]:.2f}" for key, label in HEALTH if key in scalars]
    if "steps_per_sec" in scalars:
        eta = (num_steps - step) / max(scalars["steps_per_sec"], 1e-9)
        parts.append(
            f"{scalars['steps_per_sec']:.2f} steps/s {scalars['images_per_sec']:.0f} img/s"
        )
        limited = seconds_left is not None and seconds_left < eta
        parts.append(
            f"ETA {_duration(max(seconds_left, 0))} (time limit)"
            if limited
            else f"ETA {_duration(eta)}"
        )
    return " | ".join(parts)


def setup_line(run: loop.Run) -> str:
    """What the run trains on and where: the data, the devices and this process's place."""
    dataset = run.config.dataset
    batch = run.config.train.batch_size
    devices = run.mesh.size
    return (
        f"Data: {dataset.name}/{dataset.split}, {len(run.images)} images of shape "
        f"{run.image_shape}. Devices: {devices} ({jax.devices()[0].platform}), "
        f"{batch // devices} images each per step (global batch {batch}); process "
        f"{jax.process_index()} of {jax.process_count()}."
    )


HEALTH = (("d_logit_gap", "logit gap"), ("diversity", "diversity"))


def _duration(seconds):
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class OwnInfoFilter(std_logging.Filter):
    """Keeps INFO records of this package and WARNING and above from libraries (Orbax logs every
    save at INFO through the same absl logger)."""

    _OWN = str(Path(__file__).parents[1]) + os.sep  # dcgan_jax/, in a clone or site-packages.

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or record.pathname.startswith(self._OWN)


# ``logging.info(..., extra=FILE_ONLY)``: the full text, for train.log only.
FILE_ONLY = {"file_only": True}


class ConsoleFilter(OwnInfoFilter):
    """The console's view: :class:`OwnInfoFilter` less what is meant for train.log only: records
    marked so, and Orbax's and asyncio's (a failed checkpoint write or read is one line of ours)."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        checkpointing = record.name == "asyncio" or f"{os.sep}orbax{os.sep}" in record.pathname
        return (
            not getattr(record, "file_only", False) and not checkpointing and super().filter(record)
        )


class _AbandonedFutures(std_logging.Filter):
    """asyncio's reports of futures no one awaited (Orbax's, after a failed read): to train.log
    only."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        if "exception was never retrieved" not in record.getMessage():
            return True
        logging.info("asyncio: %s", record.getMessage().splitlines()[0], extra=FILE_ONLY)
        return False


def library_noise_to_log(everything: bool = True) -> None:
    """The one place ``sys.unraisablehook`` changes: exceptions Python reports at garbage collection
    or from library callbacks go to train.log only. Commands pass ``everything`` (all of them, and
    background threads'); a checkpoint read in a script routes only tensorstore's "Event loop is
    closed" errors of a failed read, leaving the script's others as Python shows them."""
    asyncio_logger = std_logging.getLogger("asyncio")
    if not any(isinstance(f, _AbandonedFutures) for f in asyncio_logger.filters):
        asyncio_logger.addFilter(_AbandonedFutures())
    previous = sys.unraisablehook
    if everything:
        sys.unraisablehook = threading.excepthook = unraisable_to_log
        return
    if previous is unraisable_to_log or getattr(previous, "closed_loop_only", False):
        return  # Already routed.

    def closed_loop_to_log(unraisable) -> None:
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
            unraisable_to_log(unraisable)
        else:
            previous(unraisable)

    closed_loop_to_log.closed_loop_only = True
    sys.unraisablehook = closed_loop_to_log


def unraisable_to_log(unraisable) -> None:
    """``sys.unraisablehook``: exceptions Python reports when it collects their object (an abandoned
    Orbax read) go to train.log, not as a console traceback after our one warning line."""
    what = getattr(unraisable, "err_msg", None) or "Exception ignored in"
    where = getattr(unraisable, "object", None) or getattr(unraisable, "thread", None)
    logging.info("%s %r: %r", what, where, unraisable.exc_value, extra=FILE_ONLY)


class _RunLog(std_logging.FileHandler):
    """``train.log``: appended to without following a link at its path; a record it cannot write
    (a full disk) is dropped quietly: the console has it, and the run's own error says why."""

    def _open(self):
        return os.fdopen(os.open(self.baseFilename, _APPEND_FLAGS, 0o644), "a", encoding="utf-8")

    def handleError(self, record: std_logging.LogRecord) -> None:
        pass


@contextlib.contextmanager
def logging_to(workdir: Path | None = None, is_main: bool = True) -> Iterator[None]:
    """The one place logging is configured, for a command (no ``workdir``) or a run: the console
    (absl's, or a script's own handlers) shows our INFO and libraries' warnings; a run's process 0
    also writes ``workdir/train.log``, others only problems. The verbosity is restored after."""
    verbosity = logging.get_verbosity()
    own = OwnInfoFilter()  # On the logger, so a script's handlers get no Orbax INFO either.
    logging.get_absl_logger().addFilter(own)
    if not is_main:
        logging.set_verbosity(logging.WARNING)
    elif not logging.level_info():  # Called from Python rather than a command: still show progress.
        logging.set_verbosity(logging.INFO)
    console = logging.get_absl_handler()
    console.filters = [f for f in console.filters if not isinstance(f, OwnInfoFilter)] + [
        ConsoleFilter()
    ]
    handler = None
    if workdir is not None and is_main:
        handler = _RunLog(Path(workdir) / "train.log")
        handler.setFormatter(std_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.get_absl_logger().addHandler(handler)
    try:
        yield
    finally:
        logging.get_absl_logger().removeFilter(own)
        logging.set_verbosity(verbosity)
        if handler is not None:
            logging.get_absl_logger().removeHandler(handler)
            handler.close()
