"""Every random stream of a run, and sampling from a generator in inference mode. The run's ``seed``
splits here into streams no two uses share (initialisation, updates, grids, evaluation); training,
``dcgan_jax.load(...)`` and the evaluation command all draw through these functions."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dcgan_jax.gan import parallel

# Streams of the run's key.
INIT_STREAM, TRAIN_STREAM, GRID_STREAM, EVAL_STREAM, BN_STREAM = 0, 1, 2, 3, 4
# Sub-streams of one update's key (its latents use the key itself).
REAL_DROPOUT, FAKE_DROPOUT, FAKE_LABELS, PENALTY, AUGMENT_REAL, AUGMENT_FAKE = 1, 2, 3, 4, 5, 6
EVAL_CHUNK = 1000  # Images per call into the generator when sampling many.
# A seed flag's range, 0 ..: JAX holds seeds as int32, NumPy's generator refuses negative ones.
MAX_SEED = 2**31 - 1
BN_BATCHES = 32  # Training-size batches whose statistics train.recompute_bn averages.

Sampler = Callable[..., jax.Array]


def stream_key(seed: int, stream: int) -> jax.Array:
    """The key of one of the run's streams (``INIT_STREAM``, ...)."""
    return jax.random.fold_in(jax.random.key(seed), stream)


def update_key(rng_data: jax.Array, step: jax.Array) -> jax.Array:
    """The key of training step ``step`` from the state's key data: a function of (seed, step)
    only."""
    return jax.random.fold_in(
        jax.random.fold_in(jax.random.wrap_key_data(rng_data), TRAIN_STREAM), step
    )


def training_latents(key: jax.Array, batch_size: int, latent_dim: int, num_classes: int):
    """(z, labels) of one update's fake batch; labels uniform over the classes, None when
    unconditional."""
    z = jax.random.normal(key, (batch_size, latent_dim))
    if not num_classes:
        return z, None
    return z, jax.random.randint(
        jax.random.fold_in(key, FAKE_LABELS), (batch_size,), 0, num_classes
    )


def eval_labels(num: int, num_classes: int) -> jax.Array | None:
    """The requested classes of the evaluation's samples (each class equally often), None when
    unconditional."""
    return jnp.arange(num, dtype=jnp.int32) % num_classes if num_classes else None


def seeded_latents(seed: int, num: int, latent_dim: int) -> jax.Array:
    """Latent vectors of a user's own draw (``TrainedGenerator.latents``, which checks ``seed``):
    ``key(seed)`` itself."""
    return jax.random.normal(jax.random.key(seed), (num, latent_dim))


def make_sampler(generator) -> Sampler:
    """``sample(variables, z, labels=None)``, jitted, with BatchNorm's running averages: each image
    then depends only on its own latent vector (and label), not on the rest of the batch."""
    return jax.jit(
        lambda variables, z, labels=None: generator.apply(variables, z, train=False, labels=labels)
    )


def make_bn_recomputer(
    generator, model_config, batch_size: int, num_batches: int = BN_BATCHES
) -> Callable:
    """``recompute(variables, seed)``: ``variables`` with BatchNorm statistics measured for their
    weights over ``num_batches`` batches of the BN stream (PreciseBN; else an EMA samples with the
    raw G's)."""
    # Its "running average" is then the batch's statistics.
    probe = generator.clone(bn_momentum=0.0)

    def batch_stats(variables, z, labels):
        _, updates = probe.apply(variables, z, train=True, labels=labels, mutable=["batch_stats"])
        return updates["batch_stats"]

    @jax.jit
    def recompute(variables, seed):
        key = stream_key(seed, BN_STREAM)
        z, labels = training_latents(
            key, num_batches * batch_size, model_config.latent_dim, model_config.num_classes
        )
        z = z.reshape(num_batches, batch_size, -1)
        labels = None if labels is None else labels.reshape(num_batches, batch_size)
        per_batch = jax.vmap(batch_stats, in_axes=(None, 0, 0))(variables, z, labels)
        return {**variables, "batch_stats": jax.tree.map(lambda s: s.mean(axis=0), per_batch)}

    return recompute


def sample_in_chunks(
    sample: Sampler,
    variables,
    z,
    labels=None,
    *,
    place: Callable = lambda x: x,
    chunk: int = EVAL_CHUNK,
) -> np.ndarray:
    """Images for many latents, ``chunk`` at a time (bounded memory, one compiled shape), as NumPy;
    ``place`` puts each chunk where the generator's variables are."""
    # One array, filled chunk by chunk: never the chunks and their concatenation at once.
    images = None
    for start in range(0, len(z), chunk):
        z_chunk = place(z[start : start + chunk])
        labels_chunk = None if labels is None else place(labels[start : start + chunk])
        done = parallel.to_host(sample(variables, z_chunk, labels_chunk))
        images = np.empty((len(z), *done.shape[1:]), done.dtype) if images is None else images
        images[start : start + len(done)] = done
    return images


def _draw(config, stream: int, num: int) -> tuple[jax.Array, jax.Array | None]:
    """``num`` latents of the run's ``stream`` and labels cycling through the classes: the same
    draw at every step and after a resume."""
    z = jax.random.normal(stream_key(config.seed, stream), (num, config.model.latent_dim))
    return z, eval_labels(num, config.model.num_classes)


def grid_draw(config) -> tuple[jax.Array, jax.Array | None]:
    """(latents, labels) of a run's sample grids (square)."""
    return _draw(config, GRID_STREAM, config.train.num_samples)


def eval_draw(config, num: int) -> tuple[jax.Array, jax.Array | None]:
    """(latents, labels) of the in-training evaluation's own stream (``eval.num_samples`` of them
    in training): ``num`` of them."""
    return _draw(config, EVAL_STREAM, num)
