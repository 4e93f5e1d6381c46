"""Orbax checkpoints of the whole training state, plus the run's config as JSON.

Each step's checkpoint is written to a temporary folder and renamed into place
only when complete (Orbax's commit protocol), so a run killed during a save
leaves the previous checkpoint as the newest restorable one.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import ml_collections
import orbax.checkpoint as ocp

from dcgan_jax import parallel
from dcgan_jax.train_step import TrainState

CHECKPOINT_SUBDIR = "checkpoints"
_ITEMS = ("state", "config", "meta")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or cannot be read; the message names the path."""


def checkpoint_dir(workdir: str | Path) -> Path:
    return Path(workdir).absolute() / CHECKPOINT_SUBDIR


class Checkpointer:
    """Saves and restores TrainStates under ``workdir/checkpoints/<step>``."""

    def __init__(self, workdir: str | Path, keep: int = 3, create: bool = True):
        self.directory = checkpoint_dir(workdir)
        if not create and not self.directory.is_dir():
            raise CheckpointError(f"no checkpoints folder at {self.directory}")
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, state: TrainState, config: ml_collections.ConfigDict, meta: dict) -> None:
        """Starts an asynchronous save of ``state`` at its step; training continues meanwhile.

        ``meta`` holds what is derived rather than configured (the image shape), so that
        the generator can be rebuilt from the checkpoint alone.
        """
        step = int(parallel.to_host(state.step))
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                config=ocp.args.JsonSave(json.loads(config.to_json())),
                meta=ocp.args.JsonSave(meta),
            ),
        )

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def _step_or_latest(self, step: int | None) -> int:
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        if step is None:
            return steps[-1]
        if step not in steps:
            raise CheckpointError(f"no checkpoint for step {step} in {self.directory}; available steps: {steps}")
        return step

    def restore(self, target: TrainState, step: int | None = None) -> TrainState:
        """The full state at ``step`` (newest when None), laid out like ``target``."""
        step = self._step_or_latest(step)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        except Exception as e:  # Orbax raises many types for unreadable or mismatched data.
            raise CheckpointError(f"cannot restore {self.directory / str(step)}: {e}") from e
        return restored.state

    def restore_config(self, step: int | None = None) -> tuple[int, ml_collections.ConfigDict, dict]:
        """(step, config, meta) of the checkpoint at ``step`` (newest when None)."""
        step = self._step_or_latest(step)
        try:
            restored = self.manager.restore(
                step, args=ocp.args.Composite(config=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore())
            )
        except Exception as e:
            raise CheckpointError(f"cannot read the config of {self.directory / str(step)}: {e}") from e
        return step, ml_collections.ConfigDict(restored.config), dict(restored.meta)

    def restore_generator(self, target: dict, step: int) -> dict:
        """Only the generator's variables ({'g_params', 'g_batch_stats'}), without the rest of the state,
        placed like ``target`` (e.g. on this machine's CPU whatever devices the run was trained on)."""
        restore_args = ocp.checkpoint_utils.construct_restore_args(target)
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True)
                ),
            )
        except Exception as e:
            raise CheckpointError(f"cannot restore the generator from {self.directory / str(step)}: {e}") from e
        return restored.state

    def close(self) -> None:
        self.manager.close()
