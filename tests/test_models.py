import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcgan_jax.gan import models, sampling
from dcgan_jax.gan.config import default_config


@pytest.mark.parametrize("image_shape", [(28, 28, 1), (32, 32, 3)])
def test_generator_and_discriminator_shapes_and_ranges(image_shape):
    config = default_config().model
    config.base_width = 8
    generator, discriminator = models.build(config, image_shape)
    z = 3.0 * jax.random.normal(jax.random.key(0), (5, config.latent_dim))
    g_vars = generator.init(jax.random.key(1), z, train=False)
    images, _ = generator.apply(g_vars, z, train=True, mutable=["batch_stats"])
    assert images.shape == (5, *image_shape)
    assert float(images.min()) >= -1.0 and float(images.max()) <= 1.0
    assert float(images.std()) > 0.0
    d_vars = discriminator.init(jax.random.key(2), images, train=False)
    logits, _ = discriminator.apply(d_vars, images, train=True, mutable=["batch_stats"])
    assert logits.shape == (5,)
    assert np.all(np.isfinite(logits))


def test_discriminator_has_no_batchnorm_on_its_input_layer():
    config = default_config().model
    _, discriminator = models.build(config, (28, 28, 1))
    variables = discriminator.init(jax.random.key(0), jnp.zeros((2, 28, 28, 1)), train=False)
    # Two convolutions for 28x28 and one BatchNorm: after the second, not the first.
    assert sorted(variables["batch_stats"]) == ["BatchNorm_0"]
    assert variables["batch_stats"]["BatchNorm_0"]["mean"].shape == (2 * config.base_width,)


def test_generator_batchnorm_modes_differ_and_running_mode_is_per_sample():
    config = default_config().model
    config.base_width = 8
    generator, _ = models.build(config, (28, 28, 1))
    z = jax.random.normal(jax.random.key(0), (4, config.latent_dim))
    variables = generator.init(jax.random.key(1), z, train=False)
    alone = generator.apply(variables, z[:1], train=False)
    in_batch = generator.apply(variables, z, train=False)[:1]
    np.testing.assert_allclose(alone, in_batch, atol=1e-6)
    batch_mode, _ = generator.apply(variables, z, train=True, mutable=["batch_stats"])
    assert float(jnp.abs(batch_mode[:1] - in_batch).max()) > 1e-3


@pytest.mark.parametrize(
    "size, message", [(30, "odd size 15"), (2, "too small"), (7, "too small"), (8, "10 or more")]
)
def test_impossible_image_sizes_are_named(size, message):
    """Sizes 3 to 8 need no doubling, and a DCGAN of no stage sized its layers 2**-1 wide."""
    with pytest.raises(ValueError, match=message):
        models.num_resolution_steps(size)
    assert models.num_resolution_steps(10) == 1


def test_reference_experiment_has_the_pytorch_reference_architecture():
    """The layer shapes of ../shared/bench/torch_reference.py (PyTorch's OIHW/IOHW as HWIO here)."""
    from pathlib import Path

    from dcgan_jax.run.cli import load_experiment

    config = load_experiment(
        "reference_dcgan", Path(__file__).resolve().parent.parent / "experiments"
    )
    generator, discriminator = models.build(config.model, (28, 28, 1))
    g = jax.eval_shape(lambda: generator.init(jax.random.key(0), jnp.zeros((2, 100)), train=False))
    d = discriminator.init(jax.random.key(0), jnp.zeros((2, 28, 28, 1)), train=False)
    shapes = jax.tree.map(lambda x: x.shape, {"g": g["params"], "d": d["params"]})
    assert shapes["g"] == {
        "Dense_0": {"kernel": (100, 7 * 7 * 256)},  # Linear(100, 7*7*256, bias=False)
        "BatchNorm_0": {"bias": (12544,), "scale": (12544,)},  # BatchNorm1d(7*7*256)
        "same0": {"kernel": (5, 5, 256, 128)},  # ConvTranspose2d(256, 128, 5, 1, 2, bias=False)
        "BatchNorm_1": {"bias": (128,), "scale": (128,)},
        "up0": {"kernel": (5, 5, 128, 64)},  # ConvTranspose2d(128, 64, 5, 2, ..., bias=False)
        "BatchNorm_2": {"bias": (64,), "scale": (64,)},
        "up1": {"kernel": (5, 5, 64, 1)},  # ConvTranspose2d(64, 1, 5, 2, ..., bias=False)
    }
    assert shapes["d"] == {
        "down0": {"bias": (64,), "kernel": (5, 5, 1, 64)},
        "down1": {"bias": (128,), "kernel": (5, 5, 64, 128)},
        "Dense_0": {"bias": (1,), "kernel": (128 * 7 * 7, 1)},
    }
    assert "batch_stats" not in d  # No BatchNorm in the reference's D.
    # Dropout: training outputs depend on the dropout key, inference ones do not.
    x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
    train_a = discriminator.apply(d, x, train=True, rngs={"dropout": jax.random.key(2)})
    train_b = discriminator.apply(d, x, train=True, rngs={"dropout": jax.random.key(3)})
    assert not np.allclose(train_a, train_b)
    np.testing.assert_array_equal(
        discriminator.apply(d, x, train=False), discriminator.apply(d, x, train=False)
    )


