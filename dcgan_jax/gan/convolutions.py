"""Fast, exact rewrites of the generator's convolutions, parameters as
``nn.Conv``/``nn.ConvTranspose`` (each the same linear map as the plain layer, outputs and
gradients: tests/test_convolutions.py).

- Sub-pixel upsampling: a stride-2 transposed convolution as four stride-1 "phase" convolutions and
  depth-to-space (XLA's CPU gradient of the dilated convolution is far slower, jax#23783).
- Fourier convolution: on a DCGAN's small maps a stride-1 convolution is a product per frequency,
  the transforms small dense DFT matrices: all matrix products (benchmarks/RESULTS.md).

``algorithm``: ``"direct"`` (XLA's), ``"fourier"``, or ``"auto"``: Fourier where it needs at most
half the direct sum's multiply-adds, on the CPU in float32 (GPU libraries have their own fast
kernels)."""

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
ALGORITHMS = ("auto", "direct", "fourier")  # model.conv_algorithm, checked by the config.

Padding = tuple[int, int]


@functools.cache
def _fourier_matrices(
    size: int, kernel_size: int, padding: Padding
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real DFT matrices of a stride-1 cross-correlation of a ``size`` x ``size`` map: (input
    transform (2F, size^2), kernel transform (2F, k^2), inverse (out^2, 2F)), ordered (frequency,
    re|im). The period ``n = size + max(padding)`` makes the wrapped terms fall on zero padding;
    frequencies are a real signal's half-plane, the inverse counting the other half by each column's
    multiplicity."""
    low, high = padding
    out = size + low + high - kernel_size + 1
    n = size + max(low, high, 0)
    rows, columns = np.arange(n), np.arange(n // 2 + 1)

    def dft(frequencies, positions, sign):
        return np.exp(sign * 2j * np.pi * np.outer(frequencies, positions) / n)

    def two_d(row_factor, column_factor):  # (u, v) x (i, j), separable.
        return np.einsum("ui,vj->uvij", row_factor, column_factor).reshape(
            row_factor.shape[0] * column_factor.shape[0], -1
        )

    pixels, taps, outputs = np.arange(size), np.arange(kernel_size) - low, np.arange(out)
    x_transform = two_d(dft(rows, pixels, -1), dft(columns, pixels, -1))  # X = sum x e^{-i...}
    # conj(DFT of the correlation kernel)
    k_transform = two_d(dft(rows, taps, 1), dft(columns, taps, 1))
    multiplicity = np.where((columns == 0) | (2 * columns == n), 1.0, 2.0)
    inverse = (
        two_d(dft(rows, outputs, 1), dft(columns, outputs, 1) * multiplicity[:, None]).T / n**2
    )

    def interleave(matrix):  # (F, P) complex -> (2F, P) real, rows (f, re|im).
        return (
            np.stack([matrix.real, matrix.imag], axis=1)
            .reshape(-1, matrix.shape[1])
            .astype(np.float32)
        )

    # Re(sum_f P_f Y_f) = sum_f Re(P_f) Re(Y_f) - Im(P_f) Im(Y_f): columns (f, re|-im).
    return interleave(x_transform), interleave(k_transform), interleave(inverse.conj().T).T


def fourier_conv(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
    """Exactly ``lax.conv_general_dilated(x, kernel, (1, 1), (padding, padding))`` (NHWC, HWIO,
    square maps and kernels), computed per frequency."""
    batch, size, _, channels = x.shape
    kernel_size, _, _, features = kernel.shape
    x_transform, k_transform, inverse = _fourier_matrices(size, kernel_size, tuple(padding))
    frequencies, out = x_transform.shape[0] // 2, math.isqrt(inverse.shape[0])
    # (F, [real; imaginary] x batch, C): both parts of X share one product with each kernel part.
    spectrum = (
        x_transform @ x.transpose(1, 2, 0, 3).reshape(size * size, batch * channels)
    ).reshape(frequencies, 2 * batch, channels)
    k_spectrum = (k_transform @ kernel.reshape(kernel_size**2, channels * features)).reshape(
        frequencies, 2, channels, features
    )
    with_real = jnp.einsum("fbc,fcd->fbd", spectrum, k_spectrum[:, 0])
    with_imag = jnp.einsum("fbc,fcd->fbd", spectrum, k_spectrum[:, 1])
    # (Xr + i Xi)(Kr + i Ki) = (Xr Kr - Xi Ki) + i (Xr Ki + Xi Kr)
    product = jnp.stack(
        [with_real[:, :batch] - with_imag[:, batch:], with_imag[:, :batch] + with_real[:, batch:]],
        axis=1,
    )
    y = inverse @ product.reshape(2 * frequencies, batch * features)
    return y.reshape(out, out, batch, features).transpose(2, 0, 1, 3)


def _fourier_pays(
    x_shape: tuple[int, ...], kernel_shape: tuple[int, ...], padding: Padding
) -> bool:
    """Whether the Fourier form needs at most half the direct convolution's multiply-adds."""
    _, size, _, channels = x_shape
    kernel_size, _, _, features = kernel_shape
    out = size + sum(padding) - kernel_size + 1
    n = size + max(*padding, 0)
    frequencies = n * (n // 2 + 1)
    direct = out**2 * kernel_size**2 * channels * features
    products = 4 * frequencies * channels * features
    # Per image; kernel's is shared.
    transforms = 2 * frequencies * (size**2 * channels + out**2 * features)
    return 2 * (products + transforms) <= direct


def _use_fourier(algorithm: str, x_shape, dtype, kernel_shape, padding: Padding) -> bool:
    if algorithm == "auto":
        on_cpu = dtype == jnp.float32 and jax.default_backend() == "cpu"
        return on_cpu and _fourier_pays(x_shape, kernel_shape, padding)
    return algorithm == "fourier"


def _xla_conv(x, kernel, stride: int, padding):
    dimensions = ("NHWC", "HWIO", "NHWC")
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), padding, dimension_numbers=dimensions
    )


