"""The adversarial update as pure functions: GanState in, GanState and metrics out.

Per step (:func:`train_step`): ``train.d_steps`` D updates on a real and a generated batch, then
one G update through D. Each update changes only its own network's ``NetState`` (the other's
statistics are discarded: a "frozen" network); randomness only from :mod:`dcgan_jax.sampling`'s
keys. :func:`jit_train_steps` compiles it over the device mesh, with shardings and donation."""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dcgan_jax.gan import augment, data, losses, models, parallel, sampling
from dcgan_jax.gan import state as state_lib
from dcgan_jax.gan.state import GanState, NetState

Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Update:
    """What every update reads besides the state, built once per run: the networks, the config and
    the optimizer (each network's optimizer state holds its learning rate)."""

    nets: models.Nets
    config: ml_collections.ConfigDict
    tx: optax.GradientTransformation


def make_update(nets: models.Nets, config: ml_collections.ConfigDict) -> Update:
    return Update(
        nets, config, state_lib.make_optimizer(config.optimizer, config.optimizer.learning_rate)
    )


class Fakes(NamedTuple):
    """A generated batch with the VJP of the forward pass that made it: D trains on ``images``; G's
    update pulls its loss's gradient back through ``pullback``, whether the batch is fresh or D's.
    """

    images: jax.Array
    labels: jax.Array | None
    pullback: Callable
    batch_stats: Any  # G's BatchNorm statistics after that pass.


def generate(u: Update, g: NetState, key: jax.Array, batch_size: int) -> Fakes:
    """G in training mode on the latents of ``key``."""
    model = u.config.model
    z, labels = sampling.training_latents(key, batch_size, model.latent_dim, model.num_classes)

    def forward(g_params):
        variables = {"params": g_params, "batch_stats": g.batch_stats}
        fake, updates = u.nets.generator.apply(
            variables, z, train=True, labels=labels, mutable=["batch_stats"]
        )
        return fake, updates["batch_stats"]

    fake, pullback, stats = jax.vjp(forward, g.params, has_aux=True)
    return Fakes(fake, labels, pullback, stats)


def discriminate(u: Update, variables: dict, images, labels, key: jax.Array):
    """D's logits and its new BatchNorm/spectral-norm state ({} without); ``key`` drives dropout."""
    logits, updates = u.nets.discriminator.apply(
        variables, images, train=True, labels=labels, mutable=["batch_stats"], rngs={"dropout": key}
    )
    return logits, updates.get("batch_stats", {})


def penalties(
    critic: Callable, real, fake, key: jax.Array, *, step, loss_config
) -> tuple[jax.Array, Metrics]:
    """The loss's gradient penalty (WGAN-GP's) and R1 (lazy: every ``r1_every``-th step, scaled
    up), weighted: (their sum, each unweighted)."""
    metrics = {}
    total = 0.0
    if gradient_penalty := losses.get(loss_config.name).penalty:
        metrics["gradient_penalty"] = gradient_penalty(critic, real, fake, key)
        total += loss_config.gp_weight * metrics["gradient_penalty"]
    if loss_config.r1_gamma:
        metrics["r1_penalty"] = jax.lax.cond(
            step % loss_config.r1_every == 0,
            lambda: losses.r1_penalty(critic, real),
            lambda: jnp.zeros((), jnp.float32),
        )
        total += 0.5 * loss_config.r1_gamma * loss_config.r1_every * metrics["r1_penalty"]
    return total, metrics


def augmented(u: Update, images: jax.Array, key: jax.Array, stream: int) -> jax.Array:
    """``images`` through ``train.diffaugment`` with the update's ``stream`` of randomness."""
    return augment.diff_augment(images, jax.random.fold_in(key, stream), u.config.train.diffaugment)


