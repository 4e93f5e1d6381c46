import jax
import numpy as np
import pytest
from conftest import tiny_config, trees_equal

from dcgan_jax import data, models, parallel
from dcgan_jax.config import ConfigError
from dcgan_jax.train_step import compile_train_step, init_state, make_optimizer, make_train_step, make_updates


def _setup(generator_loss="non_saturating"):
    config = tiny_config()
    generator, discriminator = models.build(config.model, (28, 28, 1))
    optimizer = make_optimizer(config.optimizer)
    state = init_state(generator, discriminator, optimizer, 0, (28, 28, 1), config.model.latent_dim)
    args = (generator, discriminator, optimizer, generator_loss, config.model.latent_dim)
    images, _ = data.synthetic_images(64, seed=0)
    real = data.to_model_range(images[: config.train.batch_size])
    return config, state, args, real


def test_generator_update_leaves_discriminator_untouched():
    _, state, args, real = _setup()
    g_update = make_updates(*args).g_update
    new, metrics = jax.jit(g_update, static_argnums=2)(state, jax.random.key(0), len(real))
    assert trees_equal(new.d_params, state.d_params)
    assert trees_equal(new.d_batch_stats, state.d_batch_stats)
    assert trees_equal(new.d_opt_state, state.d_opt_state)
    assert not trees_equal(new.g_params, state.g_params)
    assert not trees_equal(new.g_batch_stats, state.g_batch_stats)
    assert np.isfinite(float(metrics["g_loss"]))


def test_discriminator_update_leaves_generator_untouched():
    _, state, args, real = _setup()
    d_update = make_updates(*args).d_update
    new, metrics = jax.jit(d_update)(state, real, jax.random.key(0))
    assert trees_equal(new.g_params, state.g_params)
    assert trees_equal(new.g_batch_stats, state.g_batch_stats)
    assert trees_equal(new.g_opt_state, state.g_opt_state)
    assert not trees_equal(new.d_params, state.d_params)
    assert not trees_equal(new.d_batch_stats, state.d_batch_stats)
    assert set(metrics) == {"d_loss", "d_real_acc", "d_fake_acc", "d_real", "d_fake"}


@pytest.mark.parametrize("generator_loss", ["non_saturating", "minimax"])
def test_training_steps_move_the_losses_and_d_learns(generator_loss):
    config, state, args, real = _setup(generator_loss)
    step = compile_train_step(make_train_step(*args), parallel.make_mesh())
    images, _ = data.synthetic_images(256, seed=1)
    order = data.BatchOrder(images, config.train.batch_size, seed=0)
    history = []
    for i in range(12):
        state, metrics = step(state, order.batch(i)[None])
        history.append({k: float(v) for k, v in metrics.items()})
    assert int(state.step) == 12
    assert all(np.isfinite(list(m.values())).all() for m in history)
    assert history[0]["d_loss"] != history[-1]["d_loss"]
    assert history[0]["g_loss"] != history[-1]["g_loss"]


def test_discriminator_updates_alone_learn_to_separate_real_from_generated():
    _, state, args, real = _setup()
    d_update = jax.jit(make_updates(*args).d_update)
    history = []
    for i in range(15):
        state, metrics = d_update(state, real, jax.random.key(i))
        history.append({k: float(v) for k, v in metrics.items()})
    first, last = history[0], history[-1]
    assert last["d_loss"] < 0.7 * first["d_loss"]
    assert last["d_real"] > first["d_real"] + 0.1
    assert last["d_fake"] < first["d_fake"]


def test_d_steps_consume_one_real_batch_each():
    config, state, args, real = _setup()
    step = jax.jit(make_train_step(*args))
    one, _ = step(state, real[None])
    two, _ = step(state, np.stack([real, real]))
    assert int(one.step) == int(two.step) == 1
    # Two D updates move Adam's count twice.
    assert int(jax.tree.leaves(two.d_opt_state)[0]) == 2 * int(jax.tree.leaves(one.d_opt_state)[0])
    assert int(jax.tree.leaves(two.g_opt_state)[0]) == int(jax.tree.leaves(one.g_opt_state)[0])


