"""The adversarial update as one pure function: TrainState in, TrainState and metrics out.

Per step: ``d_steps`` discriminator updates, each on a real batch and a freshly
generated one, then one generator update through the discriminator. Each
network's variables (parameters and BatchNorm statistics) change only in its own
update: the generator's pass inside D's update and D's pass inside G's update
run in training mode (batch statistics, as each network trains) but their
updates are discarded, the functional form of a "frozen" network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from dcgan_jax import losses, parallel

Variables = dict[str, Any]

# Streams of the run's key, so that no two uses of randomness share a key.
_INIT_STREAM, _TRAIN_STREAM, _FIXED_LATENT_STREAM, _EVAL_LATENT_STREAM = 0, 1, 2, 3


@struct.dataclass
class TrainState:
    step: jax.Array  # Generator updates done, int32.
    rng: jax.Array  # Raw uint32 key data (checkpointable); folded with the step each update.
    g_params: Any
    g_batch_stats: Any
    d_params: Any
    d_batch_stats: Any
    g_opt_state: Any
    d_opt_state: Any

    def generator_variables(self) -> Variables:
        return {"params": self.g_params, "batch_stats": self.g_batch_stats}

    def discriminator_variables(self) -> Variables:
        return {"params": self.d_params, "batch_stats": self.d_batch_stats}


def make_optimizer(optimizer_config) -> optax.GradientTransformation:
    """Adam whose learning rate lives in its state (``hyperparams['learning_rate']``), so that a run
    can lower it after a divergence and a checkpoint keeps the lowered value."""

    def adam(learning_rate):
        return optax.adam(learning_rate, b1=optimizer_config.beta1, b2=optimizer_config.beta2)

    return optax.inject_hyperparams(adam)(learning_rate=optimizer_config.learning_rate)


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

    return jnp.stack([bad(state.g_params, state.g_batch_stats), bad(state.d_params, state.d_batch_stats)])


def init_state(
    generator, discriminator, optimizer: optax.GradientTransformation, seed: int, image_shape, latent_dim: int
) -> TrainState:
    key = jax.random.key(seed)
    g_key, d_key = jax.random.split(jax.random.fold_in(key, _INIT_STREAM))
    g_vars = generator.init(g_key, jnp.zeros((2, latent_dim)), train=False)
    d_vars = discriminator.init(d_key, jnp.zeros((2, *image_shape)), train=False)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        rng=jax.random.key_data(key),
        g_params=g_vars["params"],
        g_batch_stats=g_vars["batch_stats"],
        d_params=d_vars["params"],
        d_batch_stats=d_vars.get("batch_stats", {}),  # None when D has no BatchNorm.
        g_opt_state=optimizer.init(g_vars["params"]),
        d_opt_state=optimizer.init(d_vars["params"]),
    )


def fixed_latents(seed: int, num: int, latent_dim: int) -> jax.Array:
    """The latent vectors of the run's sample grids: the same at every step and after a resume."""
    return jax.random.normal(jax.random.fold_in(jax.random.key(seed), _FIXED_LATENT_STREAM), (num, latent_dim))


def eval_latents(seed: int, num: int, latent_dim: int) -> jax.Array:
    """The latent vectors of the in-training evaluation: the same at every evaluation of a run."""
    return jax.random.normal(jax.random.fold_in(jax.random.key(seed), _EVAL_LATENT_STREAM), (num, latent_dim))


class Updates(NamedTuple):
    d_update: Callable
    g_update: Callable
    generate_with_pullback: Callable
    g_update_through: Callable


