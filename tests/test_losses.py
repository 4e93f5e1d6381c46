import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcgan_jax.gan import losses

LOG2 = float(np.log(2.0))


def test_bce_on_hand_computed_logits():
    # sigmoid(0) = 0.5 -> -log 0.5 = log 2 for either label.
    assert float(losses.bce_with_logits(jnp.zeros(3), 1.0)) == pytest.approx(LOG2)
    assert float(losses.bce_with_logits(jnp.zeros(3), 0.0)) == pytest.approx(LOG2)
    # logit log(3): D = 0.75, -log 0.75 and -log 0.25.
    logit = jnp.array([np.log(3.0)])
    assert float(losses.bce_with_logits(logit, 1.0)) == pytest.approx(-np.log(0.75), rel=1e-6)
    assert float(losses.bce_with_logits(logit, 0.0)) == pytest.approx(-np.log(0.25), rel=1e-6)


def test_bce_is_finite_for_extreme_logits():
    logits = jnp.array([-1000.0, 1000.0])
    assert float(losses.bce_with_logits(logits, 1.0)) == pytest.approx(500.0)
    assert np.isfinite(float(losses.bce_with_logits(logits, 0.0)))


def test_discriminator_loss_by_hand():
    real, fake = jnp.array([np.log(3.0), 0.0]), jnp.array([-np.log(3.0)])
    # Real: mean(-log .75, -log .5); fake logit -log 3 -> D = .25, -log(1 - .25).
    expected = (-np.log(0.75) + LOG2) / 2 + -np.log(0.75)
    assert float(losses.discriminator_loss(real, fake)) == pytest.approx(expected, rel=1e-6)


def test_one_sided_label_smoothing_targets_reals_only():
    real, fake = jnp.array([np.log(3.0)]), jnp.array([-np.log(3.0)])  # D = 0.75 on both.
    # Real target 0.9: -(0.9 log .75 + 0.1 log .25); the fake's term is unchanged, -log .75.
    expected = -(0.9 * np.log(0.75) + 0.1 * np.log(0.25)) - np.log(0.75)
    assert float(losses.discriminator_loss(real, fake, "bce", real_label=0.9)) == pytest.approx(
        expected, rel=1e-6
    )


def test_generator_losses_by_hand():
    fake = jnp.array([np.log(3.0)])  # D(G(z)) = 0.75
    assert float(losses.generator_loss(fake, "bce", "non_saturating")) == pytest.approx(
        -np.log(0.75), rel=1e-6
    )
    assert float(losses.generator_loss(fake, "bce", "minimax")) == pytest.approx(
        np.log(0.25), rel=1e-6
    )
    # A variant other than these two is the config's error (tests/test_config.py).
    with pytest.raises(ValueError, match="bce, hinge, lsgan, wgan_gp"):
        losses.generator_loss(fake, "wasserstein")


REAL, FAKE = jnp.array([2.0, 0.5, -1.0]), jnp.array([-2.0, 0.0, 1.5])


def test_hinge_by_hand():
    # D: mean(relu(1 - r)) = (0 + .5 + 2) / 3; mean(relu(1 + f)) = (0 + 1 + 2.5) / 3.
    assert float(losses.discriminator_loss(REAL, FAKE, "hinge")) == pytest.approx(2.5 / 3 + 3.5 / 3)
    assert float(losses.generator_loss(FAKE, "hinge")) == pytest.approx(-(-2.0 + 0.0 + 1.5) / 3)


def test_least_squares_by_hand():
    # D: .5 mean((r - 1)^2) + .5 mean(f^2) = .5 (1 + .25 + 4) / 3 + .5 (4 + 0 + 2.25) / 3.
    assert float(losses.discriminator_loss(REAL, FAKE, "lsgan")) == pytest.approx(
        0.5 * 5.25 / 3 + 0.5 * 6.25 / 3
    )
    # G: .5 mean((f - 1)^2) = .5 (9 + 1 + .25) / 3.
    assert float(losses.generator_loss(FAKE, "lsgan")) == pytest.approx(0.5 * 10.25 / 3)


def test_wasserstein_by_hand():
    # D: mean(f) - mean(r) = -.5/3 - 1.5/3; G: -mean(f).
    assert float(losses.discriminator_loss(REAL, FAKE, "wgan_gp")) == pytest.approx(
        -0.5 / 3 - 1.5 / 3
    )
    assert float(losses.generator_loss(FAKE, "wgan_gp")) == pytest.approx(0.5 / 3)


