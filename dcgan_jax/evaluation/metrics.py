"""Sample-quality metrics: pure functions of features and class probabilities; pairwise parts run
jitted in blocks of rows, so memory stays bounded at any number of samples (docs/evaluation.md)."""

import jax
import jax.numpy as jnp
import numpy as np

BLOCK = 1000  # Rows of a pairwise-distance block: 1000 x 10,000 float32 = 40 MB.


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^1/2), in float64. The trace of the square root comes
    from the eigenvalues of C1^1/2 C2 C1^1/2 (symmetric), which avoids a general matrix sqrt."""
    mu1, mu2, cov1, cov2 = (np.asarray(a, np.float64) for a in (mu1, mu2, cov1, cov2))
    values, vectors = np.linalg.eigh(cov1)
    sqrt_cov1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = np.linalg.eigvalsh(sqrt_cov1 @ cov2 @ sqrt_cov1)
    trace_sqrt = np.sum(np.sqrt(np.clip(middle, 0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt)


def mean_and_cov(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


@jax.jit
def _mmd2_unbiased(x, y):
    """Unbiased MMD^2 with the cubic polynomial kernel (x.y / d + 1)^3 of Binkowski et al. 2018."""
    m, d = x.shape

    def kernel(a, b):
        return (a @ b.T / d + 1) ** 3

    kxx, kyy = kernel(x, x), kernel(y, y)
    within = (jnp.sum(kxx) - jnp.trace(kxx) + jnp.sum(kyy) - jnp.trace(kyy)) / (m * (m - 1))
    return within - 2 * jnp.mean(kernel(x, y))


def kernel_inception_distance(
    real: np.ndarray,
    fake: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 over random subsets, as in Binkowski et al. 2018."""
    size = min(subset_size, len(real), len(fake))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_subsets):
        real_subset = jnp.asarray(real[rng.choice(len(real), size, replace=False)])
        fake_subset = jnp.asarray(fake[rng.choice(len(fake), size, replace=False)])
        values.append(float(_mmd2_unbiased(real_subset, fake_subset)))
    return float(np.mean(values)), float(np.std(values))


@jax.jit
def squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
    """(len(a), len(b)) squared Euclidean distances between rows."""
    return jnp.maximum(jnp.sum(a * a, 1)[:, None] - 2 * a @ b.T + jnp.sum(b * b, 1)[None, :], 0.0)


def _by_block(points: np.ndarray, others: np.ndarray, reduce, block: int = BLOCK) -> list:
    """``reduce`` of the squared distances of each block of ``points`` rows to all of ``others``,
    fetched to the host: a list with one result per block."""
    others = jnp.asarray(others)
    return [
        jax.device_get(reduce(squared_distances(jnp.asarray(points[i : i + block]), others)))
        for i in range(0, len(points), block)
    ]


def neighbour_radii(features: np.ndarray, ks: tuple[int, ...]) -> list[np.ndarray]:
    """For each k of ``ks``, each point's squared distance to its k-th nearest other point (one
    pass)."""
    nearest = _by_block(features, features, lambda d: -jax.lax.top_k(-d, max(ks) + 1)[0])
    return [np.concatenate(nearest)[:, k] for k in ks]  # Column 0 is the point itself.


def _fraction_inside(points, centres, radii):
    """Fraction of ``points`` inside at least one ball (centre, radius) of the other set's
    manifold."""
    radii = jnp.asarray(radii)  # On the device once, not per block.
    inside = _by_block(points, centres, lambda d: jnp.any(d <= radii, axis=1))
    return float(np.mean(np.concatenate(inside)))


