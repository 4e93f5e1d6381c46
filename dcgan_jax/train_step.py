"""The adversarial update as one pure function: TrainState in, TrainState and metrics out.

Per step: ``d_steps`` discriminator updates, each on a real batch and a freshly
generated one, then one generator update through the discriminator. Each
network's variables (parameters, BatchNorm statistics, spectral-norm vectors)
change only in its own update: the generator's pass inside D's update and D's
pass inside G's update run in training mode but their updates are discarded,
the functional form of a "frozen" network. The losses, penalties, EMA and
conditioning are those of :class:`Game`, read from the run's config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import struct

from dcgan_jax import data, losses, parallel

Variables = dict[str, Any]

# Streams of the run's key, so that no two uses of randomness share a key.
_INIT_STREAM, _TRAIN_STREAM, _FIXED_LATENT_STREAM, _EVAL_LATENT_STREAM = 0, 1, 2, 3
# Sub-streams of one update's key (its latents use the key itself).
_REAL_DROPOUT, _FAKE_DROPOUT, _FAKE_LABELS, _PENALTY = 1, 2, 3, 4


@struct.dataclass
class TrainState:
    step: jax.Array  # Generator updates done, int32.
    rng: jax.Array  # Raw uint32 key data (checkpointable); folded with the step each update.
    g_params: Any
    g_batch_stats: Any
    d_params: Any
    d_batch_stats: Any  # BatchNorm statistics and spectral-norm vectors; {} when D has neither.
    g_opt_state: Any
    d_opt_state: Any
    g_ema_params: Any = struct.field(default_factory=dict)  # {} when train.ema_decay = 0.

    def generator_variables(self, ema: bool = False) -> Variables:
        """G's variables; with ``ema`` (and an EMA kept) its averaged parameters."""
        params = self.g_ema_params if ema and self.g_ema_params else self.g_params
        return {"params": params, "batch_stats": self.g_batch_stats}

    def discriminator_variables(self) -> Variables:
        return {"params": self.d_params, "batch_stats": self.d_batch_stats}


@dataclasses.dataclass(frozen=True)
class Game:
    """What the step computes beyond the two networks: the loss, penalties, EMA and conditioning."""

    latent_dim: int = 100
    loss: str = "bce"
    generator_loss: str = "non_saturating"  # bce only.
    gp_weight: float = 10.0  # wgan_gp only.
    r1_gamma: float = 0.0
    r1_every: int = 1
    ema_decay: float = 0.0
    num_classes: int = 0
    reuse_fake: bool = False

    @classmethod
    def from_config(cls, config) -> Game:
        return cls(
            latent_dim=config.model.latent_dim,
            loss=config.loss.name,
            generator_loss=config.loss.generator,
            gp_weight=config.loss.gp_weight,
            r1_gamma=config.loss.r1_gamma,
            r1_every=config.loss.r1_every,
            ema_decay=config.train.ema_decay,
            num_classes=config.model.num_classes,
            reuse_fake=config.train.reuse_fake,
        )


class Optimizers(NamedTuple):
    g: optax.GradientTransformation
    d: optax.GradientTransformation


def make_optimizer(optimizer_config, learning_rate: float | None = None) -> optax.GradientTransformation:
    """Adam whose learning rate lives in its state (``hyperparams['learning_rate']``), so that a run
    can lower it after a divergence and a checkpoint keeps the lowered value."""

    def adam(learning_rate):
        return optax.adam(learning_rate, b1=optimizer_config.beta1, b2=optimizer_config.beta2)

    return optax.inject_hyperparams(adam)(learning_rate=learning_rate or optimizer_config.learning_rate)


def make_optimizers(optimizer_config) -> Optimizers:
    """G's and D's Adam: ``g_learning_rate`` and ``d_learning_rate`` (TTUR) where set, else ``learning_rate``."""
    return Optimizers(
        g=make_optimizer(optimizer_config, optimizer_config.get("g_learning_rate", 0.0)),
        d=make_optimizer(optimizer_config, optimizer_config.get("d_learning_rate", 0.0)),
    )


class Components(NamedTuple):
    generator: Any
    discriminator: Any
    optimizers: Optimizers
    game: Game


def components(config, image_shape: tuple[int, int, int]) -> Components:
    """The networks, optimizers and game of ``config`` for images of ``image_shape``."""
    from dcgan_jax import models

    generator, discriminator = models.build(config.model, image_shape, config.train.compute_dtype)
    return Components(generator, discriminator, make_optimizers(config.optimizer), Game.from_config(config))


def learning_rates(state: TrainState) -> dict[str, float]:
    return {
        "g_learning_rate": float(parallel.to_host(state.g_opt_state.hyperparams["learning_rate"])),
        "d_learning_rate": float(parallel.to_host(state.d_opt_state.hyperparams["learning_rate"])),
    }