@pytest.mark.parametrize(
    "image_shape, upsampling_blocks", [((28, 28, 1), 2), ((32, 32, 3), 2), ((64, 64, 3), 3)]
)
def test_depth_follows_the_image_size(image_shape, upsampling_blocks):
    config = default_config().model
    config.base_width = 4
    generator, discriminator = models.build(config, image_shape)
    # Shapes only (nothing computed).
    g_params = jax.eval_shape(
        lambda: generator.init(jax.random.key(0), jnp.zeros((2, config.latent_dim)), False)
    )
    g_params = g_params["params"]
    assert sorted(k for k in g_params if k.startswith("up")) == [
        f"up{i}" for i in range(upsampling_blocks)
    ]
    d_params = jax.eval_shape(
        lambda: discriminator.init(jax.random.key(0), jnp.zeros((2, *image_shape)), False)
    )
    d_params = d_params["params"]
    assert len([k for k in d_params if k.startswith("down")]) == upsampling_blocks


def test_conditional_generator_honours_its_labels():
    config = default_config().model
    config.update(base_width=8, num_classes=10)
    generator, _ = models.build(config, (28, 28, 1))
    z = jax.random.normal(jax.random.key(0), (1, config.latent_dim))
    variables = generator.init(jax.random.key(1), z, train=False, labels=jnp.zeros((1,), jnp.int32))
    sample = sampling.make_sampler(generator)
    same_z = jnp.repeat(z, 3, axis=0)
    images = np.asarray(sample(variables, same_z, jnp.array([3, 3, 7])))
    np.testing.assert_array_equal(images[0], images[1])  # Same z and label: the same image.
    assert np.abs(images[0] - images[2]).mean() > 1e-3  # Same z, another label: another image.
    with pytest.raises(ValueError, match="one label per image"):
        sample(variables, same_z, None)


def test_projection_discriminator_scores_depend_on_the_label():
    config = default_config().model
    config.update(base_width=8, num_classes=10, d_batch_norm=False)
    _, discriminator = models.build(config, (28, 28, 1))
    images = jax.random.normal(jax.random.key(0), (2, 28, 28, 1))
    variables = discriminator.init(
        jax.random.key(1), images, train=False, labels=jnp.zeros((2,), jnp.int32)
    )
    a = discriminator.apply(variables, images, train=False, labels=jnp.array([0, 0]))
    b = discriminator.apply(variables, images, train=False, labels=jnp.array([0, 5]))
    assert a[0] == b[0] and a[1] != b[1]


def test_spectral_norm_estimates_each_layers_largest_singular_value():
    config = default_config().model
    config.update(base_width=8, spectral_norm=True, d_batch_norm=False)
    _, discriminator = models.build(config, (28, 28, 1))
    images = jax.random.normal(jax.random.key(0), (2, 28, 28, 1))
    variables = discriminator.init(jax.random.key(1), images, train=False)
    apply = jax.jit(
        lambda v: discriminator.apply(v, images, train=True, mutable=["batch_stats"])[1]
    )
    for _ in range(30):  # Power iterations, one per training-mode call.
        variables = {"params": variables["params"], **apply(variables)}
    layer = variables["batch_stats"]["SpectralNorm_1"]
    kernel = np.asarray(variables["params"]["down1"]["kernel"])
    true_sigma = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
    sigma = float(next(v for k, v in layer.items() if "sigma" in k))
    assert sigma == pytest.approx(true_sigma, rel=0.02)


def test_dropout_drops_at_its_rate_and_keeps_the_mean():
    x = jnp.ones((200, 7, 7, 31))  # An odd size: the 16-bit halves of the last word are cut.
    y = models.dropout(x, 0.3, jax.random.key(0))
    dropped = float(jnp.mean(y == 0))
    assert abs(dropped - 0.3) < 0.005, dropped
    assert abs(float(jnp.mean(y)) - 1.0) < 0.01
    again = models.dropout(x, 0.3, jax.random.key(0))
    other = models.dropout(x, 0.3, jax.random.key(1))
    np.testing.assert_array_equal(y, again)
    assert float(jnp.mean((y == 0) != (other == 0))) > 0.3  # Another key, another mask.
