"""A trained generator reloaded from its run folder, for a notebook, a script or the commands.

    import dcgan_jax
    run = dcgan_jax.load("runs/fashion_dcgan")      # newest checkpoint
    images = run.sample(64, seed=0)                  # (64, 28, 28, 1) float32 in [-1, 1]
    grid, columns = run.training_grid()              # exactly samples/step_<N>.png's images

Needs only the workdir: the config and image shape travel inside each checkpoint.
The latents of the run's own grids and evaluation come from
:mod:`dcgan_jax.sampling`, so they are the ones training used.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dcgan_jax import checkpoints, models, sampling
from dcgan_jax import config as config_lib

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"


def check_truncation(truncation: float) -> None:
    if not truncation > 0:  # Also NaN; 0 would make every sample the same image.
        raise ValueError(f"truncation must be > 0 (1 = none), got {truncation}")


@dataclasses.dataclass
class TrainedGenerator:
    config: ml_collections.ConfigDict
    step: int
    variables: dict[str, Any]  # {'params': ..., 'batch_stats': ...}; params are the EMA ones when ``ema``.
    generator: models.Generator
    workdir: Path
    ema: bool = False  # Whether ``variables`` hold the moving average of G's weights.

    def __post_init__(self):
        self._sample = sampling.make_sampler(self.generator)

    @property
    def num_classes(self) -> int:
        return self.generator.num_classes

    def latents(self, num: int, seed: int = 0, truncation: float = 1.0) -> jax.Array:
        """``num`` latent vectors drawn with ``seed``, times ``truncation`` (the truncation trick:
        below 1, samples nearer the prior's mean, trading diversity, i.e. recall, for fidelity)."""
        check_truncation(truncation)
        return truncation * sampling.seeded_latents(seed, num, self.config.model.latent_dim)

    def _labels(self, num: int, labels) -> jax.Array | None:
        """Class labels for ``num`` images: ``labels`` (an int, or one per image), or for a conditional
        model without them each class in turn (0, 1, ..., 0, 1, ...)."""
        if not self.num_classes:
            if labels is not None:
                raise ValueError("labels given to an unconditional generator (trained with model.num_classes=0)")
            return None
        if labels is None:
            return sampling.eval_labels(num, self.num_classes)
        labels = np.asarray(labels)
        if labels.ndim > 1 or (labels.ndim == 1 and len(labels) != num):
            raise ValueError(f"labels: an int or one per latent vector, shape ({num},), got shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels: class indices (integers) expected, got dtype {labels.dtype}")
        labels = np.broadcast_to(labels.astype(np.int64), (num,))
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"labels must be in [0, {self.num_classes}), got {sorted(set(labels.tolist()))}")
        return jnp.asarray(labels, jnp.int32)

    def generate(self, z: jax.Array, labels=None) -> np.ndarray:
        """Images (N, H, W, C) for latent vectors ``z`` (N, latent_dim), or one vector (latent_dim,) as
        N = 1, and for a conditional model ``labels`` (an int or one per vector); many latents go
        through the generator 1,000 at a time, as in training."""
        z = self._check_latents(z)
        return sampling.sample_in_chunks(self._sample, self.variables, z, self._labels(len(z), labels))

    def _check_latents(self, z) -> jax.Array:
        """``z`` as a float32 (N, latent_dim) batch, or a ValueError naming what is wrong with it."""
        given = np.shape(z)
        z = np.asarray(z, np.float32)
        z = z[None] if z.ndim == 1 else z
        latent_dim = self.config.model.latent_dim
        if z.ndim != 2 or z.shape[1] != latent_dim or not len(z):
            raise ValueError(
                f"z: latent vectors of shape (N, {latent_dim}) (model.latent_dim={latent_dim}) "
                f"or one of shape ({latent_dim},), got shape {given}"
            )
        if not np.isfinite(z).all():
            raise ValueError(
                f"z: {int(np.sum(~np.isfinite(z).all(axis=1)))} of {len(z)} latent vectors hold NaN or inf"
            )
        return jnp.asarray(z)

    def sample(self, num: int, seed: int = 0, labels=None, truncation: float = 1.0) -> np.ndarray:
        """``num`` images (num, H, W, C), float32 in [-1, 1], from latents drawn with ``seed``;
        ``labels`` (an int or one per image) picks the classes of a conditional model (its clusters,
        for ``dataset.labels=clusters``), and
        ``truncation`` < 1 scales the latents toward 0 (see :meth:`latents`).

        BatchNorm uses its running averages (inference mode): a sample depends only
        on its latent vector, so ``sample(1)`` equals the first of ``sample(64)``.
        """
        if num <= 0:
            raise ValueError(f"num must be positive, got {num}")
        return self.generate(self.latents(num, seed, truncation), labels)

    def training_grid(self) -> tuple[np.ndarray, int | None]:
        """(images, columns) of the run's sample grids, ``samples/step_<N>.png``: its fixed latents (and
        one row per class when conditional); ``images.save_grid(images, path, columns)`` draws it."""
        columns, z, labels = sampling.grid_draw(self.config)
        return self.generate(z, labels), columns

    def evaluation_samples(self, num: int | None = None, truncation: float = 1.0) -> tuple[np.ndarray, Any]:
        """(images, requested labels or None) of ``num`` latents of the run's evaluation stream, scaled by
        ``truncation``: with the default ``num`` (``eval.num_samples``), the draw the in-training
        evaluation scored at every step."""
        config = ml_collections.ConfigDict(self.config.to_dict())
        config.eval.num_samples = num or config.eval.num_samples
        check_truncation(truncation)
        z, labels = sampling.eval_draw(config)
        return self.generate(truncation * z, labels), None if labels is None else np.asarray(labels)

    def interpolate(self, z_start: np.ndarray, z_end: np.ndarray, num: int, label=None) -> np.ndarray:
        """``num`` images along the great circle from ``z_start`` to ``z_end`` (both ends included),
        all of class ``label`` (default 0) for a conditional model."""
        if num < 2:
            raise ValueError(f"num: points along the path including both ends, at least 2, got {num}")
        ends = [np.asarray(self._check_latents(e)) for e in (z_start, z_end)]
        if any(len(e) != 1 for e in ends):
            raise ValueError(f"z_start, z_end: one latent vector each, got {len(ends[0])} and {len(ends[1])}")
        z = slerp(ends[0][0], ends[1][0], np.linspace(0.0, 1.0, num))
        if self.num_classes and label is None:
            label = 0  # One class along the whole strip.
        return self.generate(z, label)


