"""What a run is refused for before it allocates or traces anything: a model that would not fit the
machine's memory, a registered loss whose parts return other shapes than the step needs."""

import functools
import os

import jax
import jax.numpy as jnp

from dcgan_jax.gan import config as config_lib
from dcgan_jax.gan import losses, models


def machine_memory() -> int:
    """Bytes of memory of this machine's first device (the host's RAM for the CPU)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("bytes_limit") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(config, nets: models.Nets, image_shape: tuple[int, int, int]) -> None:
    """Refuses, before anything is allocated, a run whose parameters, gradients, Adam state, EMA
    and activations at the batch size (traced, not computed) would not fit the machine's memory."""
    batch = config.train.batch_size
    model = config.model
    key = jax.random.key(0)
    init = functools.partial(
        models.init_variables, nets, image_shape=image_shape, latent_dim=model.latent_dim
    )
    g_vars, d_vars = jax.eval_shape(init, key)
    labels = jax.ShapeDtypeStruct((batch,), jnp.int32) if model.num_classes else None
    inputs = [
        (nets.generator, g_vars, (batch, model.latent_dim)),
        (nets.discriminator, d_vars, (batch, *image_shape)),
    ]
    activations = 0
    for net, variables, shape in inputs:
        x = jax.ShapeDtypeStruct(shape, jnp.float32)
        traced = jax.eval_shape(
            functools.partial(net.apply, train=True, mutable=True, capture_intermediates=True),
            variables,
            x,
            labels=labels,
            rngs={"dropout": key},
        )
        activations += sum(leaf.size for leaf in jax.tree.leaves(traced[1]["intermediates"]))
    params = sum(leaf.size for leaf in jax.tree.leaves((g_vars, d_vars)))
    # Parameters and optimizer state on every device, activations split over them with the batch.
    needed = 4 * (5 * params + 3 * activations // jax.local_device_count())
    if needed > (available := machine_memory()):
        raise config_lib.ConfigError(
            f"the run needs about {needed / 2**30:.1f} GiB (parameters, optimizer state and "
            f"activations at --config.train.batch_size={batch}), more than this machine's "
            f"{available / 2**30:.1f} GiB: lower train.batch_size, model.base_width or "
            "dataset.image_size"
        )


def check_loss(name: str) -> None:
    """ConfigError when the loss registered as ``name`` returns other shapes than the step needs,
    traced on a batch of 4 (nothing computed) before any work: in the step such a loss is a JAX
    error, or with top-k silently wrong weights."""
    loss = losses.LOSSES.get(name)
    if loss is None:  # The config's validation names the registered ones.
        return
    if not isinstance(loss, losses.Loss):
        raise config_lib.ConfigError(
            f"--config.loss.name={name}: registered as a {type(loss).__name__}, not a losses.Loss"
        )

    def parts(logits, images, key):
        critic = functools.partial(jnp.sum, axis=(1, 2, 3))
        penalty = loss.penalty(critic, images, images, key) if loss.penalty else 0.0
        return loss.discriminator(logits, logits, 1.0), loss.generator(logits, "minimax"), penalty

    batch = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in ((4,), (4, 4, 4, 1))]
    shapes = [jnp.shape(out) for out in jax.eval_shape(parts, *batch, jax.random.key(0))]
    if shapes != [(), (4,), ()] or not (isinstance(loss.d_steps, int) and loss.d_steps > 0):
        raise config_lib.ConfigError(
            f"--config.loss.name={name}: its D loss, G loss and penalty have shapes {shapes} on 4 "
            f"logits, and d_steps={loss.d_steps!r}; the step needs (), (4,) (one per fake), () "
            "and an int >= 1 (docs/extending.md)"
        )