def test_batch_size_not_divisible_by_devices_names_nearest_sizes():
    mesh = parallel.make_mesh(jax.devices() * 1)
    parallel.check_batch_size(64, mesh)

    class EightDevices:
        size = 8

    with pytest.raises(ConfigError, match=r"batch_size=60 does not split over 8 devices; use 56 or 64"):
        parallel.check_batch_size(60, EightDevices())


def test_reference_architecture_trains_with_dropout_and_no_d_batch_norm():
    config = tiny_config()
    config.model.update(g_base_features=32, g_stride1_layers=1, g_activation="leaky_relu", g_output_bias=False,
                        d_batch_norm=False, d_dropout=0.3)  # fmt: skip
    generator, discriminator = models.build(config.model, (28, 28, 1))
    optimizer = make_optimizer(config.optimizer)
    state = init_state(generator, discriminator, optimizer, 0, (28, 28, 1), config.model.latent_dim)
    assert state.d_batch_stats == {}
    step = jax.jit(make_train_step(generator, discriminator, optimizer, "non_saturating", config.model.latent_dim))
    images, _ = data.synthetic_images(64, seed=1)
    order = data.BatchOrder(images, config.train.batch_size, seed=0)
    losses = []
    for i in range(4):
        state, metrics = step(state, order.batch(i)[None])
        losses.append(float(metrics["d_loss"]))
    assert np.isfinite(losses).all() and losses[0] != losses[-1]


def test_reused_fake_batch_gives_g_the_gradient_through_the_updated_discriminator():
    """reuse_fake: G's update from D's fake batch (its forward pass kept as a VJP) equals the plain
    gradient of G's loss on that same batch through the updated D."""
    import optax

    from dcgan_jax import losses

    config, state, args, real = _setup()
    generator, discriminator, optimizer, generator_loss, latent_dim = args
    updates = make_updates(*args)
    d_key, g_key = jax.random.key(1), jax.random.key(2)
    fake, pullback, g_batch_stats = updates.generate_with_pullback(state, d_key, len(real))
    after_d, _ = updates.d_update(state, real, d_key, fake)
    fresh_d, _ = updates.d_update(state, real, d_key)  # Generates the same batch itself.
    assert jax.tree.all(jax.tree.map(lambda a, b: np.allclose(a, b, atol=1e-6), after_d.d_params, fresh_d.d_params))
    after_g, metrics = updates.g_update_through(after_d, fake, pullback, g_batch_stats, g_key)

    def direct_loss(g_params):
        z = jax.random.normal(d_key, (len(real), latent_dim))
        images = generator.apply({"params": g_params, "batch_stats": state.g_batch_stats}, z, train=True,
                                 mutable=["batch_stats"])[0]  # fmt: skip
        logits = discriminator.apply(
            after_d.discriminator_variables(), images, train=True, mutable=["batch_stats"],
            rngs={"dropout": jax.random.fold_in(g_key, 1)},
        )[0]  # fmt: skip
        return losses.generator_loss(logits, generator_loss)

    loss, grads = jax.value_and_grad(direct_loss)(state.g_params)
    step_updates, _ = optimizer.update(grads, state.g_opt_state, state.g_params)
    expected = optax.apply_updates(state.g_params, step_updates)
    np.testing.assert_allclose(float(metrics["g_loss"]), float(loss), rtol=1e-5)
    for ours, theirs in zip(jax.tree.leaves(after_g.g_params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert trees_equal(after_g.g_batch_stats, g_batch_stats)  # From the one forward pass.
    assert trees_equal(after_g.d_params, after_d.d_params)


def test_reuse_fake_option_trains_and_differs_from_fresh_batches():
    config, state, args, _ = _setup()
    images, _ = data.synthetic_images(256, seed=1)
    order = data.BatchOrder(images, config.train.batch_size, seed=0)
    finals = {}
    for reuse in (False, True):
        step = jax.jit(make_train_step(*args, reuse_fake=reuse))
        current, history = state, []
        for i in range(6):
            current, metrics = step(current, order.batch(i)[None])
            history.append(float(metrics["g_loss"]))
        assert np.isfinite(history).all() and history[0] != history[-1]
        finals[reuse] = current
    assert not trees_equal(finals[True].g_params, finals[False].g_params)
