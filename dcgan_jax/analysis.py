"""Reloading a trained generator for analysis, from a notebook or a script.

    import dcgan_jax
    run = dcgan_jax.load("runs/fashion_dcgan")      # newest checkpoint
    images = run.sample(64, seed=0)                  # (64, 28, 28, 1) float32 in [-1, 1]

Needs only the workdir: the config and image shape travel inside each checkpoint.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dcgan_jax import checkpoints, models


@dataclasses.dataclass
class TrainedGenerator:
    config: ml_collections.ConfigDict
    step: int
    variables: dict[str, Any]  # {'params': ..., 'batch_stats': ...}
    generator: models.Generator

    def __post_init__(self):
        self._sample = models.make_sampler(self.generator)

    def latents(self, num: int, seed: int = 0) -> jax.Array:
        return jax.random.normal(jax.random.key(seed), (num, self.config.model.latent_dim))

    def generate(self, z: jax.Array) -> np.ndarray:
        """Images for given latent vectors (N, latent_dim)."""
        return np.asarray(self._sample(self.variables, jnp.asarray(z, jnp.float32)), dtype=np.float32)

    def sample(self, num: int, seed: int = 0) -> np.ndarray:
        """``num`` images (num, H, W, C), float32 in [-1, 1], from latents drawn with ``seed``.

        BatchNorm uses its running averages (inference mode): a sample depends only
        on its latent vector, so ``sample(1)`` equals the first of ``sample(64)``.
        """
        if num <= 0:
            raise ValueError(f"num must be positive, got {num}")
        return self.generate(self.latents(num, seed))


def load(workdir: str | Path, step: int | None = None, best: bool = False) -> TrainedGenerator:
    """The generator of the run in ``workdir`` at ``step`` (newest checkpoint when None), or the
    one with the lowest FID seen during training when ``best``."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise checkpoints.CheckpointError(f"no run folder at {workdir.absolute()}")
    subdir = checkpoints.BEST_SUBDIR if best else checkpoints.CHECKPOINT_SUBDIR
    checkpointer = checkpoints.Checkpointer(workdir, create=False, subdir=subdir)

    def restore(step: int) -> TrainedGenerator:
        step, config, meta = checkpointer.restore_config(step)
        generator, _ = models.build(config.model, tuple(meta["image_shape"]))
        # Only the shapes (nothing is computed), placed on this machine's first device.
        z = jnp.zeros((1, config.model.latent_dim))
        shapes = jax.eval_shape(lambda: generator.init(jax.random.key(0), z, train=False))
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), shapes)
        restored = checkpointer.restore_generator(
            {"g_params": target["params"], "g_batch_stats": target["batch_stats"]}, step
        )
        variables = {"params": restored["g_params"], "batch_stats": restored["g_batch_stats"]}
        return TrainedGenerator(config=config, step=step, variables=variables, generator=generator)

    try:
        # The newest readable checkpoint: a damaged newest one is skipped with a warning.
        return checkpointer.newest_good(restore) if step is None else restore(step)
    finally:
        checkpointer.close()