def conv(x: jax.Array, kernel: jax.Array, padding: Padding, algorithm: str = "auto") -> jax.Array:
    """Stride-1 cross-correlation, NHWC x HWIO, the same ``padding`` on both spatial axes."""
    if _use_fourier(algorithm, x.shape, x.dtype, kernel.shape, padding):
        return fourier_conv(x, kernel, padding)
    return _xla_conv(x, kernel, 1, (padding, padding))


def _selection(
    entries: list[tuple[int, int, int]], kernel_size: int
) -> tuple[int, int, np.ndarray]:
    """(lowest offset, highest offset, 0/1 tensor (phase, offset - lowest, tap)) of a stride-2
    convolution's (phase, input offset, kernel tap) entries along one axis: a constant selection
    that keeps the kernel's rearrangement one einsum (differentiable, fused by XLA)."""
    offsets = [d for _, d, _ in entries]
    lo, hi = min(offsets), max(offsets)
    select = np.zeros((2, hi - lo + 1, kernel_size), np.float32)
    for phase, d, t in entries:
        select[phase, d - lo, t] = 1.0
    return lo, hi, select


def _upsample_selection(kernel_size: int) -> tuple[int, int, np.ndarray]:
    """A stride-2 'SAME' transposed convolution along one axis, ``y[2i + a] = sum_t x[i + (a + t -
    pad) / 2] w[t]`` over taps with ``a + t - pad`` even (``pad``: lax.conv_transpose's leading
    padding), as :func:`_selection`."""
    pad = kernel_size - 1 if 2 > kernel_size - 1 else math.ceil(kernel_size / 2)
    entries = [
        (a, (a + t - pad) // 2, t)
        for a in (0, 1)
        for t in range(kernel_size)
        if (a + t - pad) % 2 == 0
    ]
    return _selection(entries, kernel_size)


def phase_kernel(kernel: jax.Array) -> jax.Array:
    """Rearranges a (k, k, in, out) transposed-conv kernel into a (n, n, in, 4*out) stride-1
    kernel whose output channels are the four (row phase, column phase) sub-images."""
    k, _, c_in, c_out = kernel.shape
    lo, hi, select = _upsample_selection(k)
    phases = jnp.einsum("aiy,bjx,yxco->ijcabo", select, select, kernel)
    return phases.reshape(hi - lo + 1, hi - lo + 1, c_in, 4 * c_out)


def upsample_conv(x: jax.Array, kernel: jax.Array, algorithm: str = "auto") -> jax.Array:
    """Exactly ``lax.conv_transpose(x, kernel, (2, 2), 'SAME')`` (NHWC, HWIO), computed
    sub-pixel."""
    lo, hi, _ = _upsample_selection(kernel.shape[0])
    y = conv(x, phase_kernel(kernel).astype(x.dtype), (-lo, hi), algorithm)
    batch, height, width, channels = y.shape
    y = y.reshape(batch, height, width, 2, 2, channels // 4)
    return y.transpose(0, 1, 3, 2, 4, 5).reshape(batch, 2 * height, 2 * width, channels // 4)


def downsample_conv(x: jax.Array, kernel: jax.Array, algorithm: str = "auto") -> jax.Array:
    """Exactly ``lax.conv_general_dilated(x, kernel, (2, 2), 'SAME')`` (NHWC, HWIO). In the Fourier
    form, a stride-1 convolution of the space-to-depth map (4x the channels, even-sized maps only):
    ``y[i] = sum_t x[2i + t - pad] w[t]`` over the phases ``x_p[j] = x[2j + p]``; otherwise XLA's
    strided convolution, faster than a direct space-to-depth one."""
    batch, height, width, channels = x.shape
    k, _, _, features = kernel.shape
    pad = max(k - 2, 0) // 2  # XLA's 'SAME' padding before the first row, stride 2, even size.
    lo, hi, select = _selection([((t - pad) % 2, (t - pad) // 2, t) for t in range(k)], k)
    n = hi - lo + 1
    s2d_shape = (batch, height // 2, width // 2, 4 * channels)
    kernel_shape = (n, n, 4 * channels, features)
    if (
        height % 2
        or width % 2
        or not _use_fourier(algorithm, s2d_shape, x.dtype, kernel_shape, (-lo, hi))
    ):
        return _xla_conv(x, kernel, 2, "SAME")
    phases = jnp.einsum("aiy,bjx,yxco->ijabco", select, select, kernel).reshape(
        n, n, 4 * channels, features
    )
    x = (
        x.reshape(batch, height // 2, 2, width // 2, 2, channels)
        .transpose(0, 1, 3, 2, 4, 5)
        .reshape(s2d_shape)
    )
    return fourier_conv(x, phases.astype(x.dtype), (-lo, hi))


class _KernelLayer(nn.Module):
    """A convolution layer with Flax's parameter names and shapes: "kernel" (k, k, in, out),
    "bias"; a subclass defines ``convolve(x, kernel)``."""

    features: int
    kernel_size: int = 5
    use_bias: bool = True
    algorithm: str = "auto"
    dtype: Any = jnp.float32  # Computation; the parameters stay float32.

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", DCGAN_INIT, (k, k, x.shape[-1], self.features))
        y = self.convolve(x.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
        return y


class Conv(_KernelLayer):
    """Stride-1 'SAME' convolution, parameter-compatible with ``nn.Conv`` (no bias by default)."""

    use_bias: bool = False

    def convolve(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
        k = self.kernel_size
        return conv(x, kernel, ((k - 1) // 2, k // 2), self.algorithm)


class DownsampleConv(_KernelLayer):
    """Stride-2 'SAME' convolution, parameter-compatible with ``nn.Conv(strides=2)``."""

    def convolve(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
        return downsample_conv(x, kernel, self.algorithm)


class UpsampleConv(_KernelLayer):
    """Stride-2 transposed convolution, parameter-compatible with ``nn.ConvTranspose``."""

    def convolve(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
        return upsample_conv(x, kernel, self.algorithm)
