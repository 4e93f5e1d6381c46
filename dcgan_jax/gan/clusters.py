"""Clusters of the training images' pixels, found without labels: the classes of a self-conditioned
GAN (``dataset.labels=clusters``; Liu et al. 2020 cluster D's features). A connected latent space
mapped onto separate modes draws hybrids between them (Khayatkhoei et al. 2018); a cluster per
mode avoids them. Clusters are equal in size, matching the uniform draw of fake labels
(docs/model.md)."""

import numpy as np

# Larger images are average-pooled to about this many pixels a side before clustering.
MAX_SIDE = 32
ITERATIONS = 30  # Lloyd iterations, at most (it stops when no assignment changes).


def pixel_features(images: np.ndarray) -> np.ndarray:
    """(N, D) float32 in [0, 1]: uint8 NHWC images, average-pooled to at most ~``MAX_SIDE``
    a side, 256 at a time (a float copy of a whole set of large images would not fit)."""
    n, h, w, c = images.shape
    f = -(-max(h, w) // MAX_SIDE)  # Ceiling division: the pooling factor.
    blocks = images[:, : h // f * f, : w // f * f].reshape(n, h // f, f, w // f, f, c)
    pooled = [
        (blocks[i : i + 256].astype(np.float32) / 255.0).mean(axis=(2, 4)) for i in range(0, n, 256)
    ]
    return np.concatenate(pooled).reshape(n, -1)


def balance(sq_distances: np.ndarray) -> np.ndarray:
    """Each row's cluster, every cluster getting N // K or N // K + 1 rows: in rounds, each unplaced
    row asks for its nearest cluster with room, which takes the nearest askers while it has room."""
    n, k = sq_distances.shape
    room = np.full(k, n // k)
    room[: n % k] += 1
    assignment = np.full(n, -1)
    cost = sq_distances.astype(np.float64)  # A copy: full clusters get infinite cost.
    while (unplaced := np.flatnonzero(assignment < 0)).size:
        asked = cost[unplaced].argmin(axis=1)
        for j in np.unique(asked):
            askers = unplaced[asked == j]
            taken = askers[np.argsort(sq_distances[askers, j], kind="stable")[: room[j]]]
            assignment[taken] = j
            room[j] -= len(taken)
        cost[:, room == 0] = np.inf
    return assignment


def _squared_distances(x, x_sq, centres):
    return np.maximum(x_sq[:, None] - 2 * x @ centres.T + (centres * centres).sum(axis=1), 0.0)


def _kmeans_plus_plus(x, x_sq, k: int, rng: np.random.Generator) -> np.ndarray:
    """Initial centres spread over the data (Arthur & Vassilvitskii 2007)."""
    centres = [x[rng.integers(len(x))]]
    nearest = _squared_distances(x, x_sq, centres[0][None])[:, 0]
    for _ in range(k - 1):
        centres.append(x[rng.choice(len(x), p=nearest / nearest.sum())])
        nearest = np.minimum(nearest, _squared_distances(x, x_sq, centres[-1][None])[:, 0])
    return np.stack(centres)


def balanced_kmeans(images: np.ndarray, num_clusters: int, seed: int) -> np.ndarray:
    """(N,) int64 cluster of each uint8 NHWC image (2 to N clusters, as the config and
    :func:`dcgan_jax.gan.loop.assemble` check): k-means on pixels with balanced assignments;
    the same for the same images and seed (so a resumed run gets the clusters it started with)."""
    x = pixel_features(images)
    x_sq = (x * x).sum(axis=1)
    centres = _kmeans_plus_plus(x, x_sq, num_clusters, np.random.default_rng(seed))
    assignment = None
    for _ in range(ITERATIONS):
        new = balance(_squared_distances(x, x_sq, centres))
        if assignment is not None and np.array_equal(new, assignment):
            break
        assignment = new
        for j in range(num_clusters):
            if np.any(members := assignment == j):
                centres[j] = x[members].mean(axis=0)
    return assignment.astype(np.int64)
