"""The convolution rewrites against XLA's plain convolutions: same outputs, same gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcgan_jax.gan import convolutions


def _same_values_and_gradients(ours, reference, x, kernel, atol):
    """Outputs, and gradients of a nonlinear loss w.r.t. input and kernel, agree within ``atol``.
    (Jitted: one compilation each instead of one per operation.)"""

    def values_and_gradients(f):
        def loss(x, kernel):
            return jnp.sum(jnp.sin(f(x, kernel)))

        return jax.jit(lambda x, kernel: (f(x, kernel), jax.grad(loss, argnums=(0, 1))(x, kernel)))

    ours_values, ours_grads = values_and_gradients(ours)(x, kernel)
    reference_values, reference_grads = values_and_gradients(reference)(x, kernel)
    np.testing.assert_allclose(ours_values, reference_values, atol=atol, rtol=1e-4)
    for a, b in zip(ours_grads, reference_grads, strict=True):
        np.testing.assert_allclose(a, b, atol=10 * atol, rtol=1e-4)


def _plain_conv(padding):
    def conv(x, kernel):
        dimensions = ("NHWC", "HWIO", "NHWC")
        return jax.lax.conv_general_dilated(
            x, kernel, (1, 1), (padding, padding), dimension_numbers=dimensions
        )

    return conv


def _plain_conv_transpose(x, kernel):
    return jax.lax.conv_transpose(
        x, kernel, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@pytest.mark.parametrize(
    "size, kernel_size, padding", [(7, 5, (2, 2)), (7, 4, (1, 2)), (8, 3, (0, 2)), (5, 5, (0, 0))]
)
def test_fourier_conv_equals_direct_convolution(size, kernel_size, padding):
    x = jax.random.normal(jax.random.key(0), (3, size, size, 6))
    kernel = jax.random.normal(jax.random.key(1), (kernel_size, kernel_size, 6, 5))

    def ours(x, kernel):
        return convolutions.fourier_conv(x, kernel, padding)

    _same_values_and_gradients(ours, _plain_conv(padding), x, kernel, atol=1e-4)


@pytest.mark.parametrize("size, kernel_size", [(14, 5), (14, 4), (7, 5)])
def test_downsample_conv_equals_strided_convolution(size, kernel_size):
    x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
    kernel = jax.random.normal(jax.random.key(1), (kernel_size, kernel_size, 3, 4))

    def ours(x, kernel):
        return convolutions.downsample_conv(x, kernel, "fourier")

    def reference(x, kernel):
        return jax.lax.conv_general_dilated(
            x, kernel, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    _same_values_and_gradients(ours, reference, x, kernel, atol=1e-4)


@pytest.mark.parametrize(
    "kernel_size, algorithm", [(3, "direct"), (4, "fourier"), (5, "direct"), (5, "fourier")]
)
def test_upsample_conv_equals_transposed_convolution(kernel_size, algorithm):
    x = jax.random.normal(jax.random.key(0), (2, 7, 7, 8))
    kernel = jax.random.normal(jax.random.key(1), (kernel_size, kernel_size, 8, 6))

    def ours(x, kernel):
        return convolutions.upsample_conv(x, kernel, algorithm)

    _same_values_and_gradients(ours, _plain_conv_transpose, x, kernel, atol=1e-4)


def test_modules_are_parameter_compatible_with_flax_layers():
    x = jax.random.normal(jax.random.key(0), (3, 7, 7, 4))
    pairs = [
        (
            convolutions.UpsampleConv(5, kernel_size=5),
            nn.ConvTranspose(5, (5, 5), strides=(2, 2), padding="SAME"),
        ),
        (
            convolutions.Conv(6, kernel_size=5, algorithm="fourier"),
            nn.Conv(6, (5, 5), padding="SAME", use_bias=False),
        ),
        (
            convolutions.Conv(6, kernel_size=4, algorithm="fourier"),
            nn.Conv(6, (4, 4), padding="SAME", use_bias=False),
        ),
        (
            convolutions.DownsampleConv(6, 5, algorithm="fourier"),
            nn.Conv(6, (5, 5), strides=(2, 2), padding="SAME"),
        ),
    ]
    for ours, theirs in pairs:
        variables = theirs.init(jax.random.key(1), x)
        variables = jax.tree.map(lambda v: v + 0.1, variables)  # Non-zero bias.
        assert jax.tree.structure(
            jax.eval_shape(ours.init, jax.random.key(1), x)
        ) == jax.tree.structure(variables)
        np.testing.assert_allclose(
            jax.jit(ours.apply)(variables, x),
            jax.jit(theirs.apply)(variables, x),
            atol=1e-4,
            rtol=1e-5,
        )


def test_auto_picks_fourier_only_where_it_saves_work():
    # The reference generator's 5x5 256->128 layer at 7x7: ~1/4 of the multiply-adds.
    assert convolutions._fourier_pays((64, 7, 7, 256), (5, 5, 256, 128), (2, 2))
    # The output layer's phase convolution to 4 channels: the transforms would cost more than the
    # taps.
    assert not convolutions._fourier_pays((64, 14, 14, 64), (3, 3, 64, 4), (1, 1))


def test_the_config_takes_exactly_the_convolutions_algorithms():
    from dcgan_jax.gan import ConfigError, config

    settings = config.default_config()
    for algorithm in convolutions.ALGORITHMS:
        settings.model.conv_algorithm = algorithm
        config.validate(settings)
    settings.model.conv_algorithm = "winograd"
    with pytest.raises(ConfigError, match="'winograd': must be one of auto, direct, fourier"):
        config.validate(settings)