def with_learning_rates(state: TrainState, g_learning_rate: float, d_learning_rate: float) -> TrainState:
    """``state`` with other learning rates; everything else unchanged."""

    def replaced(opt_state, learning_rate):
        rate = jnp.asarray(learning_rate, opt_state.hyperparams["learning_rate"].dtype)
        return opt_state._replace(hyperparams=dict(opt_state.hyperparams, learning_rate=rate))

    return state.replace(
        g_opt_state=replaced(state.g_opt_state, g_learning_rate),
        d_opt_state=replaced(state.d_opt_state, d_learning_rate),
    )


def nonfinite_networks(state: TrainState) -> jax.Array:
    """[generator, discriminator]: True where any parameter or BatchNorm statistic is NaN or inf."""

    def bad(*trees) -> jax.Array:
        return jnp.any(jnp.array([~jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(trees)]))

    return jnp.stack(
        [bad(state.g_params, state.g_batch_stats, state.g_ema_params), bad(state.d_params, state.d_batch_stats)]
    )


def example_labels(num_classes: int) -> jax.Array | None:
    """Labels for a model's ``init`` (shapes only): two zeros, or None for an unconditional model."""
    return jnp.zeros((2,), jnp.int32) if num_classes else None


def init_state(
    generator, discriminator, optimizers: Optimizers, seed: int, image_shape, latent_dim: int, ema: bool = False
) -> TrainState:
    """The state at step 0; ``ema`` keeps an average of G's parameters (starting at G's own)."""
    key = jax.random.key(seed)
    g_key, d_key = jax.random.split(jax.random.fold_in(key, _INIT_STREAM))
    g_vars = generator.init(
        g_key, jnp.zeros((2, latent_dim)), train=False, labels=example_labels(generator.num_classes)
    )
    d_vars = discriminator.init(
        d_key, jnp.zeros((2, *image_shape)), train=False, labels=example_labels(discriminator.num_classes)
    )
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        rng=jax.random.key_data(key),
        g_params=g_vars["params"],
        g_batch_stats=g_vars["batch_stats"],
        d_params=d_vars["params"],
        d_batch_stats=d_vars.get("batch_stats", {}),  # None when D has no BatchNorm.
        g_opt_state=optimizers.g.init(g_vars["params"]),
        d_opt_state=optimizers.d.init(d_vars["params"]),
        g_ema_params=jax.tree.map(jnp.copy, g_vars["params"]) if ema else {},
    )


def fixed_latents(seed: int, num: int, latent_dim: int) -> jax.Array:
    """The latent vectors of the run's sample grids: the same at every step and after a resume."""
    return jax.random.normal(jax.random.fold_in(jax.random.key(seed), _FIXED_LATENT_STREAM), (num, latent_dim))


def eval_latents(seed: int, num: int, latent_dim: int) -> jax.Array:
    """The latent vectors of the in-training evaluation: the same at every evaluation of a run."""
    return jax.random.normal(jax.random.fold_in(jax.random.key(seed), _EVAL_LATENT_STREAM), (num, latent_dim))


def grid_labels(num_samples: int, num_classes: int) -> tuple[int, jax.Array]:
    """(columns, labels) of a conditional sample grid: one row per class."""
    columns = max(1, num_samples // num_classes)
    return columns, jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), columns)


def eval_labels(num: int, num_classes: int) -> jax.Array:
    """The requested classes of the evaluation's samples: each class equally often."""
    return jnp.arange(num, dtype=jnp.int32) % num_classes


class Updates(NamedTuple):
    d_update: Callable
    g_update: Callable
    generate_with_pullback: Callable
    g_update_through: Callable