def precision_recall(
    real: np.ndarray, fake: np.ndarray, k: int = 3, real_radii: np.ndarray | None = None
) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): the share of fakes on the real
    manifold and of reals on the fake one, a manifold being the union of balls reaching each point's
    k-th nearest neighbour. ``real_radii`` (:func:`neighbour_radii`) saves recomputing them."""
    real_radii = neighbour_radii(real, (k,))[0] if real_radii is None else real_radii
    return _fraction_inside(fake, real, real_radii), _fraction_inside(
        real, fake, neighbour_radii(fake, (k,))[0]
    )


def density_coverage(
    real: np.ndarray, fake: np.ndarray, k: int = 5, real_radii: np.ndarray | None = None
) -> tuple[float, float]:
    """Density (real k-NN balls holding a fake, on average, over k; about 1 for fakes like the
    reals) and coverage (the share of real balls holding a fake), Naeem et al. 2020, strict as their
    code."""
    real_radii = neighbour_radii(real, (k,))[0] if real_radii is None else real_radii
    radii = jnp.asarray(real_radii)

    def balls(d):  # Of a block of fakes: the balls holding them, and each real's nearest of them.
        return jnp.sum(d < radii), jnp.min(d, axis=0)

    blocks = _by_block(fake, real, balls)
    inside = sum(int(held) for held, _ in blocks)
    nearest = np.min([block_nearest for _, block_nearest in blocks], axis=0)
    return inside / (k * len(fake)), float(np.mean(nearest < real_radii))


def nearest_distances(queries: np.ndarray, keys: np.ndarray, block: int = 500) -> np.ndarray:
    """Squared distance of each query row to its nearest key row, ``block`` queries at a time."""
    return np.concatenate(_by_block(queries, keys, lambda d: jnp.min(d, axis=1), block))


def memorisation_ratio(
    sample_to_train: np.ndarray, heldout_to_train: np.ndarray, quantile: float = 0.05
) -> float:
    """How much more often samples lie near a training image than held-out real images do: the share
    of samples nearer than the ``quantile`` of the held-out images' :func:`nearest_distances`, over
    that quantile. About 1 for novel samples; 1 / quantile when every sample copies one."""
    threshold = np.quantile(heldout_to_train, quantile)
    return float(
        np.mean(sample_to_train < threshold) / max(np.mean(heldout_to_train < threshold), 1e-12)
    )


def intra_class_fid(
    features: np.ndarray, labels: np.ndarray, real_stats: list[tuple[np.ndarray, np.ndarray]]
) -> list[float]:
    """FID of each class's samples against that class's real images (``real_stats[c]``: their mean
    and covariance), as StudioGAN's iFID; NaN for a class with fewer than 2 samples."""
    per_class = []
    for c, (mu, cov) in enumerate(real_stats):
        mine = features[labels == c]
        if len(mine) < 2:
            per_class.append(float("nan"))
            continue
        mine_mu, mine_cov = mean_and_cov(mine)
        per_class.append(frechet_distance(mine_mu, mine_cov, mu, cov))
    return per_class


def inception_score(probs: np.ndarray) -> float:
    """exp(E_x KL(p(y|x) || p(y))) with the dataset's own classifier in place of Inception."""
    probs = np.asarray(probs, np.float64)
    marginal = probs.mean(axis=0, keepdims=True)
    kl = np.sum(probs * (np.log(probs + 1e-12) - np.log(marginal + 1e-12)), axis=1)
    return float(np.exp(kl.mean()))


def class_histogram(probs: np.ndarray, num_classes: int) -> np.ndarray:
    """Share of samples predicted as each class."""
    return np.bincount(np.argmax(probs, axis=1), minlength=num_classes) / len(probs)


def class_coverage(
    sample_hist: np.ndarray, real_hist: np.ndarray, min_share: float = 0.1
) -> tuple[int, float]:
    """(classes given at least ``min_share`` of their real share, KL(samples || real) of the
    predicted-class histograms)."""
    covered = int(np.sum(sample_hist >= min_share * real_hist))
    eps = 1e-6  # An empty class in either histogram.
    kl = np.sum(sample_hist * (np.log(sample_hist + eps) - np.log(real_hist + eps)))
    return covered, float(kl)


def mean_pairwise_distance(images: np.ndarray) -> float:
    """Mean L2 distance between the distinct pairs of ``images`` (flattened), in float64; NaN for a
    single image (no pair)."""
    if len(images) < 2:
        return float("nan")
    x = np.asarray(images, np.float64).reshape(len(images), -1)
    squared = np.maximum(np.sum(x * x, 1)[:, None] - 2 * x @ x.T + np.sum(x * x, 1)[None, :], 0.0)
    upper = np.triu_indices(len(x), k=1)
    return float(np.mean(np.sqrt(squared[upper])))


def sample_diversity(samples: np.ndarray, real_spread: float) -> float:
    """``samples``' :func:`mean_pairwise_distance` over the real images' (``real_spread``): near 1
    for samples as varied as the data, near 0 for mode collapse."""
    return mean_pairwise_distance(samples) / max(real_spread, 1e-12)
