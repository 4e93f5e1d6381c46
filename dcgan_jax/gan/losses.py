"""GAN losses on D's logits (``loss.name``: ``bce`` as in the DCGAN paper, ``hinge``, ``lsgan`` with
a-b-c = 0-1-1, ``wgan_gp``), the gradient penalties and D's health signals."""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

GENERATOR_VARIANTS = ("non_saturating", "minimax")  # loss.generator, checked by the config.


def bce_with_logits(logits: jax.Array, label: float) -> jax.Array:
    """Mean binary cross-entropy of sigmoid(logits) against a constant label, stable for any
    logit."""
    # -log(sigmoid(l)) = softplus(-l); -log(1 - sigmoid(l)) = softplus(l).
    return jnp.mean(label * jax.nn.softplus(-logits) + (1.0 - label) * jax.nn.softplus(logits))


def _bce_discriminator(real_logits, fake_logits, real_label):
    """-log D(x) - log(1 - D(G(z))); ``real_label`` below 1: one-sided label smoothing (Salimans et
    al. 2016)."""
    return bce_with_logits(real_logits, real_label) + bce_with_logits(fake_logits, 0.0)


def _bce_generator(fake_logits, variant):
    """``non_saturating`` -log D(G(z)) = softplus(-l), or ``minimax`` log(1 - D(G(z))) =
    -softplus(l)."""
    return -jax.nn.softplus(fake_logits) if variant == "minimax" else jax.nn.softplus(-fake_logits)


def _hinge_discriminator(real_logits, fake_logits, real_label):
    return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))


def _lsgan_discriminator(real_logits, fake_logits, real_label):
    return 0.5 * jnp.mean((real_logits - 1.0) ** 2) + 0.5 * jnp.mean(fake_logits**2)


def _wasserstein_discriminator(real_logits, fake_logits, real_label):
    """The critic's estimate of the Wasserstein distance, negated."""
    return jnp.mean(fake_logits) - jnp.mean(real_logits)


def _critic_generator(fake_logits, variant):
    return -fake_logits


def _lsgan_generator(fake_logits, variant):
    return 0.5 * (fake_logits - 1.0) ** 2


def gradient_penalty(
    critic: Callable[[jax.Array], jax.Array], real: jax.Array, fake: jax.Array, key: jax.Array
) -> jax.Array:
    """WGAN-GP: mean over the batch of (||grad critic(x_hat)|| - 1)^2 at x_hat = e*real +
    (1-e)*fake, e ~ U[0, 1] per image (unweighted: the step multiplies by ``loss.gp_weight``)."""
    eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
    interpolates = eps * real + (1.0 - eps) * fake
    norms = jnp.sqrt(jnp.sum(input_gradients(critic, interpolates) ** 2, axis=1) + 1e-12)
    return jnp.mean((norms - 1.0) ** 2)


@dataclasses.dataclass(frozen=True)
class Loss:
    """A GAN loss as the step uses it: D's loss on the real and fake logits (averaged over each
    batch; its third argument the target for reals, below 1 with ``loss.label_smoothing``), G's loss
    per fake (its second argument ``loss.generator``, the variant), and what it needs besides: a
    gradient penalty on D (``penalty(critic, real, fake, key)``, weighted by ``loss.gp_weight``;
    incompatible with BatchNorm in D) and its usual D updates per G update."""

    discriminator: Callable[[jax.Array, jax.Array, float], jax.Array]
    generator: Callable[[jax.Array, str], jax.Array]
    penalty: Callable[..., jax.Array] | None = None
    d_steps: int = 1


LOSSES: dict[str, Loss] = {}


def register(name: str, loss: Loss) -> None:
    """Makes ``loss`` trainable as ``--config.loss.name=NAME`` (from a script, a test or here)."""
    LOSSES[name] = loss


register("bce", Loss(_bce_discriminator, _bce_generator))
register("hinge", Loss(_hinge_discriminator, _critic_generator))
register("lsgan", Loss(_lsgan_discriminator, _lsgan_generator))
register(
    "wgan_gp", Loss(_wasserstein_discriminator, _critic_generator, gradient_penalty, d_steps=5)
)


def get(name: str) -> Loss:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; use one of {', '.join(LOSSES)}")
    return LOSSES[name]


def discriminator_loss(
    real_logits: jax.Array, fake_logits: jax.Array, name: str = "bce", real_label: float = 1.0
) -> jax.Array:
    """D's loss ``name``, averaged over each batch (without penalties)."""
    real_logits, fake_logits = real_logits.astype(jnp.float32), fake_logits.astype(jnp.float32)
    return get(name).discriminator(real_logits, fake_logits, real_label)


def generator_loss(
    fake_logits: jax.Array,
    name: str = "bce",
    variant: str = "non_saturating",
    weights: jax.Array | None = None,
) -> jax.Array:
    """G's loss ``name`` (``variant``: ``loss.generator``), averaged over the fakes (weighted by
    :func:`top_k_weights` where given)."""
    per_fake = get(name).generator(fake_logits.astype(jnp.float32), variant)
    return jnp.mean(per_fake) if weights is None else jnp.sum(per_fake * weights) / jnp.sum(weights)


def top_k_weights(fake_logits: jax.Array, keep: jax.Array) -> jax.Array:
    """1 for the ``ceil(keep * N)`` fakes D rates most real, 0 for the rest (Sinha et al. 2020:
    pulling the worst fakes toward the data can push them from their mode); ties at the k-th are
    kept."""
    n = fake_logits.shape[0]
    k = jnp.clip(jnp.ceil(keep * n).astype(jnp.int32), 1, n)
    kth_highest = jnp.sort(fake_logits)[n - k]
    return (fake_logits >= kth_highest).astype(jnp.float32)


def input_gradients(critic: Callable[[jax.Array], jax.Array], images: jax.Array) -> jax.Array:
    """d critic(x_i) / d x_i for each image, flattened to (N, H*W*C): with no cross-sample layers
    (no BatchNorm), the gradient of the sum of the scores."""
    grads = jax.grad(lambda x: jnp.sum(critic(x)))(images)
    return grads.reshape(grads.shape[0], -1).astype(jnp.float32)


def r1_penalty(critic: Callable[[jax.Array], jax.Array], real: jax.Array) -> jax.Array:
    """R1 (Mescheder et al. 2018): mean over the batch of ||grad critic(x)||^2 on real images
    (unweighted: the caller multiplies by gamma / 2)."""
    return jnp.mean(jnp.sum(input_gradients(critic, real) ** 2, axis=1))


def discriminator_metrics(real_logits: jax.Array, fake_logits: jax.Array) -> dict[str, jax.Array]:
    """Accuracy on each side (near 50% at equilibrium, 100% when D wins), the gap of the mean
    logits, and mean sigmoid outputs (for the non-bce losses a squashed score, the accuracies a sign
    test)."""
    real_logits, fake_logits = real_logits.astype(jnp.float32), fake_logits.astype(jnp.float32)
    return {
        "d_real_acc": jnp.mean(real_logits > 0),
        "d_fake_acc": jnp.mean(fake_logits < 0),
        "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
        "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),
        # How far apart D holds the two sides: it grows without bound when D overpowers G.
        "d_logit_gap": jnp.mean(real_logits) - jnp.mean(fake_logits),
    }
