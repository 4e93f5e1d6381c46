"""GAN losses on discriminator logits, the gradient penalties, and the discriminator's health signals.

``loss.name`` picks the game: ``bce`` (Goodfellow et al. 2014, the DCGAN paper's), ``hinge``
(Lim & Ye 2017; Miyato et al. 2018), ``lsgan`` (Mao et al. 2017, a-b-c = 0-1-1) or ``wgan_gp``
(Gulrajani et al. 2017: a critic's scores and a gradient penalty on interpolates).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from dcgan_jax.config import GENERATOR_LOSSES, LOSSES


def bce_with_logits(logits: jax.Array, label: float) -> jax.Array:
    """Mean binary cross-entropy of sigmoid(logits) against a constant label, stable for any logit."""
    # -log(sigmoid(l)) = softplus(-l); -log(1 - sigmoid(l)) = softplus(l).
    return jnp.mean(label * jax.nn.softplus(-logits) + (1.0 - label) * jax.nn.softplus(logits))


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array, name: str = "bce") -> jax.Array:
    """D's loss, averaged over each batch (without any gradient penalty)."""
    real_logits, fake_logits = real_logits.astype(jnp.float32), fake_logits.astype(jnp.float32)
    if name == "bce":  # -log D(x) - log(1 - D(G(z)))
        return bce_with_logits(real_logits, 1.0) + bce_with_logits(fake_logits, 0.0)
    if name == "hinge":
        return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))
    if name == "lsgan":
        return 0.5 * jnp.mean((real_logits - 1.0) ** 2) + 0.5 * jnp.mean(fake_logits**2)
    if name == "wgan_gp":  # The critic's estimate of the Wasserstein distance, negated.
        return jnp.mean(fake_logits) - jnp.mean(real_logits)
    raise ValueError(f"unknown loss {name!r}; use one of {', '.join(LOSSES)}")


def generator_loss(fake_logits: jax.Array, name: str = "bce", bce_kind: str = "non_saturating") -> jax.Array:
    """G's loss. For ``bce``, ``bce_kind`` ``non_saturating`` is -log D(G(z)) (strong early
    gradients, Goodfellow et al.'s practical choice) and ``minimax`` is log(1 - D(G(z)))."""
    fake_logits = fake_logits.astype(jnp.float32)
    if name == "bce":
        if bce_kind == "non_saturating":
            return bce_with_logits(fake_logits, 1.0)
        if bce_kind == "minimax":
            return -bce_with_logits(fake_logits, 0.0)
        raise ValueError(f"unknown generator loss {bce_kind!r}; use one of {', '.join(GENERATOR_LOSSES)}")
    if name in ("hinge", "wgan_gp"):
        return -jnp.mean(fake_logits)
    if name == "lsgan":
        return 0.5 * jnp.mean((fake_logits - 1.0) ** 2)
    raise ValueError(f"unknown loss {name!r}; use one of {', '.join(LOSSES)}")


def input_gradients(critic: Callable[[jax.Array], jax.Array], images: jax.Array) -> jax.Array:
    """d critic(x_i) / d x_i for each image, flattened to (N, H*W*C). ``critic`` maps a batch to one
    score per image; with no cross-sample layers (no BatchNorm), the gradient of the sum is the
    per-sample gradient."""
    grads = jax.grad(lambda x: jnp.sum(critic(x).astype(jnp.float32)))(images)
    return grads.reshape(grads.shape[0], -1).astype(jnp.float32)


def gradient_penalty(
    critic: Callable[[jax.Array], jax.Array], real: jax.Array, fake: jax.Array, key: jax.Array
) -> jax.Array:
    """WGAN-GP: mean over the batch of (||grad critic(x_hat)|| - 1)^2 at x_hat = e*real + (1-e)*fake,
    e ~ U[0, 1] per image (unweighted: the caller multiplies by ``loss.gp_weight``)."""
    eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
    interpolates = eps * real + (1.0 - eps) * fake
    norms = jnp.sqrt(jnp.sum(input_gradients(critic, interpolates) ** 2, axis=1) + 1e-12)
    return jnp.mean((norms - 1.0) ** 2)


def r1_penalty(critic: Callable[[jax.Array], jax.Array], real: jax.Array) -> jax.Array:
    """R1 (Mescheder et al. 2018): mean over the batch of ||grad critic(x)||^2 on real images
    (unweighted: the caller multiplies by gamma / 2)."""
    return jnp.mean(jnp.sum(input_gradients(critic, real) ** 2, axis=1))


def discriminator_metrics(real_logits: jax.Array, fake_logits: jax.Array) -> dict[str, jax.Array]:
    """Accuracy on each side (near 50% at equilibrium, near 100% when D wins), the real-minus-fake
    gap of the mean logits, and mean D outputs
    (sigmoid of the logit; for the hinge, least-squares and Wasserstein losses read d_real and
    d_fake as a squashed score, the accuracies as the sign test they are)."""
    real_logits, fake_logits = real_logits.astype(jnp.float32), fake_logits.astype(jnp.float32)
    return {
        "d_real_acc": jnp.mean(real_logits > 0),
        "d_fake_acc": jnp.mean(fake_logits < 0),
        "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
        "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),
        # How far apart D holds the two sides: it grows without bound when D overpowers G.
        "d_logit_gap": jnp.mean(real_logits) - jnp.mean(fake_logits),
    }
