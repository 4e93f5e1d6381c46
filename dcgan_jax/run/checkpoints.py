"""Orbax checkpoints of the whole training state with the run's config and the SHA-256 of every
array; a save is renamed into place only when complete, so a killed run keeps its previous one."""

import contextlib
import functools
import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from dcgan_jax.gan import RunError, parallel
from dcgan_jax.gan.state import GanState
from dcgan_jax.run import writers

CHECKPOINT_SUBDIR = "checkpoints"
BEST_SUBDIR = "best_checkpoint"  # The checkpoint of the lowest FID so far (when the run evaluates).
DAMAGED_SUFFIX = ".damaged"
T = TypeVar("T")


class CheckpointError(RunError, RuntimeError):
    """A checkpoint that is missing or cannot be read; the message names the path."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint of a model with other shapes than the run asks for."""


class DiskFullError(CheckpointError):
    """No space left to write a checkpoint; the message names the folder and the checkpoint that is
    intact."""


def _bytes_needed(directory, state, steps):
    """A checkpoint's size: that of the newest on disk, else the state's arrays, with some room to
    spare."""
    arrays = sum(x.nbytes for x in jax.tree.leaves(state))
    size = (
        sum(f.stat().st_size for f in (directory / str(steps[-1])).rglob("*") if f.is_file())
        if steps
        else arrays
    )
    return int(size * 1.2) + (1 << 20)


# 'g/params/Dense_0/kernel' for a key path of a state, or of Orbax's metadata of one.
_path_name = functools.partial(jax.tree_util.keystr, simple=True, separator="/")


