"""The metrics on features with known answers, without the classifier."""

import numpy as np
import pytest

from dcgan_jax import metrics


def _gaussian(n, dim, mean=0.0, scale=1.0, seed=0):
    return np.random.default_rng(seed).normal(mean, scale, size=(n, dim)).astype(np.float32)


def test_frechet_distance_matches_the_closed_form_for_diagonal_covariances():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    assert metrics.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected)
    assert metrics.frechet_distance(mu1, np.diag(var1), mu1, np.diag(var1)) == pytest.approx(0.0, abs=1e-9)


def test_fid_grows_with_the_shift_between_two_samples():
    real = _gaussian(4000, 16)
    same = metrics.mean_and_cov(_gaussian(4000, 16, seed=1))
    shifted = metrics.mean_and_cov(_gaussian(4000, 16, mean=0.5, seed=1))
    real_stats = metrics.mean_and_cov(real)
    assert metrics.frechet_distance(*same, *real_stats) < 0.2
    assert metrics.frechet_distance(*shifted, *real_stats) == pytest.approx(16 * 0.25, rel=0.1)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_positive_for_another():
    real, same, other = _gaussian(3000, 16), _gaussian(3000, 16, seed=1), _gaussian(3000, 16, mean=0.3, seed=1)
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
    assert metrics.class_coverage(metrics.class_histogram(confident_uniform, 10), real_hist) == (10, pytest.approx(0))
    covered, kl = metrics.class_coverage(metrics.class_histogram(one_class, 10), real_hist)
    assert covered == 1 and kl == pytest.approx(np.log(10), rel=1e-3)
    # A class drawn once in a thousand is not covered.
    rare = np.eye(10)[np.r_[np.zeros(991, int), np.arange(1, 10)]]
    assert metrics.class_coverage(metrics.class_histogram(rare, 10), real_hist)[0] == 1