def make_updates(
    generator, discriminator, optimizer: optax.GradientTransformation, generator_loss: str, latent_dim: int
) -> Updates:
    """The two halves of a step, each returning (new state, metrics) and changing only its own
    network's variables and optimizer state: ``d_update(state, real, key, fake=None)`` and
    ``g_update(state, key, batch_size)``; plus, to reuse D's fake batch for G (as the PyTorch
    DCGAN example does), ``generate_with_pullback(state, key, batch_size)`` -> (fake, pullback,
    G's new BatchNorm statistics) and ``g_update_through(state, fake, pullback, batch_stats, key)``."""

    def generate(state: TrainState, key: jax.Array, batch_size: int) -> tuple[jax.Array, Variables]:
        z = jax.random.normal(key, (batch_size, latent_dim))
        return generator.apply(state.generator_variables(), z, train=True, mutable=["batch_stats"])

    def discriminate(d_params, d_batch_stats, images, key):
        """D's logits and its new BatchNorm statistics ({} without BatchNorm); ``key`` drives dropout."""
        logits, updates = discriminator.apply(
            {"params": d_params, "batch_stats": d_batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": key},
        )
        return logits, updates.get("batch_stats", {})

    def d_update(state: TrainState, real: jax.Array, key: jax.Array, fake=None) -> tuple[TrainState, dict]:
        if fake is None:
            fake, _ = generate(state, key, real.shape[0])
        fake = jax.lax.stop_gradient(fake)

        def loss_fn(d_params):
            real_logits, batch_stats = discriminate(d_params, state.d_batch_stats, real, jax.random.fold_in(key, 1))
            fake_logits, batch_stats = discriminate(d_params, batch_stats, fake, jax.random.fold_in(key, 2))
            loss = losses.discriminator_loss(real_logits, fake_logits)
            return loss, (batch_stats, losses.discriminator_metrics(real_logits, fake_logits))

        (loss, (batch_stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d_params)
        updates, opt_state = optimizer.update(grads, state.d_opt_state, state.d_params)
        state = state.replace(
            d_params=optax.apply_updates(state.d_params, updates), d_batch_stats=batch_stats, d_opt_state=opt_state
        )
        return state, {"d_loss": loss, **metrics}

    def g_update(state: TrainState, key: jax.Array, batch_size: int) -> tuple[TrainState, dict]:
        def loss_fn(g_params):
            z = jax.random.normal(key, (batch_size, latent_dim))
            fake, updates = generator.apply(
                {"params": g_params, "batch_stats": state.g_batch_stats}, z, train=True, mutable=["batch_stats"]
            )
            fake_logits, _ = discriminate(state.d_params, state.d_batch_stats, fake, jax.random.fold_in(key, 1))
            return losses.generator_loss(fake_logits, generator_loss), updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g_params)
        updates, opt_state = optimizer.update(grads, state.g_opt_state, state.g_params)
        state = state.replace(
            g_params=optax.apply_updates(state.g_params, updates), g_batch_stats=batch_stats, g_opt_state=opt_state
        )
        return state, {"g_loss": loss}

    def generate_with_pullback(state: TrainState, key: jax.Array, batch_size: int):
        z = jax.random.normal(key, (batch_size, latent_dim))

        def forward(g_params):
            fake, updates = generator.apply(
                {"params": g_params, "batch_stats": state.g_batch_stats}, z, train=True, mutable=["batch_stats"]
            )
            return fake, updates["batch_stats"]

        fake, pullback, batch_stats = jax.vjp(forward, state.g_params, has_aux=True)
        return fake, pullback, batch_stats

    def g_update_through(state: TrainState, fake, pullback, batch_stats, key: jax.Array):
        """G's update from a fake batch generated before D's update, through the updated D: one
        generator forward pass per step instead of two."""

        def loss_fn(fake):
            fake_logits, _ = discriminate(state.d_params, state.d_batch_stats, fake, jax.random.fold_in(key, 1))
            return losses.generator_loss(fake_logits, generator_loss)

        loss, fake_grads = jax.value_and_grad(loss_fn)(fake)
        (grads,) = pullback(fake_grads)
        updates, opt_state = optimizer.update(grads, state.g_opt_state, state.g_params)
        state = state.replace(
            g_params=optax.apply_updates(state.g_params, updates), g_batch_stats=batch_stats, g_opt_state=opt_state
        )
        return state, {"g_loss": loss}

    return Updates(d_update, g_update, generate_with_pullback, g_update_through)


def make_train_step(
    generator,
    discriminator,
    optimizer: optax.GradientTransformation,
    generator_loss: str,
    latent_dim: int,
    reuse_fake: bool = False,
) -> Callable[[TrainState, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """Returns ``train_step(state, real_batches)``; ``real_batches`` is (d_steps, batch, H, W, C).
    With ``reuse_fake`` G trains on the fake batch of D's last update rather than a fresh one."""
    updates = make_updates(generator, discriminator, optimizer, generator_loss, latent_dim)

    def train_step(state: TrainState, real_batches: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
        key = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(state.rng), _TRAIN_STREAM), state.step)
        d_steps, batch_size = real_batches.shape[:2]
        keys = jax.random.split(key, d_steps + 1)
        d_metrics = []
        for i in range(d_steps):
            fake = None
            if reuse_fake and i == d_steps - 1:
                fake, pullback, g_batch_stats = updates.generate_with_pullback(state, keys[i], batch_size)
            state, metrics = updates.d_update(state, real_batches[i], keys[i], fake)
            d_metrics.append(metrics)
        if reuse_fake:
            state, g_metrics = updates.g_update_through(state, fake, pullback, g_batch_stats, keys[-1])
        else:
            state, g_metrics = updates.g_update(state, keys[-1], batch_size)
        # D's figures from its last update of the step: the D that G was just trained against.
        return state.replace(step=state.step + 1), {**d_metrics[-1], **g_metrics}

    return train_step


def compile_train_step(train_step, mesh) -> Callable:
    """jit over the mesh: state replicated and donated, real batches split on their batch axis."""

    return jax.jit(
        train_step,
        in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh, leading_axes=1)),
        out_shardings=(parallel.replicated(mesh), parallel.replicated(mesh)),
        donate_argnums=0,
    )