def _by_path(tree, value: Callable) -> dict:
    """{'g/params/Dense_0/kernel': value(leaf)} for a state or for Orbax's metadata of one."""
    return {
        _path_name(path): value(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


HASHES_KEY = "sha256"  # meta: {array path: SHA-256 of its bytes}, written with each checkpoint.


def array_hashes(tree) -> dict[str, str]:
    """{path: SHA-256 of the array's bytes} for every array of a (host) tree."""
    return _by_path(tree, lambda a: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest())


def verify(restored, hashes: dict[str, str], where: Path) -> None:
    """CheckpointError unless every restored array hashes to what was saved with it."""
    for name, digest in array_hashes(restored).items():
        if name not in hashes:
            raise CheckpointError(
                f"{where}: {name} has no SHA-256 saved with it; not a checkpoint of this dcgan_jax"
            )
        if digest != hashes[name]:
            raise CheckpointError(
                f"{where}: {name} does not match the SHA-256 saved with it (its files were changed)"
            )


def _listing(directory: Path, list_steps: Callable[[], T]) -> T:
    """``list_steps()``, again while a running run's pruning removes a folder as the library lists
    the checkpoints (a missing file or folder)."""
    for _ in range(10):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            return list_steps()
        time.sleep(0.1)
    raise CheckpointError(f"cannot list {directory}: its folders keep vanishing")


def checkpoint_dir(workdir: str | Path, subdir: str = CHECKPOINT_SUBDIR) -> Path:
    return Path(workdir).absolute() / subdir


def _run_hint(path: str | Path) -> str:
    """Where the run is when ``path`` lies inside one (its checkpoints, a step's folder) or holds
    several (a sweep's folder); else nothing."""
    path = Path(path).absolute()
    run = next((p for p in path.parents if (p / CHECKPOINT_SUBDIR).is_dir()), None)
    if run is not None:
        return (
            f": {path} is inside the run folder {run}; name that (a step with step=N or --step=N)"
        )
    if runs := runs_in(path):
        return f": {path} is a folder of runs ({len(runs)}, e.g. {runs[0]}); name one of them"
    return ""


def runs_in(folder: Path) -> list[str]:
    """The names of the runs (folders holding checkpoints) in ``folder``: a sweep's, or a runs/."""
    return sorted(p.parent.name for p in folder.glob(f"*/{CHECKPOINT_SUBDIR}"))


class Checkpointer:
    """Saves and restores GanStates under ``workdir/checkpoints/<step>``."""

    def __init__(
        self,
        workdir: str | Path,
        keep: int = 3,
        create: bool = True,
        subdir: str = CHECKPOINT_SUBDIR,
    ):
        self.directory = checkpoint_dir(workdir, subdir)
        if not self.directory.resolve().is_relative_to(Path(workdir).resolve()):
            raise CheckpointError(
                f"{self.directory} is a link to {self.directory.resolve()}, outside the run's "
                "folder: a run reads and writes checkpoints only in its own; remove the link"
            )
        if not create and not self.directory.is_dir():
            hint = _run_hint(workdir)
            if subdir == BEST_SUBDIR and not hint:
                hint = (
                    ": a run keeps one only when it evaluates (eval.every > 0); load a step, or "
                    "score the steps it kept with python -m dcgan_jax.evaluation"
                )
            raise CheckpointError(f"no {subdir} folder at {self.directory}{hint}")
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
        handlers = {
            "state": ocp.PyTreeCheckpointHandler(),  # Also restores a subtree (the generator).
            "config": ocp.JsonCheckpointHandler(),
            "meta": ocp.JsonCheckpointHandler(),
        }
        self.manager = _listing(
            self.directory,
            functools.partial(
                ocp.CheckpointManager, self.directory, options=options, item_handlers=handlers
            ),
        )
        self._saving: int | None = None

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, state: GanState, config: ml_collections.ConfigDict, meta: dict) -> None:
        """Starts an asynchronous save of ``state`` at its step. ``meta`` holds what is derived, not
        configured (the image shape), to rebuild G from the checkpoint alone; the arrays' SHA-256
        join it."""
        step = state.host_step
        self.wait()  # The previous save's errors surface here, before another one starts.
        needed = _bytes_needed(self.directory, state, self.all_steps())
        if shutil.disk_usage(self.directory).free < needed:
            raise DiskFullError(
                self._disk_full_message(step, f"; it needs about {needed / 2**20:.1f} MiB")
            )
        self._saving = step
        meta = {**meta, HASHES_KEY: array_hashes(parallel.to_host(state))}
        saved = ocp.args.Composite(
            state=ocp.args.PyTreeSave(state),
            config=ocp.args.JsonSave(json.loads(config.to_json())),
            meta=ocp.args.JsonSave(meta),
        )
        with self._writing():
            self.manager.save(step, args=saved)

    def wait(self) -> None:
        """Until the background save is complete."""
        with self._writing():
            self.manager.wait_until_finished()

    @contextlib.contextmanager
    def _writing(self):
        """A failed save as the run's other failed writes are: a full disk a DiskFullError, any
        other failure of the file system an OSError (TensorStore reports those as other types, the
        error number in the text: "... Not a directory [os_error_code='20']")."""
        try:
            yield
        except Exception as e:
            if writers.out_of_space(e):
                self._remove_partial(self._saving)
                raise DiskFullError(self._disk_full_message(self._saving, "")) from e
            code = re.search(r"os_error_code='(\d+)'", str(e))
            if code and not isinstance(e, OSError):
                raise OSError(int(code[1]), str(e)) from e
            raise

    def _remove_partial(self, step):
        """Gives the space of a failed save back (it is not a checkpoint). Orbax's other writes of
        it may still run after the first failure and make its folder again: it is removed until it
        stays away for a second, 10 s at most."""
        started = last_seen = time.monotonic()
        while time.monotonic() - last_seen < 1 and time.monotonic() - started < 10:
            for partial in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
                shutil.rmtree(partial, ignore_errors=True)
                last_seen = time.monotonic()
            time.sleep(0.1)

    def _disk_full_message(self, step, needed):
        free = shutil.disk_usage(self.directory).free
        steps = [s for s in self.all_steps() if s != step]
        kept = "there is no earlier checkpoint"
        if steps:
            kept = f"the newest complete checkpoint, {self.directory / str(steps[-1])}, is intact"
        where = f"checkpoint {step} in {self.directory} ({free / 2**20:.1f} MiB free{needed})"
        return (
            f"disk full: no space to write {where}; {kept}. Free some space and rerun the same "
            "command to resume."
        )

    def _step_or_latest(self, step):
        # Before any read: a failed one's callbacks to train.log.
        writers.library_noise_to_log(everything=False)
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        if step is None:
            return steps[-1]
        if step not in steps:
            raise CheckpointError(
                f"no checkpoint for step {step} in {self.directory}; available steps: {steps}"
            )
        return step

    def newest_good(self, restore_step: Callable[[int], T], set_aside_damaged: bool = False) -> T:
        """``restore_step(step)`` for the newest checkpoint it succeeds on, damaged newer ones
        logged (a model mismatch stops at once). ``set_aside_damaged`` (the training run's) renames
        them ``<step>.damaged``: kept for inspection, out of the way of the resumed run's saves."""
        steps, damaged = self.all_steps(), []
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        newest = steps[-1]
        while steps:
            step = steps.pop()
            try:
                result = restore_step(step)
            except CheckpointMismatchError:
                raise
            except CheckpointError as e:
                # A running run may have pruned it while it was read (listed still, half removed,
                # once a newer one is saved): not damage.
                newer = self.saved_since(newest)
                if step not in (listed := self.all_steps()) or newer:
                    logging.info(
                        "Checkpoint %s was removed while it was read; re-listing.",
                        self.directory / str(step),
                    )
                    newest = max(listed, default=newest)
                    steps = [s for s in listed if s not in damaged]
                    continue
                self._log_damage(step, e)
                damaged.append(step)
                continue
            if damaged and set_aside_damaged:
                for bad in damaged:
                    (self.directory / str(bad)).rename(self.directory / f"{bad}{DAMAGED_SUFFIX}")
                self.manager.reload()
                renamed = ", ".join(f"{bad}{DAMAGED_SUFFIX}" for bad in damaged)
                logging.warning(
                    "Using checkpoint %s; damaged newer ones renamed to %s",
                    self.directory / str(step),
                    renamed,
                )
            return result
        raise CheckpointError(
            f"no restorable checkpoint in {self.directory}: steps {sorted(damaged)} are all "
            "damaged (see the warnings)"
        )

    def saved_since(self, step: int) -> bool:
        """Whether the folder now holds a checkpoint newer than ``step``: a running run that saved
        it may have pruned one being read, which is then not damage."""
        _listing(self.directory, self.manager.reload)
        return max(self.all_steps(), default=step) > step

    def _log_damage(self, step, error):
        reason, where = str(error).splitlines()[0], self.directory / str(step)
        reason = reason[:200] + ("..." if len(reason) > 200 else "")
        logging.warning("Damaged checkpoint %s (%s); trying the previous one.", where, reason)
        logging.info("Why %s is damaged, in full: %s", where, error, extra=writers.FILE_ONLY)

    def _metadata(self, step):
        """Orbax's metadata of the stored state; a read that fails (a step pruned meanwhile, a
        damaged file) is a CheckpointError, which the readers re-list or report."""
        writers.library_noise_to_log(everything=False)  # As in _step_or_latest.
        try:
            return self.manager.item_metadata(step)["state"]
        except Exception as e:
            raise CheckpointError(
                f"cannot read the metadata of {self.directory / str(step)}: {e}"
            ) from e

    def _check_shapes(self, target, step, *, exact=False):
        """CheckpointMismatchError, naming the arrays, when the checkpoint's shapes are not those of
        ``target``; ``exact``: nor may the checkpoint hold arrays ``target`` lacks (an EMA or a
        label embedding the run dropped). A mismatch is not damage: the files are intact."""
        stored, wanted = _by_path(self._metadata(step), np.shape), _by_path(target, np.shape)
        where = self.directory / str(step)
        if not stored:  # Damaged: no array metadata at all.
            raise CheckpointError(f"{where}: its metadata lists none of the state's arrays")
        groups = [{path.split("/")[0] for path in tree} for tree in (wanted, stored)]
        if groups[0] - groups[1]:
            raise CheckpointMismatchError(
                f"{where} is a checkpoint of another layout, not written by this dcgan_jax: it "
                f"lacks {', '.join(sorted(groups[0] - groups[1]))} (it holds "
                f"{', '.join(sorted(groups[1]))}); use another --workdir"
            )
        compared = set(wanted) | set(stored) if exact else set(wanted)
        # Parameters first: the most telling.
        paths = sorted(compared, key=lambda p: ("params/" not in p, p))
        differences = [
            f"{p}: checkpoint {stored.get(p, 'absent')}, this run {wanted.get(p, 'absent')}"
            for p in paths
            if stored.get(p) != wanted.get(p)
        ]
        if differences:
            listed = "; ".join(differences[:6]) + ("; ..." if len(differences) > 6 else "")
            raise CheckpointMismatchError(
                f"{where} holds a model of other shapes than this run's config "
                f"({len(differences)} arrays differ): {listed}. Use another --workdir, or the "
                "config the checkpoint was trained with."
            )

    def _restore_tree(self, target, step, what):
        """The arrays of ``target`` (a subtree of the stored state) placed like it: the one restore
        path of train() and load(). Config and meta must read and the arrays match their hashes, or
        it is damaged."""
        meta = self.restore_config(step)[2]
        self._check_shapes(target, step, exact=True)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        restore_args = ocp.checkpoint_utils.construct_restore_args(abstract)
        restore = ocp.args.PyTreeRestore(item=abstract, restore_args=restore_args)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(state=restore)).state
        except Exception as e:  # Orbax raises many types for unreadable data.
            raise CheckpointError(
                f"cannot restore{what} from {self.directory / str(step)}: {e}"
            ) from e
        verify(parallel.to_host(restored), meta.get(HASHES_KEY, {}), self.directory / str(step))
        return restored

    def restore(
        self, target: GanState, step: int | None = None, set_aside_damaged: bool = False
    ) -> GanState:
        """The full state at ``step`` (newest good one when None), laid out like ``target``."""
        if step is None:
            return self.newest_good(lambda s: self.restore(target, s), set_aside_damaged)
        return self._restore_tree(target, step, "")

    def restore_config(
        self, step: int | None = None
    ) -> tuple[int, ml_collections.ConfigDict, dict]:
        """(step, config, meta) of the checkpoint at ``step`` (newest when None)."""
        step = self._step_or_latest(step)
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(config=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()),
            )
        except Exception as e:
            raise CheckpointError(
                f"cannot read the config of {self.directory / str(step)}: {e}"
            ) from e
        return step, ml_collections.ConfigDict(restored.config), dict(restored.meta)

    def restore_generator(self, target: dict, ema: bool, step: int) -> dict:
        """G's {'params', 'batch_stats'} (EMA parameters with ``ema``) shaped like ``target``, on
        this machine's first device, every array checked as :meth:`restore` does: a reader and a
        resumed run agree on which checkpoint is good."""
        wanted = {"g_ema": target["params"], "g": {"batch_stats": target["batch_stats"]}}
        self._check_shapes(wanted if ema else {"g": target}, step)
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        everything = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
            self._metadata(step),
        )
        restored = self._restore_tree(everything, step, " the generator")
        params = restored["g_ema"] if ema else restored["g"]["params"]
        return {"params": params, "batch_stats": restored["g"]["batch_stats"]}

    def close(self) -> None:
        with self._writing():  # It waits for the background save.
            self.manager.close()
