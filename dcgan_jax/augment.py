"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) of the images D sees.

The same kinds of random transformation (drawn afresh for each batch) are applied to real and
generated images, in D's update and in G's, and they are differentiable, so G learns through
them; D can no longer fit the training set by heart, which is what makes small data or short
runs fail. ``train.diffaugment`` names the transformations, joined by "," or "+" (a sweep's
values are comma-separated), applied in this order (the authors' ranges):

- ``color``: brightness (+ U(-0.5, 0.5) per image), saturation (colour images only: the
  deviation from the pixel's channel mean scaled by U(0, 2)) and contrast (the deviation from the
  image's mean scaled by U(0.5, 1.5));
- ``translation``: shifted by up to 1/8 of the size each way, whole pixels, the border filled with 0;
- ``cutout``: a square of half the size at a random place set to 0.

Images are (N, H, W, C) in [-1, 1]; the randomness comes only from the key the step passes in.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp


def parse(policy: str) -> tuple[str, ...]:
    """The transformations of ``train.diffaugment`` (checked by the config's validation)."""
    return tuple(p.strip() for p in re.split(r"[,+]", policy) if p.strip())


def _uniform(key: jax.Array, n: int, low: float, high: float, dtype) -> jax.Array:
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


_TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(images: jax.Array, key: jax.Array, policy: str) -> jax.Array:
    """``images`` through the transformations of ``policy`` (see the module docstring); unchanged
    for an empty policy."""
    names = parse(policy)
    for name, name_key in zip(names, jax.random.split(key, max(len(names), 1)), strict=False):
        images = _TRANSFORMS[name](images, name_key)
    return images
