"""A trained generator reloaded from its run folder, for a notebook, a script or the commands.

    import dcgan_jax
    run = dcgan_jax.load("runs/fashion_dcgan")      # newest checkpoint
    images = run.sample(64, seed=0)                  # (64, 28, 28, 1) float32 in [-1, 1]
    grid, columns = run.training_grid()              # exactly samples/step_<N>.png's images

Needs only the workdir: config and image shape travel inside each checkpoint."""

import contextlib
import dataclasses
import functools
import math
import numbers
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from dcgan_jax import evaluation
from dcgan_jax.gan import ConfigError, models, sampling
from dcgan_jax.gan import config as config_lib
from dcgan_jax.run import checkpoints, cli, control, preflight

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"


def check_truncation(truncation: float) -> None:
    # Not NaN; 0 would make every sample the same image.
    if not (isinstance(truncation, numbers.Real) and 0 < truncation < math.inf):
        raise ConfigError(f"truncation must be a finite number > 0 (1 = none), got {truncation!r}")


@dataclasses.dataclass
class TrainedGenerator:
    config: ml_collections.ConfigDict = dataclasses.field(repr=False)
    step: int
    # {'params': ..., 'batch_stats': ...}; params are the EMA ones when ``ema``. Not in the repr,
    # which a notebook shows: thousands of numbers.
    variables: dict[str, Any] = dataclasses.field(repr=False)
    generator: models.Generator
    workdir: Path
    ema: bool = False  # Whether ``variables`` hold the moving average of G's weights.

    def __post_init__(self):
        self._sample = sampling.make_sampler(self.generator)

    @property
    def num_classes(self) -> int:
        return self.generator.num_classes

    def latents(self, num: int, seed: int = 0, truncation: float = 1.0) -> jax.Array:
        """``num`` latent vectors drawn with ``seed``, times ``truncation`` (below 1: nearer the
        prior's mean, trading diversity for fidelity)."""
        check_truncation(truncation)
        self._check_count(num)
        if not (isinstance(seed, numbers.Integral) and 0 <= seed <= sampling.MAX_SEED):
            raise ValueError(f"seed must be an integer in 0 .. {sampling.MAX_SEED}, got {seed!r}")
        return truncation * sampling.seeded_latents(seed, num, self.config.model.latent_dim)

    def _check_count(self, num):
        """A ValueError unless ``num`` latents and images fit in half this machine's memory (XLA
        aborts the process on an allocation it cannot make)."""
        per_image = 4 * (self.config.model.latent_dim + math.prod(self.generator.image_shape))
        most = preflight.machine_memory() // 2 // per_image
        if not (isinstance(num, numbers.Integral) and 0 < num <= most):
            raise ValueError(
                f"num must be an integer, positive and at most {most} (latents and images in half "
                f"this machine's memory; draw more in parts, with other seeds), got {num!r}"
            )

    def _labels(self, num, labels):
        """Class labels for ``num`` images: ``labels`` (an int, or one per image), else each class
        in turn."""
        if not self.num_classes:
            if labels is not None:
                raise ValueError(
                    "labels given to an unconditional generator (trained with model.num_classes=0)"
                )
            return None
        if labels is None:
            return sampling.eval_labels(num, self.num_classes)
        return jnp.asarray(evaluation.check_labels(labels, num, self.num_classes), jnp.int32)

    def generate(self, z: jax.Array, labels=None) -> np.ndarray:
        """Images (N, H, W, C) for latent vectors ``z`` (N, latent_dim) or (latent_dim,), and
        ``labels`` (an int or one per vector) for a conditional model; in chunks of 1,000, as in
        training."""
        z = self._check_latents(z)
        return sampling.sample_in_chunks(
            self._sample, self.variables, z, self._labels(len(z), labels)
        )

    def _check_latents(self, z):
        """``z`` as a float32 (N, latent_dim) batch, or a ValueError naming what is wrong with
        it."""
        given, latent_dim = np.shape(z), self.config.model.latent_dim
        z = np.atleast_2d(np.asarray(z, np.float32))
        if z.ndim != 2 or z.shape[1] != latent_dim or not len(z):
            raise ValueError(
                f"z: latent vectors of shape (N, {latent_dim}) (model.latent_dim={latent_dim}) "
                f"or one of shape ({latent_dim},), got shape {given}"
            )
        if not np.isfinite(z).all():
            raise ValueError(
                f"z: {np.sum(~np.isfinite(z).all(axis=1))} of {len(z)} latent vectors hold NaN or "
                "inf"
            )
        return jnp.asarray(z)

    def sample(self, num: int, seed: int = 0, labels=None, truncation: float = 1.0) -> np.ndarray:
        """``num`` images (num, H, W, C) in [-1, 1] from latents drawn with ``seed``, ``labels`` (an
        int or one per image) for a conditional model; inference mode: ``sample(1)`` is the first of
        ``sample(64)``."""
        return self.generate(self.latents(num, seed, truncation), labels)

    def training_grid(self) -> tuple[np.ndarray, int | None]:
        """(images, columns) of the run's ``samples/step_<N>.png``; ``images.save_grid`` draws
        it."""
        z, labels = sampling.grid_draw(self.config)
        return self.generate(z, labels), None  # Square.

    def evaluation_samples(
        self, num: int | None = None, truncation: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(images, requested labels or None) of ``num`` (default ``eval.num_samples``) latents of
        the run's evaluation stream, the draw the in-training evaluation scored, times
        ``truncation``."""
        check_truncation(truncation)
        num = self.config.eval.num_samples if num is None else num
        self._check_count(num)
        z, labels = sampling.eval_draw(self.config, num)
        return self.generate(truncation * z, labels), None if labels is None else np.asarray(labels)

    def interpolate(
        self, z_start: np.ndarray, z_end: np.ndarray, num: int, label=None
    ) -> np.ndarray:
        """``num`` images along the great circle from ``z_start`` to ``z_end`` (both ends included),
        all of class ``label`` (default 0) for a conditional model."""
        if not (isinstance(num, numbers.Integral) and num >= 2):
            raise ValueError(
                f"num: points along the path including both ends, at least 2, got {num!r}"
            )
        self._check_count(num)
        ends = [np.asarray(self._check_latents(e)) for e in (z_start, z_end)]
        if any(len(e) != 1 for e in ends):
            raise ValueError(
                f"z_start, z_end: one latent vector each, got {len(ends[0])} and {len(ends[1])}"
            )
        z = slerp(ends[0][0], ends[1][0], np.linspace(0.0, 1.0, num))
        return self.generate(z, 0 if self.num_classes and label is None else label)


def slerp(z_start: np.ndarray, z_end: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation (Shoemake; White 2016 for GAN latents): the points between two
    Gaussian latents keep a typical norm, where a straight line passes too close to the origin."""
    a, b = np.asarray(z_start, np.float64), np.asarray(z_end, np.float64)
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    omega = np.arccos(np.clip(np.dot(a, b) / norms, -1.0, 1.0)) if norms else 0.0
    if omega > np.pi - 1e-6:  # sin(omega) ~ 0, which the formula divides by: no one arc.
        raise ValueError(
            "z_start and z_end point in opposite directions: no one great circle joins them; "
            "interpolate to a third latent vector and on from there"
        )
    t = np.asarray(t, np.float64)[:, None]
    if omega < 1e-6:  # Parallel, or from the origin: the straight line is the arc.
        return ((1 - t) * a + t * b).astype(np.float32)
    return ((np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)).astype(
        np.float32
    )


def load(
    workdir: str | Path,
    step: int | None = None,
    *,
    best: bool = False,
    experiment: str | None = None,
    ema: bool = True,
    recompute_bn: bool | None = None,
    average: int = 1,
    data_dir: str | Path | None = None,
) -> TrainedGenerator:
    """The generator of the run in ``workdir`` at ``step`` (newest good checkpoint when None), or
    with the lowest FID when ``best``. ``experiment``: refuse a run of another dataset or model.
    ``ema``: the EMA weights when kept. ``recompute_bn`` (None: as the run did) measures BatchNorm
    statistics. ``average``: G's weights the mean of the ``average`` newest checkpoints up to
    ``step``, a uniform average over the end of training (SWA, Izmailov et al. 2018; for GANs,
    Yazici et al. 2019), BatchNorm statistics measured for it as ever. ``data_dir``: where the run's
    real images are here, when not where it trained (a run trained on another machine), for its
    evaluation and analysis."""
    workdir = control.run_folder(workdir)
    if not workdir.is_dir():
        raise checkpoints.CheckpointError(f"no run folder at {workdir.absolute()}")
    if step is not None:
        if not str(step).strip().isdigit():
            raise checkpoints.CheckpointError(
                f"step={step!r}: a checkpoint's step number is expected"
            )
        step = int(step)
    if experiment is not None:
        _check_experiment(workdir, experiment)
    subdir = checkpoints.BEST_SUBDIR if best else checkpoints.CHECKPOINT_SUBDIR
    checkpointer = checkpoints.Checkpointer(workdir, create=False, subdir=subdir)
    try:
        restore = functools.partial(
            _restore,
            checkpointer,
            workdir=workdir,
            ema=ema,
            recompute_bn=recompute_bn,
            average=average,
            data_dir=data_dir,
        )
        return checkpointer.newest_good(restore) if step is None else restore(step)
    finally:
        checkpointer.close()


def load_kept(
    workdir: str | Path, steps: list[int] | None = None, **kwargs
) -> list[TrainedGenerator]:
    """:func:`load` (with ``kwargs``) of each of ``steps``, by default of every checkpoint kept; of
    those, one a running run removes meanwhile is left out, with an INFO line."""
    runs = []
    with contextlib.closing(checkpoints.Checkpointer(workdir, create=False)) as checkpointer:
        kept = steps or checkpointer.all_steps()
        for step in kept:
            try:
                runs.append(load(workdir, step, **kwargs))
            except checkpoints.CheckpointError:
                if steps or not checkpointer.saved_since(kept[-1]):  # Asked for, or damaged.
                    raise
                logging.info("Checkpoint %d was removed by the running run; left out", step)
    if not runs:
        raise checkpoints.CheckpointError(
            f"no checkpoint in {checkpointer.directory} (a running run removes old ones)"
        )
    return runs


def _restore(
    checkpointer: checkpoints.Checkpointer,
    step: int,
    *,
    workdir: Path,
    ema: bool,
    recompute_bn: bool | None,
    average: int,
    data_dir: str | Path | None,
) -> TrainedGenerator:
    step, stored, meta = checkpointer.restore_config(step)
    config = config_lib.with_defaults(stored)  # A run from before a field existed had its default.
    if data_dir:
        config.dataset.data_dir = str(Path(data_dir).expanduser().absolute())
    image_shape = tuple(meta["image_shape"])
    nets = models.build(config.model, image_shape, config.train.compute_dtype)
    generator = nets.generator
    # Only the shapes: nothing is computed.
    init = functools.partial(
        models.init_variables, nets, image_shape=image_shape, latent_dim=config.model.latent_dim
    )
    shapes, _ = jax.eval_shape(init, jax.random.key(0))
    use_ema = ema and config.train.ema_decay > 0
    steps = [s for s in checkpointer.all_steps() if s <= step]
    if not (isinstance(average, numbers.Integral) and 1 <= average <= len(steps)):
        raise ValueError(
            f"average={average}: a mean over 1 or more checkpoints; {checkpointer.directory} holds "
            f"{len(steps)} up to step {step}"
        )
    steps = steps[-average:]
    restore = functools.partial(checkpointer.restore_generator, shapes, use_ema)
    restored = [restore(step)]  # Damaged, it is the one newest_good passes over.
    try:
        restored += map(restore, steps[:-1])
    except checkpoints.CheckpointError as e:  # Not ``step``'s damage: an error of the average.
        if checkpointer.saved_since(step):
            raise  # A running run saved a newer one and pruned this: load lists the steps anew.
        raise ValueError(f"average={average}: {e}") from e
    variables = jax.tree.map(lambda *v: sum(v) / average, *restored)
    if config.train.recompute_bn if recompute_bn is None else recompute_bn:
        recompute = sampling.make_bn_recomputer(generator, config.model, config.train.batch_size)
        variables = recompute(variables, config.seed)
    return TrainedGenerator(config, step, variables, generator, workdir, ema=use_ema)


def _check_experiment(workdir, experiment):
    config_path = workdir / "config.json"
    if not config_path.exists():
        raise checkpoints.CheckpointError(
            f"{config_path.absolute()} is missing: is {workdir} a run folder?"
        )
    stored = config_lib.flatten(cli.read_json(config_path))
    expected = config_lib.flatten(cli.load_experiment(experiment, EXPERIMENTS_DIR))
    differences = [
        f"{k}: run {stored.get(k)!r}, {experiment} {v!r}"
        for k, v in expected.items()
        if k.startswith(("dataset.name", "model.")) and stored.get(k) != v
    ]
    if differences:
        raise checkpoints.CheckpointError(
            f"{workdir.absolute()} holds a run of another experiment than {experiment} "
            f"({', '.join(differences)})"
        )
