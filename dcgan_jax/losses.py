"""GAN losses on D's logits (``loss.name``: ``bce`` as in the DCGAN paper, ``hinge``, ``lsgan`` with
a-b-c = 0-1-1, ``wgan_gp``), the gradient penalties and D's health signals."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from dcgan_jax.config import GENERATOR_LOSSES, LOSSES


def bce_with_logits(logits: jax.Array, label: float) -> jax.Array:
    """Mean binary cross-entropy of sigmoid(logits) against a constant label, stable for any logit."""
    # -log(sigmoid(l)) = softplus(-l); -log(1 - sigmoid(l)) = softplus(l).
    return jnp.mean(label * jax.nn.softplus(-logits) + (1.0 - label) * jax.nn.softplus(logits))


def discriminator_loss(
    real_logits: jax.Array, fake_logits: jax.Array, name: str = "bce", real_label: float = 1.0
) -> jax.Array:
    """D's loss, averaged over each batch (without penalties); ``real_label`` below 1: ``bce`` with
    one-sided label smoothing (Salimans et al. 2016)."""
    real_logits, fake_logits = real_logits.astype(jnp.float32), fake_logits.astype(jnp.float32)
    if name == "bce":  # -log D(x) - log(1 - D(G(z)))
        return bce_with_logits(real_logits, real_label) + bce_with_logits(fake_logits, 0.0)
    if name == "hinge":
        return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))
    if name == "lsgan":
        return 0.5 * jnp.mean((real_logits - 1.0) ** 2) + 0.5 * jnp.mean(fake_logits**2)
    if name == "wgan_gp":  # The critic's estimate of the Wasserstein distance, negated.
        return jnp.mean(fake_logits) - jnp.mean(real_logits)
    raise ValueError(f"unknown loss {name!r}; use one of {', '.join(LOSSES)}")


def generator_loss(
    fake_logits: jax.Array, name: str = "bce", bce_kind: str = "non_saturating", weights: jax.Array | None = None
) -> jax.Array:
    """G's loss, averaged over the fakes (weighted by :func:`top_k_weights` where given); for ``bce``,
    ``non_saturating`` -log D(G(z)) or ``minimax`` log(1 - D(G(z)))."""
    per_fake = generator_loss_per_fake(fake_logits.astype(jnp.float32), name, bce_kind)
    return jnp.mean(per_fake) if weights is None else jnp.sum(per_fake * weights) / jnp.sum(weights)


def generator_loss_per_fake(fake_logits: jax.Array, name: str, bce_kind: str) -> jax.Array:
    """Each fake's term of G's loss (see :func:`generator_loss`)."""
    if name == "bce":
        if bce_kind == "non_saturating":  # -log(sigmoid(l)) = softplus(-l)
            return jax.nn.softplus(-fake_logits)
        if bce_kind == "minimax":  # log(1 - sigmoid(l)) = -softplus(l)
            return -jax.nn.softplus(fake_logits)
        raise ValueError(f"unknown generator loss {bce_kind!r}; use one of {', '.join(GENERATOR_LOSSES)}")
    if name in ("hinge", "wgan_gp"):
        return -fake_logits
    if name == "lsgan":
        return 0.5 * (fake_logits - 1.0) ** 2
    raise ValueError(f"unknown loss {name!r}; use one of {', '.join(LOSSES)}")


def top_k_weights(fake_logits: jax.Array, keep: jax.Array) -> jax.Array:
    """1 for the ``ceil(keep * N)`` fakes D rates most real, 0 for the rest (Sinha et al. 2020: pulling
    the worst fakes toward the data can push them from their mode); ties at the k-th are kept."""
    n = fake_logits.shape[0]
    k = jnp.clip(jnp.ceil(keep * n).astype(jnp.int32), 1, n)
    kth_highest = jnp.sort(fake_logits)[n - k]
    return (fake_logits >= kth_highest).astype(jnp.float32)


def input_gradients(critic: Callable[[jax.Array], jax.Array], images: jax.Array) -> jax.Array:
    """d critic(x_i) / d x_i for each image, flattened to (N, H*W*C): with no cross-sample layers (no
    BatchNorm), the gradient of the sum of the scores."""
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
    """Accuracy on each side (near 50% at equilibrium, 100% when D wins), the gap of the mean logits,
    and mean sigmoid outputs (for the non-bce losses a squashed score, the accuracies a sign test)."""
    real_logits, fake_logits = real_logits.astype(jnp.float32), fake_logits.astype(jnp.float32)
    return {
        "d_real_acc": jnp.mean(real_logits > 0),
        "d_fake_acc": jnp.mean(fake_logits < 0),
        "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
        "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),
        # How far apart D holds the two sides: it grows without bound when D overpowers G.
        "d_logit_gap": jnp.mean(real_logits) - jnp.mean(fake_logits),
    }
