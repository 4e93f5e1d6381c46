"""The training state: a :class:`NetState` per network (what its update changes, as Flax's
``TrainState``) in a :class:`GanState`. Arrays only: each network's learning rate lives in its
optimizer state, so one optimizer updates both and a restored state is shaped like a fresh one."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from dcgan_jax.gan import parallel


@struct.dataclass
class NetState:
    params: Any
    batch_stats: (
        Any  # BatchNorm statistics and spectral-norm vectors; {} when the network has neither.
    )
    opt_state: Any

    @property
    def variables(self) -> dict[str, Any]:
        return {"params": self.params, "batch_stats": self.batch_stats}

    def apply_gradients(self, tx: optax.GradientTransformation, grads, batch_stats) -> NetState:
        """One step of ``tx`` on ``grads``, with the BatchNorm statistics of the pass that made
        them."""
        updates, opt_state = tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        return self.replace(params=params, batch_stats=batch_stats, opt_state=opt_state)

    @property
    def learning_rate(self) -> jax.Array:
        return self.opt_state.hyperparams["learning_rate"]

    def with_learning_rate(self, rate: float) -> NetState:
        """The same network with another learning rate (kept in the optimizer state, so checkpoints
        keep it)."""
        hyperparams = {
            **self.opt_state.hyperparams,
            "learning_rate": jnp.asarray(rate, self.learning_rate.dtype),
        }
        return self.replace(opt_state=self.opt_state._replace(hyperparams=hyperparams))

    @staticmethod
    def create(variables: dict, tx: optax.GradientTransformation) -> NetState:
        return NetState(
            variables["params"], variables.get("batch_stats", {}), tx.init(variables["params"])
        )


@struct.dataclass
class GanState:
    step: jax.Array  # Generator updates done, int32.
    rng: jax.Array  # Raw uint32 key data (checkpointable); folded with the step each update.
    g: NetState
    d: NetState
    # EMA of G's parameters; {} when train.ema_decay = 0.
    g_ema: Any = struct.field(default_factory=dict)

    @property
    def host_step(self) -> int:
        """``step`` as a Python int, read on any process (the state is replicated)."""
        return int(parallel.to_host(self.step))

    def generator_variables(self) -> dict[str, Any]:
        """G's variables as it samples: the EMA's parameters when one is kept, G's own
        statistics."""
        return {
            "params": self.g_ema if self.g_ema else self.g.params,
            "batch_stats": self.g.batch_stats,
        }


def make_optimizer(optimizer_config, learning_rate: float) -> optax.GradientTransformation:
    """Adam whose learning rate lives in its state (lowered after a divergence, kept by
    checkpoints); ``learning_rate`` is only the initial value :meth:`NetState.create` stores."""

    def adam(learning_rate):
        return optax.adam(learning_rate, b1=optimizer_config.beta1, b2=optimizer_config.beta2)

    return optax.inject_hyperparams(adam)(learning_rate=learning_rate)


def learning_rates(optimizer_config) -> tuple[float, float]:
    """G's and D's rates: ``g_learning_rate`` and ``d_learning_rate`` (TTUR) where set, else
    ``learning_rate``."""
    base = optimizer_config.learning_rate
    return optimizer_config.g_learning_rate or base, optimizer_config.d_learning_rate or base
