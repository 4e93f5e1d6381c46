"""Reloading a trained generator and looking at it, from a notebook, a script or the shell.

    import dcgan_jax
    from dcgan_jax import analysis
    run = dcgan_jax.load("runs/fashion_dcgan")      # newest checkpoint
    images = run.sample(64, seed=0)                  # (64, 28, 28, 1) float32 in [-1, 1]
    analysis.interpolation_strips(run, "strips.png")
    analysis.nearest_training_images(run, "nearest.png")

Needs only the workdir: the config and image shape travel inside each checkpoint.
Every picture can also be made from the shell, into ``<workdir>/analysis/``::

    python -m dcgan_jax.analysis --workdir=runs/fashion_dcgan [--step=N] [--seed=0]
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dcgan_jax import checkpoints, images, models, train_step

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"


@dataclasses.dataclass
class TrainedGenerator:
    config: ml_collections.ConfigDict
    step: int
    variables: dict[str, Any]  # {'params': ..., 'batch_stats': ...}; params are the EMA ones when ``ema``.
    generator: models.Generator
    workdir: Path
    ema: bool = False  # Whether ``variables`` hold the moving average of G's weights.

    def __post_init__(self):
        self._sample = models.make_sampler(self.generator)

    @property
    def num_classes(self) -> int:
        return self.generator.num_classes

    def latents(self, num: int, seed: int = 0, truncation: float = 1.0) -> jax.Array:
        """``num`` latent vectors drawn with ``seed``, times ``truncation`` (the truncation trick:
        below 1, samples nearer the prior's mean, trading diversity, i.e. recall, for fidelity)."""
        check_truncation(truncation)
        return truncation * jax.random.normal(jax.random.key(seed), (num, self.config.model.latent_dim))

    def _labels(self, num: int, labels) -> jax.Array | None:
        """Class labels for ``num`` images: ``labels`` (an int, or one per image), or for a conditional
        model without them each class in turn (0, 1, ..., 0, 1, ...)."""
        if not self.num_classes:
            if labels is not None:
                raise ValueError("labels given to an unconditional generator (trained with model.num_classes=0)")
            return None
        if labels is None:
            return jnp.arange(num, dtype=jnp.int32) % self.num_classes
        labels = np.broadcast_to(np.asarray(labels, np.int64), (num,))
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"labels must be in [0, {self.num_classes}), got {sorted(set(labels.tolist()))}")
        return jnp.asarray(labels, jnp.int32)

    def generate(self, z: jax.Array, labels=None) -> np.ndarray:
        """Images for given latent vectors (N, latent_dim) and, for a conditional model, labels."""
        z = jnp.asarray(z, jnp.float32)
        images = self._sample(self.variables, z, self._labels(len(z), labels))
        return np.asarray(images, dtype=np.float32)

    def sample(self, num: int, seed: int = 0, labels=None, truncation: float = 1.0) -> np.ndarray:
        """``num`` images (num, H, W, C), float32 in [-1, 1], from latents drawn with ``seed``;
        ``labels`` (an int or one per image) picks the classes of a conditional model, and
        ``truncation`` < 1 scales the latents toward 0 (see :meth:`latents`).

        BatchNorm uses its running averages (inference mode): a sample depends only
        on its latent vector, so ``sample(1)`` equals the first of ``sample(64)``.
        """
        if num <= 0:
            raise ValueError(f"num must be positive, got {num}")
        return self.generate(self.latents(num, seed, truncation), labels)

    def interpolate(self, z_start: np.ndarray, z_end: np.ndarray, num: int, label=None) -> np.ndarray:
        """``num`` images along the great circle from ``z_start`` to ``z_end`` (both ends included),
        all of class ``label`` (default 0) for a conditional model."""
        z = slerp(np.asarray(z_start), np.asarray(z_end), np.linspace(0.0, 1.0, num))
        if self.num_classes and label is None:
            label = 0  # One class along the whole strip.
        return self.generate(z, label)


