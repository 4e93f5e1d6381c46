"""The metrics on features with known answers, without the classifier."""

import numpy as np
import pytest

from dcgan_jax.evaluation import metrics


def _gaussian(n, dim, mean=0.0, scale=1.0, seed=0):
    return np.random.default_rng(seed).normal(mean, scale, size=(n, dim)).astype(np.float32)


def test_frechet_distance_matches_the_closed_form_for_diagonal_covariances():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    assert metrics.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(
        expected
    )
    assert metrics.frechet_distance(mu1, np.diag(var1), mu1, np.diag(var1)) == pytest.approx(
        0.0, abs=1e-9
    )


def test_fid_grows_with_the_shift_between_two_samples():
    real = _gaussian(4000, 16)
    same = metrics.mean_and_cov(_gaussian(4000, 16, seed=1))
    shifted = metrics.mean_and_cov(_gaussian(4000, 16, mean=0.5, seed=1))
    real_stats = metrics.mean_and_cov(real)
    assert metrics.frechet_distance(*same, *real_stats) < 0.2
    assert metrics.frechet_distance(*shifted, *real_stats) == pytest.approx(16 * 0.25, rel=0.1)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_positive_for_another():
    real, same, other = (
        _gaussian(3000, 16),
        _gaussian(3000, 16, seed=1),
        _gaussian(3000, 16, mean=0.3, seed=1),
    )
    kid_same, std_same = metrics.kernel_inception_distance(real, same, num_subsets=20)
    kid_other, _ = metrics.kernel_inception_distance(real, other, num_subsets=20)
    assert abs(kid_same) < 3 * std_same + 1e-3  # Unbiased: can be slightly negative.
    assert kid_other > 10 * max(abs(kid_same), std_same)


def test_precision_and_recall_separate_fidelity_from_diversity():
    real = _gaussian(2000, 8)
    precision, recall = metrics.precision_recall(real, _gaussian(2000, 8, seed=1))
    assert precision > 0.8 and recall > 0.8
    # Collapse: every fake near one real point. Faithful but not diverse.
    collapsed = real[:1] + 0.01 * _gaussian(2000, 8, seed=2)
    precision, recall = metrics.precision_recall(real, collapsed)
    assert precision > 0.9 and recall < 0.05
    # Off the data: neither.
    precision, recall = metrics.precision_recall(real, _gaussian(2000, 8, mean=10.0, seed=3))
    assert precision == 0.0 and recall == 0.0


def test_inception_score_and_class_coverage():
    confident_uniform = np.eye(10)[np.arange(1000) % 10]
    assert metrics.inception_score(confident_uniform) == pytest.approx(10.0, rel=1e-6)
    one_class = np.eye(10)[np.zeros(1000, int)]
    assert metrics.inception_score(one_class) == pytest.approx(1.0)
    real_hist = np.full(10, 0.1)
    assert metrics.class_coverage(metrics.class_histogram(confident_uniform, 10), real_hist) == (
        10,
        pytest.approx(0),
    )
    covered, kl = metrics.class_coverage(metrics.class_histogram(one_class, 10), real_hist)
    assert covered == 1 and kl == pytest.approx(np.log(10), rel=1e-3)
    # A class drawn once in a thousand is not covered.
    rare = np.eye(10)[np.r_[np.zeros(991, int), np.arange(1, 10)]]
    assert metrics.class_coverage(metrics.class_histogram(rare, 10), real_hist)[0] == 1


def _clusters(rng, n, centres, spread=0.3):
    """``n`` points around ``centres`` (round-robin), Gaussian noise of sd ``spread``."""
    return (
        centres[np.arange(n) % len(centres)] + spread * rng.normal(size=(n, centres.shape[1]))
    ).astype(np.float32)


def test_density_and_coverage_of_constructed_sets():
    """Naeem et al. 2020, k=5: a second draw of the real distribution reads density ~1 and coverage
    ~1 - 2^-5 = 0.97; half the modes missing halves coverage but not density; fakes piled on the
    modes' centres push density far above 1. Without the division by k, with the fakes' own balls,
    or with recall's rule instead, these bounds fail."""
    rng = np.random.default_rng(0)
    centres = 4 * rng.normal(size=(10, 16))
    real, second = _clusters(rng, 4000, centres), _clusters(rng, 4000, centres)
    density, coverage = metrics.density_coverage(real, second, k=5)
    assert 0.85 < density < 1.15 and 0.94 < coverage < 0.99
    half = _clusters(rng, 4000, centres[:5])
    density_half, coverage_half = metrics.density_coverage(real, half, k=5)
    assert 0.85 < density_half < 1.15 and 0.45 < coverage_half < 0.52
    piled = _clusters(rng, 4000, centres, spread=0.05)
    density_piled, coverage_piled = metrics.density_coverage(real, piled, k=5)
    # Piled at the centres: the outskirts go uncovered.
    assert density_piled > 3 and coverage_piled < 0.8
    far = _clusters(rng, 4000, centres + 10)
    assert metrics.density_coverage(real, far, k=5) == (0.0, 0.0)


def test_memorisation_ratio_is_one_for_new_samples_and_high_for_copies():
    rng = np.random.default_rng(1)
    centres = 4 * rng.normal(size=(10, 16))
    train, heldout = _clusters(rng, 6000, centres), _clusters(rng, 2000, centres)
    heldout_to_train = metrics.nearest_distances(heldout, train)
    new = metrics.nearest_distances(_clusters(rng, 2000, centres), train)
    assert 0.7 < metrics.memorisation_ratio(new, heldout_to_train) < 1.3
    copies = train[rng.choice(len(train), 2000, replace=False)]
    assert (
        metrics.memorisation_ratio(metrics.nearest_distances(copies, train), heldout_to_train)
        == 20.0
    )
    half_copies = np.concatenate([copies[:1000], _clusters(rng, 1000, centres)])
    ratio = metrics.memorisation_ratio(
        metrics.nearest_distances(half_copies, train), heldout_to_train
    )
    assert 9.5 < ratio < 11.5  # Half the samples copied: (0.5 + 0.5 * 0.05) / 0.05.


def test_nearest_distances_match_brute_force():
    rng = np.random.default_rng(2)
    queries, keys = (
        rng.normal(size=(1200, 8)).astype(np.float32),
        rng.normal(size=(700, 8)).astype(np.float32),
    )
    brute = ((queries[:, None] - keys[None]) ** 2).sum(-1).min(1)
    np.testing.assert_allclose(
        metrics.nearest_distances(queries, keys, block=500), brute, rtol=1e-4, atol=1e-4
    )


def test_intra_class_fid_is_low_for_the_right_classes_and_nan_for_a_missing_one():
    rng = np.random.default_rng(3)
    centres = 4 * rng.normal(size=(3, 8))
    real = [_clusters(rng, 500, centres[c : c + 1]) for c in range(3)]
    stats = [metrics.mean_and_cov(r) for r in real]
    fake = np.concatenate([_clusters(rng, 500, centres[c : c + 1]) for c in (0, 1)])
    labels = np.repeat([0, 1], 500)
    right = metrics.intra_class_fid(fake, labels, stats)
    assert right[0] < 1 and right[1] < 1 and np.isnan(right[2])
    swapped = metrics.intra_class_fid(fake, 1 - labels, stats)
    assert min(swapped[:2]) > 50
