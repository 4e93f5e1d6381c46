"""The adversarial update as pure functions: GanState in, GanState and metrics out.

Per step (:func:`train_step`): ``train.d_steps`` discriminator updates
(:func:`d_update`), each on a real batch and a generated one, then one generator
update through the discriminator (:func:`g_update`). Each update changes only its
own network's ``NetState``: the generator's pass inside D's update and D's pass
inside G's update run in training mode but their statistics are discarded, the
functional form of a "frozen" network. The functions read the config sections
they need (``loss``, ``train``, ``model``); randomness comes only from the keys
of :mod:`dcgan_jax.sampling`. :func:`jit_train_steps` is the one place the step
is compiled, over the device mesh, with its shardings and donation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from dcgan_jax import augment, data, losses, models, parallel, sampling
from dcgan_jax import state as state_lib
from dcgan_jax.state import GanState, NetState

Metrics = dict[str, jax.Array]


def generate(nets: models.Nets, g_params, g: NetState, key: jax.Array, batch_size: int, model_config):
    """(fake images, their labels, G's new BatchNorm statistics): G in training mode on the latents of ``key``."""
    z, labels = sampling.training_latents(key, batch_size, model_config.latent_dim, model_config.num_classes)
    fake, updates = nets.generator.apply(
        {"params": g_params, "batch_stats": g.batch_stats}, z, train=True, labels=labels, mutable=["batch_stats"]
    )
    return fake, labels, updates["batch_stats"]


def discriminate(nets: models.Nets, d_params, batch_stats, images, labels, key: jax.Array):
    """D's logits and its new BatchNorm/spectral-norm state ({} without); ``key`` drives dropout."""
    logits, updates = nets.discriminator.apply(
        {"params": d_params, "batch_stats": batch_stats},
        images,
        train=True,
        labels=labels,
        mutable=["batch_stats"],
        rngs={"dropout": key},
    )
    return logits, updates.get("batch_stats", {})


def penalties(critic: Callable, real, fake, step, penalty_key: jax.Array, loss_config) -> tuple[jax.Array, Metrics]:
    """WGAN-GP's gradient penalty (interpolation weights from ``penalty_key``) and R1, weighted, as
    ``loss`` configures them (0 when off)."""
    total, metrics = jnp.zeros((), jnp.float32), {}
    if loss_config.name == "wgan_gp":
        penalty = losses.gradient_penalty(critic, real, fake, penalty_key)
        total, metrics["gradient_penalty"] = total + loss_config.gp_weight * penalty, penalty
    if loss_config.r1_gamma:
        # Lazy regularisation: every r1_every-th step, scaled up by r1_every.
        r1 = jax.lax.cond(
            step % loss_config.r1_every == 0,
            lambda: losses.r1_penalty(critic, real),
            lambda: jnp.zeros((), jnp.float32),
        )
        total, metrics["r1_penalty"] = total + 0.5 * loss_config.r1_gamma * loss_config.r1_every * r1, r1
    return total, metrics


def d_loss(d_params, state: GanState, real, real_labels, fake, fake_labels, key, nets, config):
    """D's loss on a real and a fake batch (both through ``train.diffaugment``), its penalties, (new
    statistics, metrics)."""
    real = augment.diff_augment(real, jax.random.fold_in(key, sampling.AUGMENT_REAL), config.train.diffaugment)
    fake = augment.diff_augment(fake, jax.random.fold_in(key, sampling.AUGMENT_FAKE), config.train.diffaugment)
    real_logits, stats = discriminate(
        nets, d_params, state.d.batch_stats, real, real_labels, jax.random.fold_in(key, sampling.REAL_DROPOUT)
    )
    fake_logits, stats = discriminate(
        nets, d_params, stats, fake, fake_labels, jax.random.fold_in(key, sampling.FAKE_DROPOUT)
    )
    # D as a function of its input alone, its state as after this update. Interpolates of an image
    # and a fake of another class are scored under the real label.
    penalty_key = jax.random.fold_in(key, sampling.PENALTY)
    critic = lambda x: discriminate(nets, d_params, stats, x, real_labels, penalty_key)[0]  # noqa: E731
    penalty, metrics = penalties(critic, real, fake, state.step, penalty_key, config.loss)
    real_label = 1.0 - config.loss.label_smoothing
    loss = losses.discriminator_loss(real_logits, fake_logits, config.loss.name, real_label) + penalty
    return loss, (stats, {**losses.discriminator_metrics(real_logits, fake_logits), **metrics})


def optimizer(config) -> optax.GradientTransformation:
    """The update rule of both networks (``optimizer`` section); each network's learning rate is read
    from its own optimizer state, where TTUR and divergence restores set it."""
    return state_lib.make_optimizer(config.optimizer, config.optimizer.learning_rate)


def grad_norm(grads) -> jax.Array:
    """The global L2 norm of a gradient pytree: the health monitors' ``g_grad_norm``/``d_grad_norm``."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(grads)))


def d_update(state: GanState, real, real_labels, fake, fake_labels, key: jax.Array, nets, config):
    """One discriminator update on ``real`` and ``fake`` (no gradient flows into G)."""
    grad_fn = jax.value_and_grad(d_loss, has_aux=True)
    (loss, (stats, metrics)), grads = grad_fn(
        state.d.params, state, real, real_labels, jax.lax.stop_gradient(fake), fake_labels, key, nets, config
    )
    new_state = state.replace(d=state.d.apply_gradients(optimizer(config), grads, stats))
    return new_state, {"d_loss": loss, "d_grad_norm": grad_norm(grads), **metrics}


def top_k_keep(step: jax.Array, batch_size: int, dataset_size: int, train_config) -> jax.Array | None:
    """The share of each fake batch G learns from (``train.top_k_decay``, Sinha et al. 2020): all of
    it at first, times the decay per epoch of the training set, never below ``train.top_k_min``;
    None when off."""
    if not train_config.top_k_decay:
        return None
    epochs = step.astype(jnp.float32) * batch_size / dataset_size
    return jnp.maximum(train_config.top_k_min, train_config.top_k_decay**epochs)


def g_loss(state: GanState, fake, labels, key: jax.Array, nets, config, keep: jax.Array | None = None) -> jax.Array:
    """G's loss through D, its fakes augmented as D's update augments them (``train.diffaugment``);
    with ``keep``, only over that share of the fakes D rates best (:func:`top_k_keep`)."""
    fake = augment.diff_augment(fake, jax.random.fold_in(key, sampling.AUGMENT_FAKE), config.train.diffaugment)
    fake_logits, _ = discriminate(
        nets, state.d.params, state.d.batch_stats, fake, labels, jax.random.fold_in(key, sampling.FAKE_DROPOUT)
    )
    weights = None if keep is None else jax.lax.stop_gradient(losses.top_k_weights(fake_logits, keep))
    return losses.generator_loss(fake_logits, config.loss.name, config.loss.generator, weights)


def ema_update(ema, params, step: jax.Array, decay: float):
    """The EMA of G's parameters after an update, warmed up as tf.train.ExponentialMovingAverage's
    num_updates: early on it follows G closely instead of remembering its random initialisation."""
    if not decay:
        return ema
    decay = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    return optax.incremental_update(params, ema, step_size=1.0 - decay)


def apply_g_grads(state: GanState, grads, batch_stats, config) -> GanState:
    g = state.g.apply_gradients(optimizer(config), grads, batch_stats)
    return state.replace(g=g, g_ema=ema_update(state.g_ema, g.params, state.step, config.train.ema_decay))


def g_update(state: GanState, key: jax.Array, batch_size: int, nets, config, keep: jax.Array | None = None):
    """One generator update on a fresh fake batch from ``key`` (``keep``: see :func:`g_loss`)."""

    def loss_fn(g_params):
        fake, labels, stats = generate(nets, g_params, state.g, key, batch_size, config.model)
        return g_loss(state, fake, labels, key, nets, config, keep), stats

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g.params)
    return apply_g_grads(state, grads, stats, config), {"g_loss": loss, "g_grad_norm": grad_norm(grads)}


def g_update_through(state: GanState, fake, labels, pullback, batch_stats, key: jax.Array, nets, config, keep=None):
    """G's update from a fake batch generated before D's update (its forward pass kept as ``pullback``),
    through the updated D: one generator forward pass per step instead of two."""
    loss, fake_grads = jax.value_and_grad(lambda fake: g_loss(state, fake, labels, key, nets, config, keep))(fake)
    (grads,) = pullback(fake_grads)
    return apply_g_grads(state, grads, batch_stats, config), {"g_loss": loss, "g_grad_norm": grad_norm(grads)}


def generate_with_pullback(state: GanState, key: jax.Array, batch_size: int, nets, config):
    """(fake, labels, the VJP of G's forward pass, G's new statistics): for ``train.reuse_fake``."""

    def forward(g_params):
        fake, labels, stats = generate(nets, g_params, state.g, key, batch_size, config.model)
        return fake, (labels, stats)

    fake, pullback, (labels, stats) = jax.vjp(forward, state.g.params, has_aux=True)
    return fake, labels, pullback, stats


def train_step(
    state: GanState, real_batches, real_labels, nets: models.Nets, config, dataset_size: int = 0
) -> tuple[GanState, Metrics]:
    """One step on ``real_batches`` (d_steps, batch, H, W, C) and their labels (d_steps, batch), the
    labels ignored by an unconditional model. With ``train.reuse_fake`` G trains on the fake batch of
    D's last update (as the PyTorch DCGAN example does) rather than a fresh one. ``dataset_size``
    (the training set's images) sets the epochs of ``train.top_k_decay``."""
    d_steps, batch_size = real_batches.shape[:2]
    if config.train.top_k_decay and not dataset_size:
        raise ValueError("train.top_k_decay anneals per epoch: give train_step the dataset_size")
    keep = top_k_keep(state.step, batch_size, dataset_size, config.train)
    keys = jax.random.split(sampling.update_key(state.rng, state.step), d_steps + 1)
    conditional = config.model.num_classes > 0
    for i in range(d_steps):
        if config.train.reuse_fake and i == d_steps - 1:
            fake, fake_labels, pullback, g_stats = generate_with_pullback(state, keys[i], batch_size, nets, config)
        else:
            fake, fake_labels, _ = generate(nets, state.g.params, state.g, keys[i], batch_size, config.model)
        labels = real_labels[i] if conditional else None
        state, d_metrics = d_update(state, real_batches[i], labels, fake, fake_labels, keys[i], nets, config)
    if config.train.reuse_fake:
        state, g_metrics = g_update_through(state, fake, fake_labels, pullback, g_stats, keys[-1], nets, config, keep)
    else:
        state, g_metrics = g_update(state, keys[-1], batch_size, nets, config, keep)
    if keep is not None:
        g_metrics["top_k_keep"] = keep
    # D's figures from its last update of the step: the D that G was just trained against.
    return state.replace(step=state.step + 1), {**d_metrics, **g_metrics}


class DeviceDataset(NamedTuple):
    """The training set resident on the devices (replicated): uint8 images (N, H, W, C), int32 labels (N,)."""

    images: jax.Array
    labels: jax.Array


def put_on_devices(images: np.ndarray, labels: np.ndarray, mesh) -> DeviceDataset:
    """Copies the whole dataset, as uint8, to every device of ``mesh`` (each process gives its full copy):
    each dispatch of the training step then sends only the batches' indices."""
    replicated = parallel.replicated(mesh)
    return DeviceDataset(
        parallel.global_array(np.asarray(images, np.uint8), replicated, images.shape),
        parallel.global_array(np.asarray(labels, np.int32), replicated, labels.shape),
    )


def train_steps(state: GanState, dataset: DeviceDataset, indices, nets, config, mesh):
    """``len(indices)`` steps in one call, each gathering its real batches from the device-resident
    ``dataset`` by ``indices`` (num_steps, d_steps, batch); metrics stacked, (num_steps,) each.
    Several steps run as a ``lax.scan`` so the host need not wait on each; one step runs without the
    loop, which XLA's CPU backend executes ~8% slower even at one iteration."""
    batch_sharding = parallel.batch_sharded(mesh, leading_axes=1)

    def one_step(state, step_indices):
        real = jax.lax.with_sharding_constraint(dataset.images[step_indices], batch_sharding)
        labels = jax.lax.with_sharding_constraint(dataset.labels[step_indices], batch_sharding)
        return train_step(state, data.to_model_range(real), labels, nets, config, len(dataset.images))

    if len(indices) == 1:
        state, metrics = one_step(state, indices[0])
        return state, jax.tree.map(lambda m: m[None], metrics)
    return jax.lax.scan(one_step, state, indices)


def jit_train_steps(nets: models.Nets, config, mesh) -> Callable:
    """:func:`train_steps` jitted over ``mesh``: the state donated (updated in place); state,
    dataset, indices and metrics replicated, the batches split over the devices inside, where they
    are gathered."""
    replicated = parallel.replicated(mesh)
    steps = functools.partial(train_steps, nets=nets, config=config, mesh=mesh)
    return jax.jit(steps, in_shardings=replicated, out_shardings=replicated, donate_argnums=0)


# XLA's CPU backend (jax 0.10) hands dot products to YNNPACK fusions; for the many small batched
# products of the Fourier convolutions its own dot emitter makes the reference step ~20% faster
# (benchmarks/RESULTS.md). Convolutions stay with YNNPACK.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"}


def compile_lowered(lowered):
    """``lowered.compile()``, with :data:`CPU_COMPILER_OPTIONS` on the CPU where this XLA knows them."""
    if jax.default_backend() == "cpu":
        try:
            return lowered.compile(compiler_options=CPU_COMPILER_OPTIONS)
        except jax.errors.JaxRuntimeError as e:
            if "option" not in str(e):
                raise
            logging.warning("Compiling without %s, which this XLA does not take: %s", CPU_COMPILER_OPTIONS, e)
    return lowered.compile()
