import jax.numpy as jnp
import numpy as np
import pytest

from dcgan_jax import losses

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


def test_generator_losses_by_hand():
    fake = jnp.array([np.log(3.0)])  # D(G(z)) = 0.75
    assert float(losses.generator_loss(fake, "non_saturating")) == pytest.approx(-np.log(0.75), rel=1e-6)
    assert float(losses.generator_loss(fake, "minimax")) == pytest.approx(np.log(0.25), rel=1e-6)
    with pytest.raises(ValueError, match="hinge"):
        losses.generator_loss(fake, "hinge")


def test_discriminator_metrics_by_hand():
    metrics = losses.discriminator_metrics(jnp.array([1.0, -1.0, 2.0, 3.0]), jnp.array([-1.0, 1.0]))
    assert float(metrics["d_real_acc"]) == pytest.approx(0.75)
    assert float(metrics["d_fake_acc"]) == pytest.approx(0.5)
    assert float(metrics["d_fake"]) == pytest.approx(0.5)