def _critic(x):
    """A small non-linear per-image critic: sum(tanh(w * x) ** 2), no batch mixing."""
    w = jnp.linspace(-1.0, 2.0, x[0].size).reshape(x.shape[1:])
    return jnp.sum(jnp.tanh(w * x) ** 2, axis=tuple(range(1, x.ndim)))


def _finite_difference_gradient(image: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Central differences of the critic on one image (float64 numpy, independent of jax.grad)."""
    w = np.linspace(-1.0, 2.0, image.size).reshape(image.shape)

    def f(x):
        return np.sum(np.tanh(w * x) ** 2)

    grad = np.zeros_like(image)
    for index in np.ndindex(image.shape):
        step = np.zeros_like(image)
        step[index] = h
        grad[index] = (f(image + step) - f(image - step)) / (2 * h)
    return grad


def test_gradient_penalty_against_finite_differences():
    key = jax.random.key(0)
    real = np.asarray(jax.random.normal(jax.random.key(1), (3, 4, 4, 1)), np.float64)
    fake = np.asarray(jax.random.normal(jax.random.key(2), (3, 4, 4, 1)), np.float64)
    penalty = float(
        losses.gradient_penalty(
            _critic, jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32), key
        )
    )
    # The same interpolation weights the penalty draws.
    eps = np.asarray(jax.random.uniform(key, (3, 1, 1, 1), jnp.float32), np.float64)
    interpolates = eps * real + (1 - eps) * fake
    norms = [np.linalg.norm(_finite_difference_gradient(x)) for x in interpolates]
    expected = np.mean((np.array(norms) - 1.0) ** 2)
    assert penalty == pytest.approx(expected, rel=1e-4)
    assert expected > 0.01  # The critic's gradients are far from unit norm: a real check.


def test_r1_penalty_against_finite_differences():
    real = np.asarray(jax.random.normal(jax.random.key(3), (2, 4, 4, 1)), np.float64)
    r1 = float(losses.r1_penalty(_critic, jnp.asarray(real, jnp.float32)))
    expected = np.mean([np.sum(_finite_difference_gradient(x) ** 2) for x in real])
    assert r1 == pytest.approx(expected, rel=1e-4)


def test_discriminator_metrics_by_hand():
    metrics = losses.discriminator_metrics(jnp.array([1.0, -1.0, 2.0, 3.0]), jnp.array([-1.0, 1.0]))
    assert float(metrics["d_real_acc"]) == pytest.approx(0.75)
    assert float(metrics["d_fake_acc"]) == pytest.approx(0.5)
    assert float(metrics["d_fake"]) == pytest.approx(0.5)
    # Mean real logit 1.25, mean fake 0.
    assert float(metrics["d_logit_gap"]) == pytest.approx(1.25)


def test_top_k_weights_keep_the_fakes_d_rates_most_real():
    logits = jnp.array([0.1, 3.0, -2.0, 1.0, -0.5])
    np.testing.assert_array_equal(losses.top_k_weights(logits, 0.4), [0, 1, 0, 1, 0])  # k = 2.
    # ceil(2.5) = 3.
    np.testing.assert_array_equal(losses.top_k_weights(logits, 0.5), [1, 1, 0, 1, 0])
    # At least one.
    np.testing.assert_array_equal(losses.top_k_weights(logits, 0.01), [0, 1, 0, 0, 0])
    np.testing.assert_array_equal(losses.top_k_weights(logits, 1.0), [1, 1, 1, 1, 1])


@pytest.mark.parametrize(
    ("name", "kind"), [("bce", "non_saturating"), ("bce", "minimax"), ("hinge", ""), ("lsgan", "")]
)
def test_weighted_generator_loss_is_the_loss_of_the_kept_fakes_alone(name, kind):
    logits = jnp.array([0.1, 3.0, -2.0, 1.0, -0.5])
    kept = jnp.array([0.0, 1.0, 0.0, 1.0, 0.0])
    alone = losses.generator_loss(logits[jnp.array([1, 3])], name, kind or "non_saturating")
    weighted = losses.generator_loss(logits, name, kind or "non_saturating", weights=kept)
    assert float(weighted) == pytest.approx(float(alone), rel=1e-6)