def check_truncation(truncation: float) -> None:
    if not truncation >= 0:  # Also NaN.
        raise ValueError(f"truncation must be >= 0 (1 = none), got {truncation}")


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
    workdir: str | Path, step: int | None = None, best: bool = False, experiment: str | None = None, ema: bool = True
) -> TrainedGenerator:
    """The generator of the run in ``workdir`` at ``step`` (newest checkpoint when None), or the
    one with the lowest FID seen during training when ``best``. With ``experiment``, a run whose
    dataset or model differs from that experiment's is an error naming the path. A run that kept
    an EMA of G's weights (``train.ema_decay`` > 0) gives the EMA weights unless ``ema=False``."""
    from dcgan_jax import config as config_lib

    workdir = Path(workdir)
    if not workdir.is_dir():
        raise checkpoints.CheckpointError(f"no run folder at {workdir.absolute()}")
    if experiment is not None:
        _check_experiment(workdir, experiment)
    subdir = checkpoints.BEST_SUBDIR if best else checkpoints.CHECKPOINT_SUBDIR
    checkpointer = checkpoints.Checkpointer(workdir, create=False, subdir=subdir)

    def restore(step: int) -> TrainedGenerator:
        step, stored, meta = checkpointer.restore_config(step)
        config = config_lib.with_defaults(stored)  # A run from before a field existed had its default.
        generator, _ = models.build(config.model, tuple(meta["image_shape"]), config.train.compute_dtype)
        # Only the shapes (nothing is computed), placed on this machine's first device.
        z = jnp.zeros((2, config.model.latent_dim))
        labels = train_step.example_labels(generator.num_classes)
        shapes = jax.eval_shape(lambda: generator.init(jax.random.key(0), z, train=False, labels=labels))
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), shapes)
        use_ema = ema and config.train.ema_decay > 0
        params_key = "g_ema_params" if use_ema else "g_params"
        restored = checkpointer.restore_generator(
            {params_key: target["params"], "g_batch_stats": target["batch_stats"]}, step
        )
        variables = {"params": restored[params_key], "batch_stats": restored["g_batch_stats"]}
        return TrainedGenerator(
            config=config, step=step, variables=variables, generator=generator, workdir=workdir, ema=use_ema
        )

    try:
        # The newest readable checkpoint: a damaged newest one is skipped with a warning.
        return checkpointer.newest_good(restore) if step is None else restore(step)
    finally:
        checkpointer.close()


def _check_experiment(workdir: Path, experiment: str) -> None:
    from dcgan_jax import config as config_lib

    config_path = workdir / "config.json"
    if not config_path.exists():
        raise checkpoints.CheckpointError(f"{config_path.absolute()} is missing: is {workdir} a run folder?")
    stored = config_lib.flatten(ml_collections.ConfigDict(json.loads(config_path.read_text())))
    expected = config_lib.flatten(config_lib.load_experiment(experiment, EXPERIMENTS_DIR))
    fields = [k for k in expected if k.startswith(("dataset.name", "model.")) and stored.get(k) != expected[k]]
    if fields:
        differences = ", ".join(f"{k}: run {stored.get(k)!r}, {experiment} {expected[k]!r}" for k in fields)
        raise checkpoints.CheckpointError(
            f"{workdir.absolute()} holds a run of another experiment than {experiment} ({differences})"
        )


def _output(run: TrainedGenerator, path: str | Path | None, name: str) -> Path:
    return Path(path) if path else run.workdir / "analysis" / name


def sample_grid(run: TrainedGenerator, path: str | Path | None = None, num: int = 64, seed: int = 0) -> Path:
    """A grid of ``num`` samples drawn with ``seed``; for a conditional model one row per class."""
    out = _output(run, path, f"samples_step{run.step}_seed{seed}.png")
    if not run.num_classes:
        return images.save_grid(run.sample(num, seed), out)
    columns, labels = train_step.grid_labels(num, run.num_classes)
    return images.save_grid(run.sample(len(labels), seed, labels), out, columns=columns)


