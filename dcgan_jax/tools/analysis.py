"""Looking at a trained generator: grids, interpolations, nearest training images, progress, curves.

    import dcgan_jax
    from dcgan_jax.tools import analysis
    run = dcgan_jax.load("runs/fashion_dcgan")      # newest checkpoint
    analysis.training_grid(run, "grid.png")          # samples/step_<N>.png of that step, exactly
    analysis.interpolation_strips(run, "strips.png")
    analysis.nearest_training_images(run, "nearest.png")

From the shell, into ``<workdir>/analysis/``: ``python -m dcgan_jax.analysis --workdir=RUN
[--step=N]``."""

from pathlib import Path

import numpy as np

from dcgan_jax.evaluation import classifier, metrics, references
from dcgan_jax.gan import data
from dcgan_jax.run import images
from dcgan_jax.tools.trained import TrainedGenerator, load_kept


def _output(workdir, path, name):
    """Where a picture goes: ``path`` (a PNG file, or a folder for ``name``), else
    ``<workdir>/analysis/<name>``."""
    folder = Path(workdir) / "analysis" if path is None else Path(path)
    return folder / name if path is None or folder.is_dir() else folder


def sample_grid(
    run: TrainedGenerator,
    path: str | Path | None = None,
    num: int = 64,
    seed: int = 0,
    by_class: bool = False,
) -> Path:
    """A square grid of ``num`` samples drawn with ``seed`` (a conditional model's labels cycling);
    ``by_class``: one row per class (or cluster) instead."""
    out = _output(run.workdir, path, f"samples_step{run.step}_seed{seed}.png")
    if not run.num_classes or not by_class:
        return images.save_grid(run.sample(num, seed), out)
    columns = max(1, num // run.num_classes)  # One row per class.
    labels = np.repeat(np.arange(run.num_classes), columns)
    return images.save_grid(run.sample(len(labels), seed, labels), out, columns=columns)


def training_grid(run: TrainedGenerator, path: str | Path | None = None) -> Path:
    """The run's own sample grid at ``run.step``: the same picture as ``samples/step_<N>.png``."""
    grid, columns = run.training_grid()
    return images.save_grid(
        grid, _output(run.workdir, path, f"training_grid_step{run.step}.png"), columns=columns
    )


def interpolation_strips(
    run: TrainedGenerator,
    path: str | Path | None = None,
    num_strips: int = 8,
    num_points: int = 10,
    seed: int = 0,
    *,
    endpoints: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """One row per pair of latent vectors (random from ``seed``, or the given ``endpoints``, each
    (num_strips, latent_dim)), walked by spherical interpolation."""
    if endpoints is None:
        z = np.asarray(run.latents(2 * num_strips, seed))
        endpoints = (z[:num_strips], z[num_strips:])
        name = f"interpolation_step{run.step}_seed{seed}.png"
    else:
        name = f"interpolation_step{run.step}_endpoints.png"  # Not the random strips' file.
    starts, ends = (np.atleast_2d(np.asarray(e, np.float32)) for e in endpoints)
    if starts.shape != ends.shape:
        raise ValueError(
            f"endpoints: starts and ends of the same shape expected, got {starts.shape} and "
            f"{ends.shape}"
        )
    strips = np.concatenate(
        [run.interpolate(a, b, num_points) for a, b in zip(starts, ends, strict=True)]
    )
    return images.save_grid(strips, _output(run.workdir, path, name), columns=num_points)


def training_images(run: TrainedGenerator) -> np.ndarray:
    """The run's training split as uint8 pixels, read as its config says (in [-1, 1] it would be 4
    times the bytes: 8 GB for CelebA's)."""
    return data.load_dataset(run.config.dataset, run.config.seed)[0]


def nearest_training_images(
    run: TrainedGenerator,
    path: str | Path | None = None,
    *,
    num: int = 8,
    space: str = "pixel",
    k: int = 5,
    seed: int = 0,
    train_images: np.ndarray | None = None,
) -> Path:
    """Each row: a sample, then its ``k`` nearest training images, by pixel L2 or in the evaluation
    classifier's feature space (``space="feature"``): a copied training image shows as a twin."""
    train_images = training_images(run) if train_images is None else train_images
    samples = run.sample(num, seed)
    nearest = nearest_indices(samples, train_images, k, space, run.config.dataset.name)
    rows = [
        np.concatenate([samples[i : i + 1], references.model_range(train_images[nearest[i]])])
        for i in range(num)
    ]
    out = _output(run.workdir, path, f"nearest_{space}_step{run.step}_seed{seed}.png")
    return images.save_grid(np.concatenate(rows), out, columns=k + 1)


def nearest_indices(
    samples: np.ndarray,
    train_images: np.ndarray,
    k: int,
    space: str = "pixel",
    dataset: str = "fashion_mnist",
) -> np.ndarray:
    """(len(samples), k) indices of each sample's nearest training images (uint8 pixels or in [-1,
    1]), nearest first."""
    if space == "pixel":
        query, keys = samples.reshape(len(samples), -1), train_images.reshape(len(train_images), -1)
    elif space == "feature":
        features = classifier.make_apply(classifier.load_params(dataset)[0])
        query, keys = features(samples)[0], features(train_images)[0]
    else:
        raise ValueError(f"space must be 'pixel' or 'feature', got {space!r}")
    blocks = (keys[i : i + 10_000] for i in range(0, len(keys), 10_000))
    distances = np.concatenate(
        [np.asarray(metrics.squared_distances(query, references.model_range(b))) for b in blocks],
        axis=1,
    )
    return np.argsort(distances, axis=1)[:, :k]


def memorisation(
    run: TrainedGenerator,
    evaluator,
    path: str | Path | None = None,
    *,
    num: int = 8,
    num_samples: int = 10_000,
    seed: int = 0,
) -> tuple[float, Path]:
    """(:func:`~dcgan_jax.metrics.memorisation_ratio` of ``num_samples`` samples, a picture of the
    ``num`` samples nearest a training image, each beside it), with ``evaluator`` of the run's
    dataset."""
    samples = run.sample(num_samples, seed)
    features, _ = evaluator.features_of(samples, min_samples=1)
    to_train = metrics.nearest_distances(features, evaluator.train_features)
    ratio = metrics.memorisation_ratio(to_train, evaluator.heldout_to_train)
    suspicious = np.argsort(to_train)[:num]
    nearest = np.argmin(
        np.asarray(metrics.squared_distances(features[suspicious], evaluator.train_features)),
        axis=1,
    )
    twins = data.to_model_range(evaluator.training_images()[nearest])
    pairs = np.concatenate([samples[suspicious][:, None], twins[:, None]], axis=1)
    out = _output(run.workdir, path, f"memorisation_step{run.step}_seed{seed}.png")
    return ratio, images.save_grid(pairs.reshape(-1, *samples.shape[1:]), out, columns=2)


def progress_grid(
    workdir: str | Path,
    path: str | Path | None = None,
    num: int = 10,
    seed: int = 0,
    steps: list[int] | None = None,
) -> Path:
    """One row per checkpoint (all kept ones by default), the same ``num`` latent vectors in every
    row: how the generator's answer to one z changes as training goes on."""
    runs = load_kept(workdir, steps)
    z = runs[0].latents(num, seed)
    rows = np.concatenate([run.generate(z) for run in runs])
    return images.save_grid(
        rows, _output(Path(workdir), path, f"progress_seed{seed}.png"), columns=num
    )


def metric_curves(workdirs: list[str | Path], path: str | Path, metric: str = "g_loss") -> Path:
    """``metric`` over steps for one or several runs, one line each."""
    return images.plot_metric([Path(w) for w in workdirs], metric, Path(path))