def d_loss(d_params, state: GanState, batches: tuple, key: jax.Array, u: Update):
    """D's loss on ``batches``, (real images, their labels) and the fakes, both through
    ``train.diffaugment``, with its penalties; (new statistics, metrics)."""
    (images, labels), fakes = batches
    config = u.config

    def scores(x, x_labels, batch_stats, stream):
        variables = {"params": d_params, "batch_stats": batch_stats}
        return discriminate(u, variables, x, x_labels, jax.random.fold_in(key, stream))

    images = augmented(u, images, key, sampling.AUGMENT_REAL)
    fake = augmented(u, fakes.images, key, sampling.AUGMENT_FAKE)
    real_logits, stats = scores(images, labels, state.d.batch_stats, sampling.REAL_DROPOUT)
    fake_logits, stats = scores(fake, fakes.labels, stats, sampling.FAKE_DROPOUT)

    # D as a function of its input alone, its state as after this update. Interpolates of an image
    # and a fake of another class are scored under the real label.
    def critic(x):
        return scores(x, labels, stats, sampling.PENALTY)[0]

    penalty_key = jax.random.fold_in(key, sampling.PENALTY)
    penalty, metrics = penalties(
        critic, images, fake, penalty_key, step=state.step, loss_config=config.loss
    )
    real_label = 1.0 - config.loss.label_smoothing
    loss = (
        losses.discriminator_loss(real_logits, fake_logits, config.loss.name, real_label) + penalty
    )
    return loss, (stats, {**losses.discriminator_metrics(real_logits, fake_logits), **metrics})


def d_update(state: GanState, real: tuple, fakes: Fakes, key: jax.Array, u: Update):
    """One discriminator update on ``real`` (images, labels) and the fakes (no gradient flows into
    G)."""
    fakes = fakes._replace(images=jax.lax.stop_gradient(fakes.images))
    grad_fn = jax.value_and_grad(d_loss, has_aux=True)
    (loss, (stats, metrics)), grads = grad_fn(state.d.params, state, (real, fakes), key, u)
    return state.replace(d=state.d.apply_gradients(u.tx, grads, stats)), {
        "d_loss": loss,
        "d_grad_norm": optax.tree_utils.tree_norm(grads),
        **metrics,
    }


def top_k_keep(
    step: jax.Array, batch_size: int, dataset_size: int, train_config
) -> jax.Array | None:
    """The share of each fake batch G learns from (Sinha et al. 2020): 1 times ``train.top_k_decay``
    per epoch, at least ``train.top_k_min``; None when off."""
    if not train_config.top_k_decay:
        return None
    epochs = step.astype(jnp.float32) * batch_size / dataset_size
    return jnp.maximum(train_config.top_k_min, train_config.top_k_decay**epochs)


def g_loss(
    state: GanState, fakes: Fakes, fake, key: jax.Array, u: Update, *, keep: jax.Array | None = None
):
    """G's loss through D for ``fake`` (``fakes``' images, as a variable), augmented as in D's
    update; with ``keep``, over that share of the fakes D rates best (:func:`top_k_keep`)."""
    fake = augmented(u, fake, key, sampling.AUGMENT_FAKE)
    dropout_key = jax.random.fold_in(key, sampling.FAKE_DROPOUT)
    fake_logits, _ = discriminate(u, state.d.variables, fake, fakes.labels, dropout_key)
    weights = (
        None if keep is None else jax.lax.stop_gradient(losses.top_k_weights(fake_logits, keep))
    )
    return losses.generator_loss(fake_logits, u.config.loss.name, u.config.loss.generator, weights)


def ema_update(ema, params, step: jax.Array, decay: float):
    """The EMA of G's parameters after an update, warmed up as tf.train.ExponentialMovingAverage's
    num_updates: early on it follows G closely instead of remembering its random initialisation."""
    if not decay:
        return ema
    decay = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    return optax.incremental_update(params, ema, step_size=1.0 - decay)


