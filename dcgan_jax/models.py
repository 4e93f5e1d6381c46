"""DCGAN generator and discriminator (Radford et al. 2016) as pure Flax modules.

The generator's stride-2 transposed convolutions are computed as four stride-1
"phase" convolutions followed by depth-to-space (sub-pixel convolution). That
is the same linear map with the same kernel as ``nn.ConvTranspose(strides=2,
padding='SAME')``, so parameters are interchangeable, but its gradient is an
order of magnitude faster on XLA's CPU backend, where the kernel gradient of a
dilated convolution is slow (jax#23783).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Radford et al.: "All weights were initialized from a zero-centered Normal distribution
# with standard deviation 0.02."
DCGAN_INIT = nn.initializers.normal(0.02)


def num_resolution_steps(image_size: int) -> int:
    """How many stride-2 stages map a 3..8 pixel base to ``image_size`` (28 -> 2: 7, 14, 28)."""
    steps, size = 0, image_size
    while size > 8:
        if size % 2:
            raise ValueError(
                f"image size {image_size} cannot be reached by doubling a 3..8 pixel base "
                f"(it halves to the odd size {size}); use e.g. 28, 32 or 64"
            )
        size //= 2
        steps += 1
    if size < 3:
        raise ValueError(f"image size {image_size} is too small for a DCGAN (needs at least 3 pixels)")
    return steps


def _phase_taps(kernel_size: int) -> tuple[int, int, list[list[tuple[int, int]]]]:
    """For a stride-2 'SAME' transposed convolution along one axis: the input offsets
    (lo, hi) the phase convolutions span, and for each output phase the pairs
    (kernel tap, offset index) that contribute.

    Output ``y[2i + a] = sum_t x[i + (a + t - pad) / 2] * w[t]`` over taps t with
    ``a + t - pad`` even, where ``pad`` is lax.conv_transpose's leading padding.
    """
    pad = kernel_size - 1 if 2 > kernel_size - 1 else math.ceil(kernel_size / 2)
    offsets = {a: [((a + t - pad) // 2, t) for t in range(kernel_size) if (a + t - pad) % 2 == 0] for a in (0, 1)}
    all_offsets = [d for pairs in offsets.values() for d, _ in pairs]
    lo, hi = min(all_offsets), max(all_offsets)
    return lo, hi, [[(t, d - lo) for d, t in offsets[a]] for a in (0, 1)]


def phase_kernel(kernel: jax.Array) -> jax.Array:
    """Rearranges a (k, k, in, out) transposed-conv kernel into a (n, n, in, 4*out) stride-1
    kernel whose output channels are the four (row phase, column phase) sub-images."""
    k, _, c_in, c_out = kernel.shape
    lo, hi, taps = _phase_taps(k)
    n = hi - lo + 1
    # A constant 0/1 selection tensor keeps this one einsum (differentiable, fused by XLA).
    select = np.zeros((2, n, k), np.float32)
    for a in (0, 1):
        for t, d in taps[a]:
            select[a, d, t] = 1.0
    phases = jnp.einsum("aiy,bjx,yxco->ijcabo", select, select, kernel)
    return phases.reshape(n, n, c_in, 4 * c_out)


def upsample_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Exactly ``lax.conv_transpose(x, kernel, (2, 2), 'SAME')`` (NHWC, HWIO), computed sub-pixel."""
    lo, hi, _ = _phase_taps(kernel.shape[0])
    y = jax.lax.conv_general_dilated(
        x,
        phase_kernel(kernel).astype(x.dtype),
        window_strides=(1, 1),
        padding=((-lo, hi), (-lo, hi)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    batch, height, width, channels = y.shape
    y = y.reshape(batch, height, width, 2, 2, channels // 4)
    return y.transpose(0, 1, 3, 2, 4, 5).reshape(batch, 2 * height, 2 * width, channels // 4)


class UpsampleConv(nn.Module):
    """Stride-2 transposed convolution, parameter-compatible with ``nn.ConvTranspose``."""

    features: int
    kernel_size: int = 5
    use_bias: bool = True
    dtype: Any = jnp.float32  # Computation; the parameters stay float32.

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", DCGAN_INIT, (k, k, x.shape[-1], self.features))
        y = upsample_conv(x.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
        return y


def _batch_norm(momentum: float, train: bool, dtype) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-5, dtype=dtype)


class Generator(nn.Module):
    """z (N, latent_dim) [and labels (N,)] -> images (N, H, W, C) in [-1, 1]: project to a small map,
    optionally some stride-1 convolutions there, then stride-2 upsampling, BatchNorm and ReLU (or
    LeakyReLU) between layers, tanh out. Every convolution halves the channels. Conditional
    (``num_classes`` > 0): z times a learned label embedding, elementwise (as the PyTorch cGAN
    examples do). Concatenating the embedding instead let G ignore z within a class (recall 0.000
    after 937 steps of fashion_cdcgan, against 0.123 after 670 steps with the product)."""

    image_shape: tuple[int, int, int] = (28, 28, 1)
    base_width: int = 64
    kernel_size: int = 5
    bn_momentum: float = 0.9
    base_features: int = 0  # Channels of the projected map; 0 = mirror D's last convolution.
    stride1_layers: int = 0
    activation: str = "relu"
    output_bias: bool = True
    num_classes: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array, train: bool, labels: jax.Array | None = None) -> jax.Array:
        height, width, channels = self.image_shape
        steps = num_resolution_steps(height)
        base = height >> steps
        features = self.base_features or self.base_width * 2 ** (steps - 1)
        act = nn.relu if self.activation == "relu" else functools.partial(nn.leaky_relu, negative_slope=0.2)
        if self.num_classes:
            _check_labels(labels, z.shape[0])
            embedding = nn.Embed(self.num_classes, z.shape[-1], embedding_init=nn.initializers.normal(1.0))
            z = z * embedding(labels)
        x = nn.Dense(base * base * features, use_bias=False, kernel_init=DCGAN_INIT, dtype=self.dtype)(z)
        x = act(_batch_norm(self.bn_momentum, train, self.dtype)(x))
        x = x.reshape(-1, base, base, features)
        k = (self.kernel_size, self.kernel_size)
        for i in range(self.stride1_layers):
            features //= 2
            x = nn.Conv(
                features, k, padding="SAME", use_bias=False, kernel_init=DCGAN_INIT, dtype=self.dtype, name=f"same{i}"
            )(x)
            x = act(_batch_norm(self.bn_momentum, train, self.dtype)(x))
        for i in range(steps - 1):
            features //= 2
            x = UpsampleConv(features, self.kernel_size, use_bias=False, dtype=self.dtype, name=f"up{i}")(x)
            x = act(_batch_norm(self.bn_momentum, train, self.dtype)(x))
        x = UpsampleConv(
            channels, self.kernel_size, use_bias=self.output_bias, dtype=self.dtype, name=f"up{steps - 1}"
        )(x)
        return jnp.tanh(x).astype(jnp.float32)


def _check_labels(labels: jax.Array | None, batch_size: int) -> None:
    if labels is None or labels.shape != (batch_size,):
        got = None if labels is None else labels.shape
        raise ValueError(f"a class-conditional model needs one label per image: shape ({batch_size},), got {got}")


class Discriminator(nn.Module):
    """images [and labels] -> one logit each: stride-2 convolutions (no pooling), LeakyReLU(0.2),
    BatchNorm on every layer but the input one (or nowhere), optional dropout and spectral
    normalisation, and a linear read-out. Conditional: a projection discriminator (Miyato &
    Koyama 2018), logit = w.h + embed(y).h on the flattened features h."""

    base_width: int = 64
    kernel_size: int = 5
    bn_momentum: float = 0.9
    batch_norm: bool = True
    dropout: float = 0.0  # Needs a "dropout" rng when training.
    spectral_norm: bool = False  # Power-iteration state in "batch_stats", updated when training.
    num_classes: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, labels: jax.Array | None = None) -> jax.Array:
        def layer(module: nn.Module, h: jax.Array) -> jax.Array:
            if self.spectral_norm:
                return nn.SpectralNorm(module, collection_name="batch_stats")(h, update_stats=train)
            return module(h)

        k = (self.kernel_size, self.kernel_size)
        x = x.astype(self.dtype)
        for i in range(num_resolution_steps(x.shape[1])):
            normalised = self.batch_norm and i > 0
            conv = nn.Conv(
                self.base_width * 2**i, k, strides=(2, 2), padding="SAME", use_bias=not normalised,
                kernel_init=DCGAN_INIT, dtype=self.dtype,
            )  # fmt: skip
            x = layer(conv, x)
            if normalised:
                x = _batch_norm(self.bn_momentum, train, self.dtype)(x)
            x = nn.leaky_relu(x, 0.2)
            if self.dropout:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        h = x.reshape(x.shape[0], -1)
        logits = layer(nn.Dense(1, kernel_init=DCGAN_INIT, dtype=self.dtype), h)[:, 0]
        if self.num_classes:
            _check_labels(labels, h.shape[0])
            embedding = nn.Embed(self.num_classes, h.shape[-1], embedding_init=DCGAN_INIT, dtype=self.dtype)
            logits = logits + jnp.sum(embedding(labels) * h, axis=-1)
        return logits.astype(jnp.float32)


def make_sampler(generator: Generator):
    """``sample(variables, z, labels=None)``, jitted, with BatchNorm's running averages: each image
    then depends only on its own latent vector (and label), not on the rest of the batch. The
    training sample grids and ``dcgan_jax.load().sample`` both use it, so they show the same thing."""
    return jax.jit(lambda variables, z, labels=None: generator.apply(variables, z, train=False, labels=labels))


COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build(model_config, image_shape: tuple[int, int, int], compute_dtype: str = "float32"):
    """(Generator, Discriminator) for ``config.model``; ``compute_dtype`` is ``train.compute_dtype``."""
    shared = {
        "base_width": model_config.base_width,
        "kernel_size": model_config.kernel_size,
        "bn_momentum": model_config.bn_momentum,
        "num_classes": model_config.num_classes,
        "dtype": COMPUTE_DTYPES[compute_dtype],
    }
    generator = Generator(
        image_shape=tuple(image_shape),
        base_features=model_config.g_base_features,
        stride1_layers=model_config.g_stride1_layers,
        activation=model_config.g_activation,
        output_bias=model_config.g_output_bias,
        **shared,
    )
    discriminator = Discriminator(
        batch_norm=model_config.d_batch_norm,
        dropout=model_config.d_dropout,
        spectral_norm=model_config.spectral_norm,
        **shared,
    )
    return generator, discriminator
