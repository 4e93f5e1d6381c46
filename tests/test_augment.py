"""DiffAugment and the minibatch standard deviation: what each computes, and that the step uses
them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

import dcgan_jax
from dcgan_jax.gan import augment, config, loop, models, sampling, step
from dcgan_jax.run import writers

KEY = jax.random.key(0)


def _images(n=16, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (n, 28, 28, 1)), jnp.float32)


def test_an_empty_policy_changes_nothing():
    x = _images()
    assert augment.diff_augment(x, KEY, "") is x


def test_color_shifts_each_mean_by_at_most_a_half_and_scales_its_spread_by_half_to_one_and_a_half():
    x = _images(64)
    y = np.asarray(augment.diff_augment(x, KEY, "color"))
    shift = y.mean(axis=(1, 2, 3)) - np.asarray(x).mean(axis=(1, 2, 3))
    scale = y.std(axis=(1, 2, 3)) / np.asarray(x).std(axis=(1, 2, 3))
    assert np.all(np.abs(shift) <= 0.5) and shift.std() > 0.1  # Brightness: one draw per image.
    assert np.all((scale >= 0.5 - 1e-5) & (scale <= 1.5 + 1e-5)) and scale.std() > 0.1  # Contrast.
    colour = jnp.concatenate([x, -x, x * 0.5], axis=-1)
    z = np.asarray(augment.color(colour, KEY))
    assert not np.allclose(
        z[..., 0] - z[..., 1], (np.asarray(colour)[..., 0] - np.asarray(colour)[..., 1])
    )


def test_translation_moves_each_image_whole_by_at_most_an_eighth_with_zero_borders():
    x = np.zeros((32, 28, 28, 1), np.float32)
    x[:, 14, 14] = 1.0
    y = np.asarray(augment.diff_augment(jnp.asarray(x), KEY, "translation"))
    shifts = set()
    for image in y:
        ((row, col, _),) = np.argwhere(image == 1.0)
        shifts.add((row - 14, col - 14))
        assert abs(row - 14) <= 3 and abs(col - 14) <= 3 and image.sum() == 1.0
    assert len(shifts) > 5
    ones = np.asarray(augment.translation(jnp.ones((32, 28, 28, 1)), KEY))
    rows_zero = (ones == 0).all(axis=(2, 3)).sum(axis=1)  # Whole rows of border.
    assert rows_zero.max() <= 3 and rows_zero.max() > 0


def test_cutout_zeroes_one_square_of_half_the_size_clipped_at_the_edges():
    y = np.asarray(augment.diff_augment(jnp.ones((64, 28, 28, 1)), KEY, "cutout"))[..., 0]
    for image in y:
        rows, cols = np.nonzero(image == 0)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        # One rectangle.
        assert 7 <= height <= 14 and 7 <= width <= 14 and len(rows) == height * width
    assert (y == 0).sum(axis=(1, 2)).max() == 14 * 14


def test_augmentation_is_differentiable_and_keyed():
    x = _images()
    grad = jax.grad(
        lambda x: jnp.sum(augment.diff_augment(x, KEY, "color,translation,cutout") ** 2)
    )(x)
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
    policy = "color,translation,cutout"
    same = (
        augment.diff_augment(x, KEY, policy),
        augment.diff_augment(x, KEY, "color+translation+cutout"),
    )
    other = augment.diff_augment(x, jax.random.key(1), policy)
    np.testing.assert_array_equal(*same)
    assert not np.allclose(same[0], other)


def test_an_unknown_transformation_is_a_config_error_with_the_closest_name():
    c = tiny_config()
    c.train.diffaugment = "color,cutuot"
    with pytest.raises(
        config.ConfigError,
        match=r"'cutuot' is not one of color, translation, cutout. Did you mean cutout\?",
    ):
        config.validate(c)


def test_the_step_augments_what_d_and_g_see():
    """With a policy, D's loss and G's loss in the step differ from the unaugmented ones on the
    same batches and keys; without, they are the plain ones."""
    c = tiny_config()
    c.dataset.name, c.model.base_width = "synthetic", 8
    nets = models.build(c.model, (28, 28, 1))
    state = loop.initial_state(c, nets, (28, 28, 1))
    real, fake = _images(16, 1), _images(16, 2)
    key = sampling.update_key(state.rng, state.step)

    u, fakes = step.make_update(nets, c), step.Fakes(fake, None, None, {})

    def losses(policy):
        c.train.diffaugment = policy  # u holds c itself.
        d, _ = step.d_loss(state.d.params, state, ((real, None), fakes), key, u)
        return float(d), float(step.g_loss(state, fakes, fake, key, u))

    plain, augmented = losses(""), losses("translation,cutout")
    assert plain[0] != augmented[0] and plain[1] != augmented[1]
    assert losses("") == plain


def test_minibatch_stddev_is_the_spread_within_each_group():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4, 4, 3)).astype(np.float32)
    x[1::2] = x[1]  # Images 1, 3, 5, 7: identical. Groups of 4 take i, i + 2, i + 4, i + 6.
    y = np.asarray(models.minibatch_stddev(jnp.asarray(x)))
    assert y.shape == (8, 4, 4, 4)
    np.testing.assert_array_equal(y[..., :3], x)
    spread = y[:, 0, 0, 3]
    assert np.allclose(spread[1::2], 1e-4, atol=1e-5)  # sqrt(0 + 1e-8).
    expected = np.sqrt(x[0::2].var(axis=0) + 1e-8).mean()
    assert np.allclose(spread[0::2], expected, rtol=1e-5)
    assert (y[..., 3] == y[:, :1, :1, 3]).all()  # One value per image, over the whole map.
    odd = np.asarray(models.minibatch_stddev(jnp.asarray(x[:6])))  # 6 = 3 groups of 2.
    assert odd.shape == (6, 4, 4, 4) and np.isfinite(odd).all()


def test_a_run_with_both_trains_and_d_has_the_extra_channel(tmp_path):
    c = tiny_config(num_steps=4)
    c.train.diffaugment = "color,translation,cutout"
    c.model.minibatch_std = True
    state = dcgan_jax.train(c, tmp_path / "run")
    rows = [r for r in writers.read_metrics(tmp_path / "run" / "metrics.jsonl") if "d_loss" in r]
    assert rows and all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) for r in rows)
    dense = state.d.params["Dense_0"]["kernel"]
    plain = models.build(tiny_config().model, (28, 28, 1))
    _, d_vars = models.init_variables(plain, KEY, (28, 28, 1), 16)
    extra = dense.shape[0] - d_vars["params"]["Dense_0"]["kernel"].shape[0]
    # One H x W map more.
    assert extra > 0 and d_vars["params"]["Dense_0"]["kernel"].shape[0] % extra == 0
