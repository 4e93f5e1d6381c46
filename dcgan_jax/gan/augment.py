"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) of every image D sees, real and fake,
in both updates, so D cannot learn the training set by heart. ``train.diffaugment``: ``color``
(brightness, saturation, contrast), ``translation`` (up to 1/8 of the size, zero border), ``cutout``
(a square of half the size set to 0), joined by "," or "+", in the authors' ranges."""

import re

import jax
import jax.numpy as jnp


def parse(policy: str) -> tuple[str, ...]:
    """The transformations of ``train.diffaugment`` (checked by the config's validation)."""
    return tuple(p.strip() for p in re.split(r"[,+]", policy) if p.strip())


def _uniform(key, n, low, high, dtype):
    return jax.random.uniform(key, (n, 1, 1, 1), dtype, low, high)


def color(x: jax.Array, key: jax.Array) -> jax.Array:
    brightness, saturation, contrast = jax.random.split(key, 3)
    n = x.shape[0]
    x = x + _uniform(brightness, n, -0.5, 0.5, x.dtype)
    if x.shape[-1] > 1:  # A grey image equals its channel mean: saturation would change nothing.
        mean = x.mean(axis=-1, keepdims=True)
        x = (x - mean) * _uniform(saturation, n, 0.0, 2.0, x.dtype) + mean
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - mean) * _uniform(contrast, n, 0.5, 1.5, x.dtype) + mean


def translation(x: jax.Array, key: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    max_y, max_x = h // 8, w // 8
    ky, kx = jax.random.split(key)
    dy = jax.random.randint(ky, (n,), -max_y, max_y + 1)
    dx = jax.random.randint(kx, (n,), -max_x, max_x + 1)
    padded = jnp.pad(x, [(0, 0), (max_y, max_y), (max_x, max_x), (0, 0)])

    def shift(image, sy, sx):  # The content moves by (sy, sx): out[i, j] = image[i - sy, j - sx].
        return jax.lax.dynamic_slice(image, (max_y - sy, max_x - sx, 0), (h, w, c))

    return jax.vmap(shift)(padded, dy, dx)


def cutout(x: jax.Array, key: jax.Array) -> jax.Array:
    n, h, w, _ = x.shape
    size_y, size_x = h // 2, w // 2
    ky, kx = jax.random.split(key)
    centre_y = jax.random.randint(ky, (n, 1, 1), 0, h + 1 - size_y % 2)
    centre_x = jax.random.randint(kx, (n, 1, 1), 0, w + 1 - size_x % 2)
    top, left = centre_y - size_y // 2, centre_x - size_x // 2
    rows, cols = jnp.arange(h)[None, :, None], jnp.arange(w)[None, None, :]
    inside = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
    return jnp.where(inside[..., None], jnp.zeros((), x.dtype), x)


# The names train.diffaugment may join.
TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(images: jax.Array, key: jax.Array, policy: str) -> jax.Array:
    """``images`` (N, H, W, C) through the transformations of ``policy``, with randomness from
    ``key``."""
    names = parse(policy)
    for name, name_key in zip(names, jax.random.split(key, max(len(names), 1)), strict=False):
        images = TRANSFORMS[name](images, name_key)
    return images
