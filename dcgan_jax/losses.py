"""GAN losses on discriminator logits, and the discriminator's health signals."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def bce_with_logits(logits: jax.Array, label: float) -> jax.Array:
    """Mean binary cross-entropy of sigmoid(logits) against a constant label, stable for any logit."""
    # -log(sigmoid(l)) = softplus(-l); -log(1 - sigmoid(l)) = softplus(l).
    return jnp.mean(label * jax.nn.softplus(-logits) + (1.0 - label) * jax.nn.softplus(logits))


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """-log D(x) - log(1 - D(G(z))), averaged over each batch."""
    return bce_with_logits(real_logits, 1.0) + bce_with_logits(fake_logits, 0.0)


def generator_loss(fake_logits: jax.Array, kind: str) -> jax.Array:
    """``non_saturating``: -log D(G(z)) (Goodfellow et al.'s practical choice, strong early
    gradients); ``minimax``: log(1 - D(G(z))), the game's original objective."""
    if kind == "non_saturating":
        return bce_with_logits(fake_logits, 1.0)
    if kind == "minimax":
        return -bce_with_logits(fake_logits, 0.0)
    raise ValueError(f"unknown generator loss {kind!r}; use non_saturating or minimax")


def discriminator_metrics(real_logits: jax.Array, fake_logits: jax.Array) -> dict[str, jax.Array]:
    """Accuracy on each side (near 50% at equilibrium, near 100% when D wins) and mean D outputs."""
    return {
        "d_real_acc": jnp.mean(real_logits > 0),
        "d_fake_acc": jnp.mean(fake_logits < 0),
        "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
        "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),
    }