def g_update(
    state: GanState, fakes: Fakes, key: jax.Array, u: Update, keep: jax.Array | None = None
):
    """One generator update through the current D on ``fakes`` (``keep``: see :func:`g_loss`): the
    loss's gradient with respect to the images, pulled back through G's forward pass."""
    loss, image_grads = jax.value_and_grad(lambda x: g_loss(state, fakes, x, key, u, keep=keep))(
        fakes.images
    )
    (grads,) = fakes.pullback(image_grads)
    g = state.g.apply_gradients(u.tx, grads, fakes.batch_stats)
    ema = ema_update(state.g_ema, g.params, state.step, u.config.train.ema_decay)
    return state.replace(g=g, g_ema=ema), {
        "g_loss": loss,
        "g_grad_norm": optax.tree_utils.tree_norm(grads),
    }


def train_step(
    state: GanState, real_batches, real_labels, u: Update, dataset_size: int
) -> tuple[GanState, Metrics]:
    """One step on ``real_batches`` (d_steps, batch, H, W, C) and labels (d_steps, batch):
    ``d_steps`` D updates, then one G update on a fresh fake batch or, with ``train.reuse_fake``,
    D's last one (one generator pass fewer). ``dataset_size`` sets the epochs of
    ``train.top_k_decay``."""
    config = u.config
    d_steps, batch_size = real_batches.shape[:2]
    keep = top_k_keep(state.step, batch_size, dataset_size, config.train)
    keys = jax.random.split(sampling.update_key(state.rng, state.step), d_steps + 1)
    for i in range(d_steps):
        fakes = generate(u, state.g, keys[i], batch_size)
        real = (real_batches[i], real_labels[i] if config.model.num_classes else None)
        state, d_metrics = d_update(state, real, fakes, keys[i], u)
    if not config.train.reuse_fake:
        fakes = generate(u, state.g, keys[-1], batch_size)
    state, g_metrics = g_update(state, fakes, keys[-1], u, keep)
    if keep is not None:
        g_metrics["top_k_keep"] = keep
    # D's figures from its last update of the step: the D that G was just trained against.
    return state.replace(step=state.step + 1), {**d_metrics, **g_metrics}


class DeviceDataset(NamedTuple):
    """The training set resident on the devices (replicated): uint8 images (N, H, W, C), int32
    labels (N,)."""

    images: jax.Array
    labels: jax.Array


def put_on_devices(images: np.ndarray, labels: np.ndarray, mesh) -> DeviceDataset:
    """The whole dataset, as uint8, on every device of ``mesh``: a dispatch then sends only
    indices."""
    replicated = parallel.replicated(mesh)
    return DeviceDataset(
        parallel.global_array(np.asarray(images, np.uint8), replicated, images.shape),
        parallel.global_array(np.asarray(labels, np.int32), replicated, labels.shape),
    )


def train_steps(state: GanState, dataset: DeviceDataset, indices, u: Update, mesh):
    """``len(indices)`` steps in one call, real batches gathered from ``dataset`` by ``indices``
    (num_steps, d_steps, batch), metrics stacked; a ``lax.scan`` but for one step (XLA's CPU loops
    are slower)."""
    batch_sharding = parallel.batch_sharded(mesh, leading_axes=1)

    def one_step(state, step_indices):
        real = jax.lax.with_sharding_constraint(dataset.images[step_indices], batch_sharding)
        labels = jax.lax.with_sharding_constraint(dataset.labels[step_indices], batch_sharding)
        return train_step(state, data.to_model_range(real), labels, u, len(dataset.images))

    if len(indices) == 1:
        state, metrics = one_step(state, indices[0])
        return state, jax.tree.map(lambda m: m[None], metrics)
    return jax.lax.scan(one_step, state, indices)


def jit_train_steps(u: Update, mesh) -> Callable:
    """:func:`train_steps` jitted over ``mesh``, the state donated; everything replicated but the
    batches, split over the devices where they are gathered."""
    replicated = parallel.replicated(mesh)
    steps = functools.partial(train_steps, u=u, mesh=mesh)
    return jax.jit(steps, in_shardings=replicated, out_shardings=replicated, donate_argnums=0)


# On the CPU, XLA's own dot emitter runs the Fourier convolutions' small batched products faster
# than YNNPACK's fusions (benchmarks/RESULTS.md); convolutions stay with YNNPACK.
CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
}
