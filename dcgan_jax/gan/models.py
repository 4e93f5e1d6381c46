"""DCGAN generator and discriminator (Radford et al. 2016) as pure Flax modules, their convolutions
the exact rewrites of :mod:`dcgan_jax.convolutions` (same parameters as ``nn.Conv``)."""

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from dcgan_jax.gan import ConfigError
from dcgan_jax.gan.convolutions import DCGAN_INIT, Conv, DownsampleConv, UpsampleConv


def num_resolution_steps(image_size: int) -> int:
    """How many stride-2 stages map a 3..8 pixel base to ``image_size`` (28 -> 2: 7, 14, 28)."""
    steps, size = 0, image_size
    while size > 8:
        if size % 2:
            raise ConfigError(
                f"image size {image_size} cannot be reached by doubling a 3..8 pixel base "
                f"(it halves to the odd size {size}); use e.g. 28, 32 or 64 "
                "(--config.dataset.image_size sets it for celeb_a and image_folder)"
            )
        size //= 2
        steps += 1
    if not steps:  # G's and D's channel widths follow the count: at least one stage.
        raise ConfigError(
            f"image size {image_size} is too small for a DCGAN (at least one doubling of a 3..8 "
            "pixel base: 10 or more; --config.dataset.image_size sets it for celeb_a and "
            "image_folder)"
        )
    return steps


def _batch_norm(module: nn.Module, train: bool):
    """A BatchNorm layer with ``module``'s ``bn_momentum`` and ``dtype``."""
    return nn.BatchNorm(not train, momentum=module.bn_momentum, epsilon=1e-5, dtype=module.dtype)


class Generator(nn.Module):
    """z (N, latent_dim) [and labels (N,)] -> images (N, H, W, C) in [-1, 1]: a projected small map,
    optional stride-1 layers, stride-2 upsampling halving the channels, BatchNorm and (Leaky)ReLU,
    tanh out. Conditional: z times a learned label embedding (concatenated, G ignored z:
    docs/model.md)."""

    image_shape: tuple[int, int, int] = (28, 28, 1)
    base_width: int = 64
    kernel_size: int = 5
    bn_momentum: float = 0.9
    base_features: int = 0  # Channels of the projected map; 0 = mirror D's last convolution.
    stride1_layers: int = 0
    activation: str = "relu"
    output_bias: bool = True
    num_classes: int = 0
    conv_algorithm: str = "auto"  # See dcgan_jax.convolutions.
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array, train: bool, labels: jax.Array | None = None) -> jax.Array:
        height, width, channels = self.image_shape
        steps = num_resolution_steps(height)
        base = height >> steps
        features = self.base_features or self.base_width * 2 ** (steps - 1)
        act = (
            nn.relu
            if self.activation == "relu"
            else functools.partial(nn.leaky_relu, negative_slope=0.2)
        )
        if self.num_classes:
            _check_labels(labels, z.shape[0])
            embedding = nn.Embed(
                self.num_classes, z.shape[-1], embedding_init=nn.initializers.normal(1.0)
            )
            z = z * embedding(labels)
        x = nn.Dense(
            base * base * features, use_bias=False, kernel_init=DCGAN_INIT, dtype=self.dtype
        )(z)
        x = act(_batch_norm(self, train)(x))
        x = x.reshape(-1, base, base, features)
        conv_args = {
            "kernel_size": self.kernel_size,
            "algorithm": self.conv_algorithm,
            "dtype": self.dtype,
        }
        for i in range(self.stride1_layers):
            features //= 2
            x = Conv(features, **conv_args, name=f"same{i}")(x)
            x = act(_batch_norm(self, train)(x))
        for i in range(steps - 1):
            features //= 2
            x = UpsampleConv(features, use_bias=False, **conv_args, name=f"up{i}")(x)
            x = act(_batch_norm(self, train)(x))
        x = UpsampleConv(channels, use_bias=self.output_bias, **conv_args, name=f"up{steps - 1}")(x)
        return jnp.tanh(x).astype(jnp.float32)


def _check_labels(labels, batch_size: int):
    got = None if labels is None else labels.shape
    if got != (batch_size,):
        raise ValueError(
            f"a class-conditional model needs one label per image: shape ({batch_size},), got {got}"
        )