def make_updates(generator, discriminator, optimizers: Optimizers, game: Game) -> Updates:
    """The two halves of a step, each returning (new state, metrics) and changing only its own
    network's variables and optimizer state: ``d_update(state, real, labels, key, fake=None)`` and
    ``g_update(state, key, batch_size)``; plus, to reuse D's fake batch for G (as the PyTorch
    DCGAN example does), ``generate_with_pullback(state, key, batch_size)`` -> (fake, labels,
    pullback, G's new BatchNorm statistics) and ``g_update_through(state, fake, labels, pullback,
    batch_stats, key)``. ``labels`` are None for an unconditional game."""

    def latents_and_labels(key: jax.Array, batch_size: int):
        z = jax.random.normal(key, (batch_size, game.latent_dim))
        if not game.num_classes:
            return z, None
        return z, jax.random.randint(jax.random.fold_in(key, _FAKE_LABELS), (batch_size,), 0, game.num_classes)

    def generate(g_params, state: TrainState, key: jax.Array, batch_size: int):
        """(fake, labels, G's new BatchNorm statistics), G in training mode."""
        z, labels = latents_and_labels(key, batch_size)
        fake, updates = generator.apply(
            {"params": g_params, "batch_stats": state.g_batch_stats}, z, train=True, labels=labels,
            mutable=["batch_stats"],
        )  # fmt: skip
        return fake, labels, updates["batch_stats"]

    def discriminate(d_params, d_batch_stats, images, labels, key):
        """D's logits and its new BatchNorm/spectral-norm state ({} without); ``key`` drives dropout."""
        logits, updates = discriminator.apply(
            {"params": d_params, "batch_stats": d_batch_stats},
            images,
            train=True,
            labels=labels,
            mutable=["batch_stats"],
            rngs={"dropout": key},
        )
        return logits, updates.get("batch_stats", {})

    def d_loss_fn(d_params, state: TrainState, real, real_labels, fake, fake_labels, key):
        real_logits, batch_stats = discriminate(d_params, state.d_batch_stats, real, real_labels,
                                                jax.random.fold_in(key, _REAL_DROPOUT))  # fmt: skip
        fake_logits, batch_stats = discriminate(d_params, batch_stats, fake, fake_labels,
                                                jax.random.fold_in(key, _FAKE_DROPOUT))  # fmt: skip
        loss = losses.discriminator_loss(real_logits, fake_logits, game.loss)
        metrics = losses.discriminator_metrics(real_logits, fake_logits)

        def critic(labels):  # D as a function of its input alone, its state as after this update.
            return lambda x: discriminate(d_params, batch_stats, x, labels, jax.random.fold_in(key, _PENALTY))[0]

        if game.loss == "wgan_gp":
            # Interpolates of an image and a fake of another class are scored under the real label.
            penalty = losses.gradient_penalty(critic(real_labels), real, fake, jax.random.fold_in(key, _PENALTY))
            loss = loss + game.gp_weight * penalty
            metrics["gradient_penalty"] = penalty
        if game.r1_gamma:
            # Lazy regularisation: every r1_every-th step, scaled up by r1_every.
            r1 = jax.lax.cond(
                state.step % game.r1_every == 0,
                lambda: losses.r1_penalty(critic(real_labels), real),
                lambda: jnp.zeros((), jnp.float32),
            )
            loss = loss + 0.5 * game.r1_gamma * game.r1_every * r1
            metrics["r1_penalty"] = r1
        return loss, (batch_stats, metrics)

    def d_update(state: TrainState, real, real_labels, key: jax.Array, fake=None, fake_labels=None):
        if fake is None:
            fake, fake_labels, _ = generate(state.g_params, state, key, real.shape[0])
        fake = jax.lax.stop_gradient(fake)
        (loss, (batch_stats, metrics)), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
            state.d_params, state, real, real_labels, fake, fake_labels, key
        )
        updates, opt_state = optimizers.d.update(grads, state.d_opt_state, state.d_params)
        state = state.replace(
            d_params=optax.apply_updates(state.d_params, updates), d_batch_stats=batch_stats, d_opt_state=opt_state
        )
        return state, {"d_loss": loss, **metrics}

    def g_loss(state: TrainState, fake, labels, key):
        fake_logits, _ = discriminate(state.d_params, state.d_batch_stats, fake, labels,
                                      jax.random.fold_in(key, _FAKE_DROPOUT))  # fmt: skip
        return losses.generator_loss(fake_logits, game.loss, game.generator_loss)

    def apply_g_grads(state: TrainState, grads, batch_stats) -> TrainState:
        updates, opt_state = optimizers.g.update(grads, state.g_opt_state, state.g_params)
        params = optax.apply_updates(state.g_params, updates)
        ema = state.g_ema_params
        if game.ema_decay:
            # Warm-up (as tf.train.ExponentialMovingAverage's num_updates): early on the average
            # follows G closely instead of remembering its random initialisation for ~1/(1-decay) steps.
            decay = jnp.minimum(game.ema_decay, (1.0 + state.step) / (10.0 + state.step))
            ema = optax.incremental_update(params, ema, step_size=1.0 - decay)
        return state.replace(g_params=params, g_batch_stats=batch_stats, g_opt_state=opt_state, g_ema_params=ema)

    def g_update(state: TrainState, key: jax.Array, batch_size: int):
        def loss_fn(g_params):
            fake, labels, batch_stats = generate(g_params, state, key, batch_size)
            return g_loss(state, fake, labels, key), batch_stats

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g_params)
        return apply_g_grads(state, grads, batch_stats), {"g_loss": loss}

    def generate_with_pullback(state: TrainState, key: jax.Array, batch_size: int):
        def forward(g_params):
            fake, labels, batch_stats = generate(g_params, state, key, batch_size)
            return fake, (labels, batch_stats)

        fake, pullback, (labels, batch_stats) = jax.vjp(forward, state.g_params, has_aux=True)
        return fake, labels, pullback, batch_stats

    def g_update_through(state: TrainState, fake, labels, pullback, batch_stats, key: jax.Array):
        """G's update from a fake batch generated before D's update, through the updated D: one
        generator forward pass per step instead of two."""
        loss, fake_grads = jax.value_and_grad(lambda fake: g_loss(state, fake, labels, key))(fake)
        (grads,) = pullback(fake_grads)
        return apply_g_grads(state, grads, batch_stats), {"g_loss": loss}

    return Updates(d_update, g_update, generate_with_pullback, g_update_through)