def interpolation_strips(
    run: TrainedGenerator,
    path: str | Path | None = None,
    num_strips: int = 8,
    num_points: int = 10,
    seed: int = 0,
    endpoints: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """One row per pair of latent vectors (random from ``seed``, or the given ``endpoints``, each
    (num_strips, latent_dim)), walked by spherical interpolation."""
    if endpoints is None:
        z = np.asarray(run.latents(2 * num_strips, seed))
        endpoints = (z[:num_strips], z[num_strips:])
    starts, ends = (np.atleast_2d(np.asarray(e, np.float32)) for e in endpoints)
    strips = np.concatenate([run.interpolate(a, b, num_points) for a, b in zip(starts, ends, strict=True)])
    out = _output(run, path, f"interpolation_step{run.step}_seed{seed}.png")
    return images.save_grid(strips, out, columns=num_points)


def training_images(run: TrainedGenerator) -> np.ndarray:
    """The run's training split in [-1, 1], read as its config says."""
    from dcgan_jax import data

    train_uint8, _ = data.load_dataset(run.config.dataset, run.config.seed)
    return data.to_model_range(train_uint8)


def nearest_training_images(
    run: TrainedGenerator,
    path: str | Path | None = None,
    num: int = 8,
    k: int = 5,
    seed: int = 0,
    space: str = "pixel",
    train_images: np.ndarray | None = None,
) -> Path:
    """Each row: a sample, then its ``k`` nearest training images, by pixel L2 or in the
    evaluation classifier's feature space (``space="feature"``). Copies of training images
    (memorisation) show as near-identical neighbours."""
    if train_images is None:
        train_images = training_images(run)
    samples = run.sample(num, seed)
    nearest = nearest_indices(samples, train_images, k, space, run.config.dataset.name)
    rows = [np.concatenate([samples[i : i + 1], train_images[nearest[i]]]) for i in range(num)]
    out = _output(run, path, f"nearest_{space}_step{run.step}_seed{seed}.png")
    return images.save_grid(np.concatenate(rows), out, columns=k + 1)


def nearest_indices(
    samples: np.ndarray, train_images: np.ndarray, k: int, space: str = "pixel", dataset: str = "fashion_mnist"
) -> np.ndarray:
    """(len(samples), k) indices of each sample's nearest training images, nearest first."""
    from dcgan_jax import classifier, metrics

    if space == "pixel":
        query, keys = samples.reshape(len(samples), -1), train_images.reshape(len(train_images), -1)
    elif space == "feature":
        features = classifier.make_apply(classifier.load_params(dataset)[0])
        query, keys = features(samples)[0], features(train_images)[0]
    else:
        raise ValueError(f"space must be 'pixel' or 'feature', got {space!r}")
    distances = np.concatenate(
        [np.asarray(metrics.squared_distances(query, keys[i : i + 10_000])) for i in range(0, len(keys), 10_000)],
        axis=1,
    )
    return np.argsort(distances, axis=1)[:, :k]


def progress_grid(
    workdir: str | Path, path: str | Path | None = None, num: int = 10, seed: int = 0, steps: list[int] | None = None
) -> Path:
    """One row per checkpoint (all kept ones by default), the same ``num`` latent vectors in every
    row: how the generator's answer to one z changes as training goes on."""
    workdir = Path(workdir)
    checkpointer = checkpoints.Checkpointer(workdir, create=False)
    try:
        steps = steps or checkpointer.all_steps()
    finally:
        checkpointer.close()
    runs = [load(workdir, step) for step in steps]
    z = runs[0].latents(num, seed)
    rows = np.concatenate([run.generate(z) for run in runs])
    out = Path(path) if path else workdir / "analysis" / f"progress_seed{seed}.png"
    return images.save_grid(rows, out, columns=num)


def metric_curves(workdirs: list[str | Path], path: str | Path, metric: str = "g_loss") -> Path:
    """``metric`` over steps for one or several runs, one line each."""
    return images.plot_metric([Path(w) for w in workdirs], metric, Path(path))


def main(argv: list[str]) -> None:
    from absl import flags

    FLAGS = flags.FLAGS
    try:
        run = load(FLAGS.workdir, FLAGS.step, experiment=FLAGS.experiment)
        train_images = training_images(run)  # Read once for both neighbour pictures.
        written = [
            sample_grid(run, seed=FLAGS.seed),
            interpolation_strips(run, seed=FLAGS.seed),
            nearest_training_images(run, seed=FLAGS.seed, space="pixel", train_images=train_images),
            progress_grid(FLAGS.workdir, seed=FLAGS.seed),
        ]
        from dcgan_jax import classifier

        try:
            written.append(nearest_training_images(run, seed=FLAGS.seed, space="feature", train_images=train_images))
        except classifier.ClassifierMissingError as e:
            print(f"skipped the feature-space neighbours: {e}")
        runs = [FLAGS.workdir, *FLAGS.compare]
        for metric in FLAGS.metrics:
            name = metric.replace("/", "_")
            written.append(metric_curves(runs, Path(FLAGS.workdir) / "analysis" / f"{name}.png", metric))
    except checkpoints.CheckpointError as e:
        raise SystemExit(f"error: {e}") from e
    print("\n".join(str(p) for p in written))


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("workdir", None, "The run folder.", required=True)
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
    flags.DEFINE_integer("seed", 0, "Seed of the latent vectors.")
    flags.DEFINE_string("experiment", None, "Check that the run belongs to this experiment.")
    flags.DEFINE_list("compare", [], "Other run folders to plot the metrics of beside this one.")
    flags.DEFINE_list("metrics", ["g_loss", "d_loss", "eval/fid"], "Metrics to plot over steps.")
    app.run(main)