class Discriminator(nn.Module):
    """images [and labels] -> one logit each: stride-2 convolutions, LeakyReLU(0.2), BatchNorm but
    on the input layer (or nowhere), optional dropout and spectral norm, a linear read-out.
    Conditional: a projection discriminator (Miyato & Koyama 2018), logit = w.h + embed(y).h."""

    base_width: int = 64
    kernel_size: int = 5
    bn_momentum: float = 0.9
    batch_norm: bool = True
    dropout: float = 0.0  # Needs a "dropout" rng when training.
    spectral_norm: bool = False  # Power-iteration state in "batch_stats", updated when training.
    minibatch_std: bool = False  # A feature map of the batch's spread before the last layer.
    num_classes: int = 0
    conv_algorithm: str = "auto"  # See dcgan_jax.convolutions.
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, labels: jax.Array | None = None) -> jax.Array:
        def layer(module: nn.Module, h: jax.Array) -> jax.Array:
            if self.spectral_norm:
                return nn.SpectralNorm(module, collection_name="batch_stats")(h, update_stats=train)
            return module(h)

        x = x.astype(self.dtype)
        for i in range(num_resolution_steps(x.shape[1])):
            normalised = self.batch_norm and i > 0
            convolution = DownsampleConv(
                self.base_width * 2**i,
                self.kernel_size,
                not normalised,
                algorithm=self.conv_algorithm,
                dtype=self.dtype,
                name=f"down{i}",
            )
            x = layer(convolution, x)
            if normalised:
                x = _batch_norm(self, train)(x)
            x = nn.leaky_relu(x, 0.2)
            if self.dropout and train:
                x = dropout(x, self.dropout, self.make_rng("dropout"))
        if self.minibatch_std:
            x = minibatch_stddev(x)
        h = x.reshape(x.shape[0], -1)
        logits = layer(nn.Dense(1, kernel_init=DCGAN_INIT, dtype=self.dtype), h)[:, 0]
        if self.num_classes:
            _check_labels(labels, h.shape[0])
            embedding = nn.Embed(
                self.num_classes, h.shape[-1], embedding_init=DCGAN_INIT, dtype=self.dtype
            )
            logits = logits + jnp.sum(embedding(labels) * h, axis=-1)
        return logits.astype(jnp.float32)


def minibatch_stddev(x: jax.Array, group_size: int = 4) -> jax.Array:
    """``x`` (N, H, W, C) with one more channel: each feature's standard deviation over a group of
    images (i, i + N/G, ...; G the largest divisor of N up to ``group_size``), averaged over the
    features (Karras et al. 2018): fakes that all look alike show a small spread."""
    n, h, w, _ = x.shape
    groups = max(g for g in range(1, min(group_size, n) + 1) if n % g == 0)
    y = x.astype(jnp.float32).reshape(groups, n // groups, h, w, -1)
    spread = jnp.sqrt(jnp.var(y, axis=0) + 1e-8).mean(axis=(1, 2, 3))  # (N / G,)
    channel = jnp.broadcast_to(jnp.tile(spread, groups)[:, None, None, None], (n, h, w, 1))
    return jnp.concatenate([x, channel.astype(x.dtype)], axis=-1)


def dropout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    """Inverted dropout whose mask comes from 16-bit random numbers, two per 32-bit draw: half the
    random-number work of ``nn.Dropout``, drop probability within 2^-17 of ``rate``, scaling exact.
    """
    threshold = round(rate * 2**16)
    words = jax.random.bits(key, ((x.size + 1) // 2,), jnp.uint32)
    bits = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(-1)[: x.size].reshape(x.shape)
    keep = bits >= threshold
    return jnp.where(keep, x / ((2**16 - threshold) / 2**16), jnp.zeros((), x.dtype))


# train.compute_dtype's choices.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class Nets(NamedTuple):
    """The two Flax modules of a run (their variables live in the state, not here)."""

    generator: Generator
    discriminator: Discriminator


def build(model_config, image_shape: tuple[int, int, int], compute_dtype: str = "float32") -> Nets:
    """G and D for ``config.model``; ``compute_dtype`` is ``train.compute_dtype``."""
    shared = {
        k: model_config[k]
        for k in ("base_width", "kernel_size", "bn_momentum", "num_classes", "conv_algorithm")
    }
    shared["dtype"] = DTYPES[compute_dtype]
    return Nets(
        Generator(
            image_shape=tuple(image_shape),
            base_features=model_config.g_base_features,
            stride1_layers=model_config.g_stride1_layers,
            activation=model_config.g_activation,
            output_bias=model_config.g_output_bias,
            **shared,
        ),
        Discriminator(
            batch_norm=model_config.d_batch_norm,
            dropout=model_config.d_dropout,
            spectral_norm=model_config.spectral_norm,
            minibatch_std=model_config.minibatch_std,
            **shared,
        ),
    )


def init_variables(nets: Nets, key: jax.Array, image_shape, latent_dim: int) -> tuple[dict, dict]:
    """(G's variables, D's variables) initialised from ``key``; D's ``batch_stats`` is {} when it
    has none."""
    g_key, d_key = jax.random.split(key)
    labels = jnp.zeros((2,), jnp.int32) if nets.generator.num_classes else None  # Shapes only.
    g_vars = nets.generator.init(g_key, jnp.zeros((2, latent_dim)), train=False, labels=labels)
    d_vars = nets.discriminator.init(
        d_key, jnp.zeros((2, *image_shape)), train=False, labels=labels
    )
    return dict(g_vars), {"params": d_vars["params"], "batch_stats": d_vars.get("batch_stats", {})}