def make_train_step(
    generator, discriminator, optimizers: Optimizers, game: Game
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """Returns ``train_step(state, real_batches, real_labels)``: images (d_steps, batch, H, W, C) and
    their labels (d_steps, batch), ignored by an unconditional game. With ``game.reuse_fake`` G
    trains on the fake batch of D's last update rather than a fresh one."""
    updates = make_updates(generator, discriminator, optimizers, game)

    def train_step(state: TrainState, real_batches: jax.Array, real_labels: jax.Array):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(state.rng), _TRAIN_STREAM), state.step)
        d_steps, batch_size = real_batches.shape[:2]
        keys = jax.random.split(key, d_steps + 1)
        d_metrics = []
        for i in range(d_steps):
            fake = fake_labels = None
            if game.reuse_fake and i == d_steps - 1:
                fake, fake_labels, pullback, g_batch_stats = updates.generate_with_pullback(state, keys[i], batch_size)
            labels = real_labels[i] if game.num_classes else None
            state, metrics = updates.d_update(state, real_batches[i], labels, keys[i], fake, fake_labels)
            d_metrics.append(metrics)
        if game.reuse_fake:
            state, g_metrics = updates.g_update_through(state, fake, fake_labels, pullback, g_batch_stats, keys[-1])
        else:
            state, g_metrics = updates.g_update(state, keys[-1], batch_size)
        # D's figures from its last update of the step: the D that G was just trained against.
        return state.replace(step=state.step + 1), {**d_metrics[-1], **g_metrics}

    return train_step


class DeviceDataset(NamedTuple):
    """The training set resident on the devices (replicated): uint8 images (N, H, W, C), int32 labels (N,)."""

    images: jax.Array
    labels: jax.Array


def put_dataset(images, labels, mesh) -> DeviceDataset:
    """Copies the whole dataset, as uint8, to every device of ``mesh`` (each process gives its full copy)."""
    replicated = parallel.replicated(mesh)
    return DeviceDataset(
        parallel.global_array(np.asarray(images, np.uint8), replicated, images.shape),
        parallel.global_array(np.asarray(labels, np.int32), replicated, labels.shape),
    )


def make_train_steps(train_step, mesh, num_steps: int) -> Callable:
    """Returns ``train_steps(state, dataset, indices)``: ``num_steps`` steps in one call, each
    gathering its real batches from the device-resident ``dataset`` by ``indices`` (num_steps,
    d_steps, batch); metrics come back stacked, (num_steps,) each. Several steps run as a
    ``lax.scan``, so the host need not wait on each small step; one step runs without the loop,
    which XLA's CPU backend executes ~8% slower even at one iteration."""
    batch_sharding = parallel.batch_sharded(mesh, leading_axes=1)

    def one_step(state: TrainState, dataset: DeviceDataset, step_indices: jax.Array):
        real = jax.lax.with_sharding_constraint(dataset.images[step_indices], batch_sharding)
        labels = jax.lax.with_sharding_constraint(dataset.labels[step_indices], batch_sharding)
        return train_step(state, data.to_model_range(real), labels)

    def train_steps(state: TrainState, dataset: DeviceDataset, indices: jax.Array):
        if num_steps == 1:
            state, metrics = one_step(state, dataset, indices[0])
            return state, jax.tree.map(lambda m: m[None], metrics)
        return jax.lax.scan(lambda state, step_indices: one_step(state, dataset, step_indices), state, indices)

    return train_steps


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


def compile_train_steps(train_steps, mesh) -> Callable:
    """jit over the mesh: state donated; state, dataset, indices and metrics replicated (the batches
    are split over the devices inside, where they are gathered)."""
    replicated = parallel.replicated(mesh)
    return jax.jit(train_steps, in_shardings=replicated, out_shardings=replicated, donate_argnums=0)


def compile_train_step(train_step, mesh) -> Callable:
    """jit over the mesh: state replicated and donated, real batches and labels split on their batch axis."""
    batch = parallel.batch_sharded(mesh, leading_axes=1)
    return jax.jit(
        train_step,
        in_shardings=(parallel.replicated(mesh), batch, batch),
        out_shardings=(parallel.replicated(mesh), parallel.replicated(mesh)),
        donate_argnums=0,
    )