def slerp(z_start: np.ndarray, z_end: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation (Shoemake; White 2016 for GAN latents): the points between two
    Gaussian latents keep a typical norm, where a straight line passes too close to the origin."""
    a, b = np.asarray(z_start, np.float64), np.asarray(z_end, np.float64)
    cos = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    t = np.asarray(t, np.float64)[:, None]
    if omega < 1e-6:  # Parallel: the straight line is the arc.
        return ((1 - t) * a + t * b).astype(np.float32)
    return ((np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)).astype(np.float32)


def load(
    workdir: str | Path,
    step: int | None = None,
    best: bool = False,
    experiment: str | None = None,
    ema: bool = True,
    recompute_bn: bool | None = None,
) -> TrainedGenerator:
    """The generator of the run in ``workdir`` at ``step`` (newest checkpoint when None), or the
    one with the lowest FID seen during training when ``best``. With ``experiment``, a run whose
    dataset or model differs from that experiment's is an error naming the path. A run that kept
    an EMA of G's weights (``train.ema_decay`` > 0) gives the EMA weights unless ``ema=False``.
    ``recompute_bn`` (None: as the run's ``train.recompute_bn``) measures G's BatchNorm statistics
    for the weights it gives, exactly as training's grids and evaluations did."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise checkpoints.CheckpointError(f"no run folder at {workdir.absolute()}")
    if step is not None:
        if not str(step).strip().isdigit():
            raise checkpoints.CheckpointError(f"step={step!r}: a checkpoint's step number is expected")
        step = int(step)
    if experiment is not None:
        _check_experiment(workdir, experiment)
    subdir = checkpoints.BEST_SUBDIR if best else checkpoints.CHECKPOINT_SUBDIR
    checkpointer = checkpoints.Checkpointer(workdir, create=False, subdir=subdir)
    try:
        # The newest readable checkpoint: a damaged newest one is skipped with a warning.
        restore = lambda s: _restore(checkpointer, s, workdir, ema, recompute_bn)  # noqa: E731
        return checkpointer.newest_good(restore) if step is None else restore(step)
    finally:
        checkpointer.close()


def _restore(
    checkpointer: checkpoints.Checkpointer, step: int, workdir: Path, ema: bool, recompute_bn: bool | None
) -> TrainedGenerator:
    step, stored, meta = checkpointer.restore_config(step)
    config = config_lib.with_defaults(stored)  # A run from before a field existed had its default.
    generator = models.build(config.model, tuple(meta["image_shape"]), config.train.compute_dtype).generator
    # Only the shapes (nothing is computed), placed on this machine's first device.
    z, labels = jnp.zeros((2, config.model.latent_dim)), models.example_labels(generator.num_classes)
    shapes = jax.eval_shape(lambda: generator.init(jax.random.key(0), z, train=False, labels=labels))
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), shapes)
    use_ema = ema and config.train.ema_decay > 0
    variables = checkpointer.restore_generator(target["params"], target["batch_stats"], use_ema, step)
    if config.train.recompute_bn if recompute_bn is None else recompute_bn:
        recompute = sampling.make_bn_recomputer(generator, config.model, config.train.batch_size)
        variables = recompute(variables, config.seed)
    return TrainedGenerator(config, step, variables, generator, workdir, ema=use_ema)


def _check_experiment(workdir: Path, experiment: str) -> None:
    config_path = workdir / "config.json"
    if not config_path.exists():
        raise checkpoints.CheckpointError(f"{config_path.absolute()} is missing: is {workdir} a run folder?")
    stored = config_lib.flatten(config_lib.read_json(config_path))
    expected = config_lib.flatten(config_lib.load_experiment(experiment, EXPERIMENTS_DIR))
    fields = [k for k in expected if k.startswith(("dataset.name", "model.")) and stored.get(k) != expected[k]]
    if fields:
        differences = ", ".join(f"{k}: run {stored.get(k)!r}, {experiment} {expected[k]!r}" for k in fields)
        raise checkpoints.CheckpointError(
            f"{workdir.absolute()} holds a run of another experiment than {experiment} ({differences})"
        )
